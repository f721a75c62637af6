"""Storing an ECG as FHIR (one transaction), the pool, the atomic claim, release, pass, escalation."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from telemed.db.engine import unit_of_work
from telemed.ecg import aecg, model, service
from telemed.ecg import workflow as wf
from telemed.ecg.synthetic import simulate
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import Category, TelemedError
from tests.conftest import unique
from tests.ecg import network

DICOM = get_testdata_file("waveform_ecg.dcm")


def _pools(services) -> service.Pools:
    with unit_of_work(services.engine, write=False) as conn:
        return service.Pools.load(services.repository(conn, AccessContext.system()))


def send(services, net, files, priority="routine", ecg=None):
    ecg = ecg or unique("ecg")
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("doctor"))
        return service.ingest(repo, services.blobs, _pools(services), services.clock.now(), ecg, files=files,
                              patient=net.patient, ctx=net.ctx("doctor"), priority=priority)  # fmt: skip


def read(services, ctx, rt, id_):
    with unit_of_work(services.engine, write=False) as conn:
        return services.repository(conn, ctx).read(rt, id_).resource


def test_dicom_ecg_stored_as_fhir(services):
    net = network.build(services)
    data = open(DICOM, "rb").read()
    done = send(services, net, {"ecg.dcm": data}, priority="urgent")
    ecg = done.ecg
    # The original is kept byte for byte in the blob store.
    doc = read(services, net.ctx("doctor"), "DocumentReference", ecg)
    att = doc["content"][0]["attachment"]
    assert att["contentType"] == "application/dicom" and att["size"] == len(data)
    assert services.blobs.get(att["url"].removeprefix(model.BLOB_URL)) == data
    # One Observation per lead with the device's integers, rate, gain and unit; MDC lead codes.
    panel = read(services, net.ctx("doctor"), "Observation", ecg)
    assert panel["code"]["coding"][0]["code"] == "11524-6" and len(panel["hasMember"]) == 12
    assert panel["performer"] == [{"reference": f"Organization/{net.clinic}"}]
    assert panel["device"]["display"].startswith("Mortara")
    lead = read(services, net.ctx("doctor"), "Observation", f"{ecg}-II")
    sd = lead["valueSampledData"]
    assert lead["code"]["coding"][0] == {"system": model.MDC, "code": "131330", "display": "MDC_ECG_LEAD_II"}
    assert sd["period"] == 1.0 and sd["factor"] == 1.25 and sd["origin"]["unit"] == "uV"
    assert lead["subject"] == {"reference": f"Patient/{net.patient}"}
    assert np.array_equal(np.array(sd["data"].split(), dtype=int), done.recording.lead("II").digital)
    # Machine measurements, LOINC-coded, preliminary and tagged for the reader to confirm.
    qtc = read(services, net.ctx("doctor"), "Observation", model.measurement_id(ecg, "qtc_fridericia"))
    assert qtc["status"] == "preliminary" and qtc["meta"]["tag"][0]["code"] == "machine-generated"
    assert {c["code"] for c in qtc["code"]["coding"]} == {"8636-3", "146964"}
    assert qtc["method"]["coding"][0]["display"] == "Fridericia QTc Algorithm"
    hr = read(services, net.ctx("doctor"), "Observation", model.measurement_id(ecg, "heart_rate"))
    assert hr["code"]["coding"][0]["code"] == "8867-4" and 55 <= hr["valueQuantity"]["value"] <= 65
    # The reading waits in the pool; the two on-duty readers are told at once.
    task = read(services, net.ctx("r1"), "Task", ecg)
    assert task["status"] == "requested" and task["owner"] == {"reference": f"Group/{net.pool}"}
    assert task["priority"] == "urgent"
    assert done.push.event == "new" and sorted(done.push.readers) == sorted(net.readers[:2])
    # The reading centre sees the ECG (the request's performer); another clinic does not.
    assert read(services, net.ctx("r3"), "Observation", f"{ecg}-V1")["id"] == f"{ecg}-V1"
    with pytest.raises(TelemedError) as err:
        read(services, net.ctx("outsider"), "Observation", ecg)
    assert err.value.category is Category.NOT_FOUND


def test_aecg_and_wfdb_ingest(services, tmp_path):
    from telemed.ecg.synthetic import to_wfdb

    net = network.build(services)
    syn = simulate(duration=10, heart_rate=88, seed=1)
    done = send(services, net, {"ecg.xml": aecg.write(syn.recording)})
    assert read(services, net.ctx("doctor"), "DocumentReference", done.ecg)["content"][0]["attachment"][
        "contentType"] == "application/xml"  # fmt: skip
    names = to_wfdb(syn.recording, str(tmp_path))
    done = send(services, net, {n: (tmp_path / n).read_bytes() for n in names})
    doc = read(services, net.ctx("doctor"), "DocumentReference", done.ecg)
    assert [c["attachment"]["title"] for c in doc["content"]] == names
    lead = read(services, net.ctx("doctor"), "Observation", f"{done.ecg}-V3")
    assert lead["valueSampledData"]["origin"]["code"] == "mV" and lead["valueSampledData"]["factor"] == 0.001


def test_corrupt_file_stores_nothing(services):
    net = network.build(services)
    ecg = unique("ecg")
    with pytest.raises(TelemedError) as err:
        send(services, net, {"ecg.dcm": open(DICOM, "rb").read()[:-4000]}, ecg=ecg)
    assert err.value.category is Category.UNPROCESSABLE
    for rt in ("Task", "Observation", "DocumentReference", "ServiceRequest"):
        with unit_of_work(services.engine, write=False) as conn:
            assert not services.repository(conn, AccessContext.system()).exists(rt, ecg)


def test_failure_midway_rolls_everything_back(services, monkeypatch):
    net = network.build(services)
    ecg = unique("ecg")

    def broken(*_a, **_k):
        raise TelemedError(Category.FAULT, "disk full")

    # The report is written after the request, the original, the leads and the measurements.
    monkeypatch.setattr(model, "diagnostic_report", broken)
    with pytest.raises(TelemedError, match="disk full"):
        send(services, net, {"e.xml": aecg.write(simulate(duration=5, seed=2).recording)}, ecg=ecg)
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, AccessContext.system())
        for rt, id_ in [("ServiceRequest", ecg), ("DocumentReference", ecg), ("Observation", f"{ecg}-II"),
                        ("Observation", model.measurement_id(ecg, "heart_rate")), ("Task", ecg)]:  # fmt: skip
            assert not repo.exists(rt, id_)


def test_sender_without_pool_is_refused(services):
    net = network.build(services)
    with unit_of_work(services.engine) as conn:
        ctx = net.ctx("outsider")
        with pytest.raises(TelemedError, match="no ECG reading pool"):
            repo, files = services.repository(conn, ctx), {"e.dcm": open(DICOM, "rb").read()}
            service.ingest(repo, services.blobs, _pools(services), services.clock.now(), unique("ecg"), files=files,
                           patient=net.patient, ctx=ctx)  # fmt: skip


def claim(services, net, who, ecg, if_match=None):
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx(who))
        return service.claim(repo, _pools(services), services.clock.now(), ecg, net.contexts[who].practitioner,
                             if_match)  # fmt: skip


def test_two_simultaneous_claims_one_wins(services):
    net = network.build(services)
    ecg = send(services, net, {"e.dcm": open(DICOM, "rb").read()}).ecg
    etag = None
    with unit_of_work(services.engine, write=False) as conn:
        etag = services.repository(conn, net.ctx("r1")).read("Task", ecg).etag
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def go(who):
        barrier.wait()
        try:
            results[who] = claim(services, net, who, ecg, etag)  # both claim the version they saw
        except TelemedError as exc:
            results[who] = exc

    threads = [threading.Thread(target=go, args=(w,)) for w in ("r1", "r2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [w for w, r in results.items() if isinstance(r, service.Push)]
    losers = [r for r in results.values() if isinstance(r, TelemedError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].category is Category.CONFLICT and "already claimed" in losers[0].message
    task = read(services, net.ctx("r1"), "Task", ecg)
    assert task["owner"] == {"reference": f"Practitioner/{net.contexts[winners[0]].practitioner}"}
    assert task["status"] == "accepted" and task["meta"]["versionId"] == "2"


def test_claim_release_pass_and_refusals(services):
    net = network.build(services)
    ecg = send(services, net, {"e.dcm": open(DICOM, "rb").read()}).ecg
    push = claim(services, net, "r1", ecg)
    assert push.event == "claimed" and net.readers[0] not in push.readers
    with pytest.raises(TelemedError, match="already claimed"):
        claim(services, net, "r2", ecg)
    pools, now = _pools(services), services.clock.now()
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("r2"))
        with pytest.raises(TelemedError, match="not claimed by you"):
            service.release(repo, pools, now, ecg, net.readers[1])
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("r1"))
        with pytest.raises(TelemedError, match="not a reader of this pool"):
            service.pass_to(repo, pools, now, ecg, net.readers[0], "prac-nobody")
        push = service.pass_to(repo, pools, now, ecg, net.readers[0], net.readers[2])
    assert push.readers == [net.readers[2]]
    assert read(services, net.ctx("r3"), "Task", ecg)["owner"]["reference"] == f"Practitioner/{net.readers[2]}"
    with unit_of_work(services.engine) as conn:
        push = service.release(services.repository(conn, net.ctx("r3")), pools, now, ecg, net.readers[2])
    assert push.event == "released" and sorted(push.readers) == sorted(net.readers[:2])
    assert read(services, net.ctx("r1"), "Task", ecg)["status"] == "requested"
    with unit_of_work(services.engine, write=False) as conn:
        assert ecg in [s.resource["id"] for s in service.waiting(services.repository(conn, net.ctx("r1")), net.pool)]


def test_a_reader_outside_the_pool_cannot_claim(services):
    net = network.build(services)
    other = network.build(services)
    ecg = send(services, net, {"e.dcm": open(DICOM, "rb").read()}).ecg
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        with pytest.raises(TelemedError) as err:
            service.claim(repo, _pools(services), services.clock.now(), ecg, other.readers[0])
    assert err.value.category is Category.FORBIDDEN


def test_unclaimed_ecg_escalates_after_the_limit(services):
    net = network.build(services)
    ecg = send(services, net, {"e.dcm": open(DICOM, "rb").read()}).ecg
    pools = _pools(services)
    now = services.clock.now()
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        assert [p for p in service.escalate_overdue(repo, pools, now, timedelta(minutes=10)) if p.ecg == ecg] == []
        pushes = [p for p in service.escalate_overdue(repo, pools, now + timedelta(minutes=11), timedelta(minutes=10))
                  if p.ecg == ecg]  # fmt: skip
    assert len(pushes) == 1 and sorted(pushes[0].readers) == sorted(net.readers)  # the off-duty reader too
    task = read(services, net.ctx("r1"), "Task", ecg)
    assert model.reading_of(task).escalation == 1 and task["status"] == "requested"
    claim(services, net, "r3", ecg)  # still claimable after escalation


def test_duty_hours_in_china_time(services):
    from datetime import UTC, datetime

    pools = service.Pools(duty={"a": [{"daysOfWeek": ["mon"], "availableStartTime": "08:00:00",
                                       "availableEndTime": "17:30:00"}],
                                "n": [{"availableStartTime": "20:00:00", "availableEndTime": "08:00:00"}]})  # fmt: skip
    monday_9_cst = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    assert pools.on_duty("a", monday_9_cst) and not pools.on_duty("n", monday_9_cst)
    assert not pools.on_duty("a", monday_9_cst + timedelta(days=1))
    night = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 23:00 in Beijing
    assert pools.on_duty("n", night) and not pools.on_duty("a", night)


def test_workflow_rules():
    r = wf.claim(wf.Reading(), "a")
    assert wf.claim(r, "a") == r  # a repeated claim by the holder is harmless
    with pytest.raises(wf.IllegalTransition):
        wf.claim(r, "b")
    with pytest.raises(wf.IllegalTransition):
        wf.escalate(r)
    assert wf.release(r, "a").state == wf.WAITING
    assert wf.acknowledge(wf.report(r, "a", True)).state == wf.ACKNOWLEDGED
