"""Remote imaging readings on SQLite and PostgreSQL: request -> (images) -> worklist -> claim (one
wins) -> structured report -> signed DiagnosticReport with Provenance and PDF -> acknowledgement ->
amendment; critical findings with acknowledgement and escalation; sharing and revoking; teaching
anonymisation."""

from __future__ import annotations

import base64
import io
import threading
import zipfile
from datetime import timedelta

import pydicom
import pytest
from pydicom.uid import generate_uid

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.imaging.reading import anonymise, critical, notifications, sharing
from telemed.imaging.reading import model as m
from telemed.imaging.reading import service as rs
from telemed.imaging.reading import workflow as wf
from telemed.kernel.errors import Category, TelemedError
from tests.imaging import reading_net

SECTIONS = {"technique": "CT 平扫", "findings": "右肺上叶见一约 2.1 cm 结节，边缘毛刺。",
            "impression": "右肺上叶结节，考虑肺癌可能。", "recommendation": "建议增强 CT 或穿刺活检。"}  # fmt: skip


def run(services, ctx, fn, *args, **kwargs):
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, ctx)
        out = fn(repo, *args, **kwargs)
        notices = getattr(out, "notices", None) if not isinstance(out, list) else out
        if services.outbox is not None and notices and all(isinstance(n, rs.Notice) for n in notices):
            notifications.enqueue(repo, services.outbox, notices, services.site_url)
        return out


def look(services, ctx, fn, *args, **kwargs):
    with unit_of_work(services.engine, write=False) as conn:
        return fn(services.repository(conn, ctx), *args, **kwargs)


def test_reading_end_to_end(services):
    net = reading_net.build(services)
    env = reading_net.env(services)
    study, uid = reading_net.ct_study(services, net)
    form = rs.RequestForm(centre=net.centre, priority=wf.URGENT, study=study, question="咳嗽两月，肺部占位？")
    made = run(services, net.ctx("requester"), rs.request_reading, env, net.ctx("requester"), form)
    rid = made.id
    assert made.reading.state == wf.REQUESTED and made.modality == "CT" and made.body_part == "CHEST"
    assert made.notices[0].practitioners == tuple(sorted(net.radiologists))
    assert made.deadline - services.clock.now() <= timedelta(hours=4)
    # The centre's radiologists see it (and the county's study, through the request's performer).
    listed = look(services, net.ctx("r1"), rs.worklist, services.clock.now(), modality="CT", body_part="CHEST")
    assert rid in [x.id for x in listed]
    assert rid not in [x.id for x in look(services, net.ctx("r1"), rs.worklist, services.clock.now(), modality="MR")]
    assert look(services, net.ctx("r1"), rs.read, "ImagingStudy", study) is not None
    with pytest.raises(TelemedError) as err:
        look(services, net.ctx("outsider"), rs.load, rid)
    assert err.value.category is Category.NOT_FOUND
    # The requester cannot claim; r1 claims; r2 then cannot.
    with pytest.raises(TelemedError):
        run(services, net.ctx("requester"), rs.act, env, net.ctx("requester"), rid, "claim")
    got = run(services, net.ctx("r1"), rs.act, env, net.ctx("r1"), rid, "claim")
    assert got.reading.state == wf.CLAIMED and got.reading.radiologist == net.radiologists[0]
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("r2"), rs.act, env, net.ctx("r2"), rid, "claim")
    assert err.value.category is Category.CONFLICT
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("r2"), rs.save_report, env, net.ctx("r2"), rid, SECTIONS)
    assert err.value.category is Category.FORBIDDEN
    # An unknown section and an impression-less signature are refused.
    with pytest.raises(TelemedError):
        run(services, net.ctx("r1"), rs.save_report, env, net.ctx("r1"), rid, {"diagnosis": "x"})
    run(services, net.ctx("r1"), rs.save_report, env, net.ctx("r1"), rid, {"findings": "草稿"})
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("r1"), rs.sign_report, env, net.ctx("r1"), rid, signer=services.signer,
            base_url="http://t")  # fmt: skip
    assert err.value.category is Category.UNPROCESSABLE
    run(services, net.ctx("r1"), rs.save_report, env, net.ctx("r1"), rid, SECTIONS)
    signed = run(services, net.ctx("r1"), rs.sign_report, env, net.ctx("r1"), rid, signer=services.signer,
                 base_url="http://t")  # fmt: skip
    assert signed.reading.state == wf.REPORTED and signed.notices[0].practitioners == (net.requester,)
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        dr = repo.read("DiagnosticReport", rid).resource
        assert dr["status"] == "final" and dr["imagingStudy"] == [{"reference": f"ImagingStudy/{study}"}]
        assert dr["conclusion"] == SECTIONS["impression"] and m.sections_of(dr)["template"] == "CT"
        docs = rs.documents(repo, rid)
        related = [r["reference"] for r in docs[0]["context"]["related"]]
        prov_id = next(r for r in related if r.startswith("Provenance/")).split("/")[1]
        prov = services.repository(conn, AccessContext.system()).read("Provenance", prov_id).resource
        assert prov["target"][0]["reference"].startswith(f"DiagnosticReport/{rid}/_history/") and prov["signature"]
        pdf = rs.pdf_of(repo, rid, docs[0]["id"])
        assert pdf.startswith(b"%PDF")
        task = repo.read("Task", rid).resource
        assert task["status"] == "completed" and task["executionPeriod"]["end"]
        assert repo.read("ServiceRequest", rid).resource["status"] == "completed"
    # The requester acknowledges; the radiologist amends with a reason.
    run(services, net.ctx("requester"), rs.acknowledge, env, net.ctx("requester"), rid)
    with pytest.raises(TelemedError):
        run(services, net.ctx("r1"), rs.amend_report, env, net.ctx("r1"), rid, SECTIONS, "",
            signer=services.signer, base_url="http://t")  # fmt: skip
    amended = run(services, net.ctx("r1"), rs.amend_report, env, net.ctx("r1"), rid,
                  {**SECTIONS, "impression": "右肺上叶结节，肺癌可能大。"}, "补充诊断意见",
                  signer=services.signer, base_url="http://t")  # fmt: skip
    assert amended.reading.versions == 2 and amended.notices[0].kind == "amended"
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        assert repo.read("DiagnosticReport", rid).resource["status"] == "amended"
        assert len(rs.documents(repo, rid)) == 1  # the amended PDF supersedes the first


def test_request_before_the_images(services):
    net = reading_net.build(services)
    env = reading_net.env(services)
    uid = generate_uid()
    with pytest.raises(TelemedError):  # no patient to attach it to
        run(services, net.ctx("requester"), rs.request_reading, env, net.ctx("requester"),
            rs.RequestForm(centre=net.centre, study_uid=uid))  # fmt: skip
    # The images' patient exists already (an earlier study of the same patient ID).
    _first, _ = reading_net.ct_study(services, net, patient_id="QS-778", count=1)
    with unit_of_work(services.engine, write=False) as conn:
        patient = rs.find(services.repository(conn, AccessContext.system()), "Patient",
                          [("identifier", "QS-778")])[0].resource["id"]  # fmt: skip
    made = run(services, net.ctx("requester"), rs.request_reading, env, net.ctx("requester"),
               rs.RequestForm(centre=net.centre, study_uid=uid, patient=patient, priority=wf.STAT, modality="CT"))
    assert made.reading.state == wf.AWAITING and made.deadline is None and not made.notices
    assert made.id not in [x.id for x in look(services, net.ctx("r1"), rs.worklist, services.clock.now())]
    assert run(services, AccessContext.system(), rs.match_arrivals, env) == []  # still nothing
    study, _ = reading_net.ct_study(services, net, uid=uid, patient_id="QS-778")
    arrived = run(services, AccessContext.system(), rs.match_arrivals, env)
    assert [a.id for a in arrived] == [made.id]
    assert arrived[0].notices[0].kind == "new-stat" and arrived[0].notices[0].organization == net.centre
    got = look(services, net.ctx("r2"), rs.load, made.id)
    assert got.reading.state == wf.REQUESTED and got.study == study
    assert got.deadline - services.clock.now() <= timedelta(hours=1)
    assert look(services, net.ctx("r2"), rs.worklist, services.clock.now())[0].id == made.id  # stat first


def test_claim_race_one_wins(services):
    net = reading_net.build(services)
    env = reading_net.env(services)
    study, _ = reading_net.ct_study(services, net, count=1)
    rid = run(services, net.ctx("requester"), rs.request_reading, env, net.ctx("requester"),
              rs.RequestForm(centre=net.centre, study=study)).id  # fmt: skip
    barrier, results = threading.Barrier(2), {}

    def claim(name):
        barrier.wait()
        try:
            run(services, net.ctx(name), rs.act, env, net.ctx(name), rid, "claim")
            results[name] = "won"
        except TelemedError as exc:
            results[name] = exc.category
        except Exception as exc:  # noqa: BLE001 - a serialization failure also means "lost"
            results[name] = type(exc).__name__

    threads = [threading.Thread(target=claim, args=(n,)) for n in ("r1", "r2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(str(v) for v in results.values()).count("won") == 1, results
    holder = look(services, net.ctx("r1"), rs.load, rid).reading.radiologist
    assert holder == net.radiologists[0 if results["r1"] == "won" else 1]


def test_critical_finding_acknowledged_and_escalated(services):
    net = reading_net.build(services)
    env = reading_net.env(services, critical_ack=10, critical_repeat=10)
    study, _ = reading_net.ct_study(services, net, count=1)
    rid = run(services, net.ctx("requester"), rs.request_reading, env, net.ctx("requester"),
              rs.RequestForm(centre=net.centre, study=study, priority=wf.STAT)).id  # fmt: skip
    with pytest.raises(TelemedError) as err:  # not before claiming
        run(services, net.ctx("r1"), critical.flag, env, net.ctx("r1"), rid, "张力性气胸")
    assert err.value.category is Category.FORBIDDEN
    run(services, net.ctx("r1"), rs.act, env, net.ctx("r1"), rid, "claim")
    flagged = run(services, net.ctx("r1"), critical.flag, env, net.ctx("r1"), rid, "右侧张力性气胸")
    assert flagged.notices[0].kind == "critical" and flagged.notices[0].practitioners == (net.requester,)
    open_ = look(services, net.ctx("requester"), critical.unacknowledged, net.requester)
    assert [c["payload"][0]["contentString"] for c in open_] == ["右侧张力性气胸"]
    # Escalation: nothing before 10 minutes, level 1 after, level 2 (and the centre's line) later.
    now = services.clock.now()
    assert run(services, AccessContext.system(), critical.escalate_due, env, now + timedelta(minutes=5)) == []
    first = run(services, AccessContext.system(), critical.escalate_due, env, now + timedelta(minutes=11))
    assert [(n.kind, n.practitioners, n.organization) for n in first] == [
        ("critical-overdue", (net.requester,), net.county)]
    assert run(services, AccessContext.system(), critical.escalate_due, env, now + timedelta(minutes=12)) == []
    second = run(services, AccessContext.system(), critical.escalate_due, env, now + timedelta(minutes=21))
    assert {n.organization for n in second} == {net.county, net.centre}
    # An outsider cannot acknowledge; a colleague of the requesting hospital can.
    cid = open_[0]["id"]
    with pytest.raises(TelemedError):
        run(services, net.ctx("outsider"), critical.acknowledge, env, net.ctx("outsider"), rid, cid)
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("r1"), critical.acknowledge, env, net.ctx("r1"), rid, cid)
    assert err.value.category is Category.FORBIDDEN
    done = run(services, net.ctx("colleague"), critical.acknowledge, env, net.ctx("colleague"), rid, cid)
    assert done["status"] == "completed" and m.critical_parts(done)["acknowledgedBy"] == net.colleague
    assert look(services, net.ctx("requester"), critical.unacknowledged, net.requester) == []
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("requester"), critical.acknowledge, env, net.ctx("requester"), rid, cid)
    assert err.value.category is Category.CONFLICT
    assert run(services, AccessContext.system(), critical.escalate_due, env, now + timedelta(hours=2)) == []
    # The text messages went through the outbox (the notify jobs), with the link to the reading.
    if services.outbox is not None:
        from sqlalchemy import select

        from telemed.db.schema import job as t_job

        with services.engine.connect() as conn:
            kinds = {r.params.get("kind") for r in conn.execute(select(t_job.c.params)) if r.params}
        assert {"imaging.critical", "imaging.critical-overdue"} <= kinds


def test_share_and_revoke(services):
    net = reading_net.build(services)
    env = reading_net.env(services)
    study, _ = reading_net.ct_study(services, net, count=1)
    assert look(services, net.ctx("outsider"), rs.read, "ImagingStudy", study) is None
    shared = run(services, net.ctx("requester"), sharing.share, env, net.ctx("requester"), study, net.other, "转诊")
    assert look(services, net.ctx("outsider"), rs.read, "ImagingStudy", study) is not None
    again = run(services, net.ctx("requester"), sharing.share, env, net.ctx("requester"), study, net.other)
    assert again["id"] == shared["id"]
    assert [s["id"] for s in look(services, net.ctx("requester"), sharing.shares_of, study)] == [shared["id"]]
    with pytest.raises(TelemedError):
        run(services, net.ctx("requester"), sharing.share, env, net.ctx("requester"), study, "no-such-org")
    run(services, net.ctx("requester"), sharing.revoke, env, net.ctx("requester"), shared["id"])
    assert look(services, net.ctx("outsider"), rs.read, "ImagingStudy", study) is None
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("requester"), sharing.revoke, env, net.ctx("requester"), shared["id"])
    assert err.value.category is Category.CONFLICT


def test_anonymise_for_teaching(services):
    net = reading_net.build(services)
    study, uid = reading_net.ct_study(services, net, patient_id="QS-SECRET-1", count=2)
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        with pytest.raises(TelemedError) as err:
            anonymise.anonymise_study(conn, repo, services.blobs, net.ctx("requester"), services.clock.now(),
                                      services.ids, study, title="x")  # fmt: skip
        assert err.value.category is Category.FORBIDDEN
    r1 = net.ctx("r1")
    # The centre sees the study once it has a reading request for it.
    run(services, net.ctx("requester"), rs.request_reading, reading_net.env(services), net.ctx("requester"),
        rs.RequestForm(centre=net.centre, study=study))  # fmt: skip
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, r1)
        case = anonymise.anonymise_study(conn, repo, services.blobs, r1, services.clock.now(), services.ids, study,
                                         title="周围型肺癌", note="典型毛刺征")  # fmt: skip
    assert "subject" not in case and "Patient/" not in str(case) and "ImagingStudy/" not in str(case)
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, r1)
        assert [c["id"] for c in anonymise.collection(repo)][0] == case["id"]
        data = anonymise.zip_of(repo, services.blobs, case["id"])
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        files = [pydicom.dcmread(io.BytesIO(z.read(n))) for n in z.namelist()]
    assert len(files) == 2
    assert len({f.StudyInstanceUID for f in files}) == 1 and files[0].StudyInstanceUID != uid
    for f in files:
        assert f.PatientID != "QS-SECRET-1" and "Liu" not in str(f.PatientName)
        assert f.PatientIdentityRemoved == "YES"
        assert f.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert "Qingshan" not in str(f.get("InstitutionName", ""))
        assert not any(el.tag.is_private for el in f)
        assert f.pixel_array.shape == (128, 128)
    # Burned-in annotation is refused, not leaked.
    ds = files[0]
    ds.BurnedInAnnotation = "YES"
    from dicognito.anonymizer import Anonymizer

    with pytest.raises(TelemedError):
        anonymise.anonymise_dataset(ds, Anonymizer())
    assert base64  # imported for symmetry with other tests


def test_the_watcher_puts_arrived_studies_on_the_worklist(services):
    from telemed.imaging.reading.watch import ReadingWatcher

    net = reading_net.build(services)
    env = reading_net.env(services)
    first, _ = reading_net.ct_study(services, net, count=1)
    patient = look(services, net.ctx("requester"), rs.read, "ImagingStudy", first).resource["subject"]["reference"]
    uid = generate_uid()
    made = run(services, net.ctx("requester"), rs.request_reading, env, net.ctx("requester"),
               rs.RequestForm(centre=net.centre, study_uid=uid, patient=patient.split("/")[1]))  # fmt: skip
    pid = look(services, AccessContext.system(), rs.read, "Patient", patient.split("/")[1]).resource
    reading_net.ct_study(services, net, uid=uid, patient_id=pid["identifier"][0]["value"], count=1)
    watcher = ReadingWatcher(services.engine, services.clock, services.repository, services.ids, services.outbox,
                             services.site_url, env.policy)  # fmt: skip
    notices = watcher.tick()
    assert any(n.reading == made.id and n.kind == "new-routine" for n in notices)
    assert look(services, net.ctx("r1"), rs.load, made.id).reading.state == wf.REQUESTED
