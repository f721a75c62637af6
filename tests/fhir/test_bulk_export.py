"""Bulk Data ``$export`` (Bulk Data IG v2): kick-off, polling, manifest, NDJSON files, cancel, restart.

The database is shared with other tests, so each test makes its own resources and asserts on them
(with ``_since`` just before its writes where it needs to exclude what others wrote).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.jobs import JobRunner
from telemed.db.schema import job as t_job
from telemed.fhir.rest.operations import export
from telemed.fhir.validation import validator
from tests.conftest import token_for, unique

ASYNC = {"Prefer": "respond-async"}


def _now() -> str:
    time.sleep(0.02)
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.02)
    return stamp


def _create(client, resource: dict) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _patient(client) -> str:
    return _create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": unique("p")}]})


def _observation(client, pid: str) -> str:
    return _create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": unique()},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )


def _kick(client, path: str = "/$export", **params) -> str:
    r = client.get(path, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    return r.headers["Content-Location"]


def _wait(client, url: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while True:
        r = client.get(url)
        if r.status_code != 202:
            break
        assert r.headers["X-Progress"].split("%")[0].isdigit() and r.headers["Retry-After"] == "1"
        assert time.time() < deadline, f"export still running: {r.headers['X-Progress']}"
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def _download(client, manifest: dict) -> dict[str, dict[str, dict]]:
    """type -> id -> resource, checking each file against its manifest entry."""
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert "files" not in manifest
    out: dict[str, dict[str, dict]] = {}
    for entry in manifest["output"]:
        r = client.get(entry["url"])
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/fhir+ndjson"
        lines = r.text.splitlines()
        assert len(lines) == entry["count"] and lines
        for line in lines:
            resource = json.loads(line)
            assert resource["resourceType"] == entry["type"]
            assert [i for i in validator().validate(resource) if i.severity == "error"] == []
            out.setdefault(entry["type"], {})[resource["id"]] = resource
    return out


def test_system_export_with_type_and_since(client):
    old = _patient(client)
    since = _now()
    pid = _patient(client)
    oid = _observation(client, pid)
    gone = _patient(client)
    assert client.delete(f"/Patient/{gone}").status_code in (200, 204)
    _create(client, {"resourceType": "Practitioner"})  # not a requested type
    manifest = _wait(client, _kick(client, _type="Patient,Observation", _since=since))
    assert manifest["transactionTime"] >= since and "/$export?" in manifest["request"]
    data = _download(client, manifest)
    assert set(data) == {"Patient", "Observation"}
    assert pid in data["Patient"] and oid in data["Observation"]
    assert old not in data["Patient"] and gone not in data["Patient"]
    assert data["Observation"][oid]["subject"]["reference"] == f"Patient/{pid}"


def test_exported_patients_have_their_id_numbers_phones_and_addresses_masked(client):
    since = _now()
    pid = _create(client, {
        "resourceType": "Patient", "name": [{"text": "张伟"}],
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.1", "value": "110101195803021234"}],
        "telecom": [{"system": "phone", "value": "13912345678"}],
        "address": [{"text": "岚江省青山县人民路88号", "line": ["人民路88号"], "postalCode": "123456"}],
    })  # fmt: skip
    patient = _download(client, _wait(client, _kick(client, _type="Patient", _since=since)))["Patient"][pid]
    text = json.dumps(patient, ensure_ascii=False)
    for secret in ("110101195803021234", "13912345678", "人民路88号", "123456"):
        assert secret not in text
    assert patient["identifier"][0]["value"] == "1101**********1234" and patient["name"][0]["text"] == "张伟"


def test_post_kick_off_with_parameters(client):
    since = _now()
    oid = _observation(client, _patient(client))
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "_type", "valueString": "Observation"},
            {"name": "_since", "valueInstant": since},
        ],
    }
    r = client.post("/$export", json=body, headers=ASYNC)
    assert r.status_code == 202, r.text
    manifest = _wait(client, r.headers["Content-Location"])
    assert manifest["request"].endswith("/$export")  # a POST's parameters are not in the URL
    data = _download(client, manifest)
    assert set(data) == {"Observation"} and oid in data["Observation"]


def test_patient_level_export_holds_the_patients_compartments(client):
    since = _now()
    pid = _patient(client)
    oid = _observation(client, pid)
    _create(client, {"resourceType": "Practitioner"})  # in no Patient compartment
    data = _download(client, _wait(client, _kick(client, "/Patient/$export", _since=since)))
    assert pid in data["Patient"] and oid in data["Observation"]
    assert "Practitioner" not in data


def test_group_level_export_holds_only_the_members_data(client):
    p1, p2, p3, p4 = (_patient(client) for _ in range(4))
    o1, o2, _o3, _o4 = (_observation(client, p) for p in (p1, p2, p3, p4))
    members = [{"entity": {"reference": f"Patient/{p}"}} for p in (p1, p2)]
    members.append({"entity": {"reference": f"Patient/{p4}"}, "inactive": True})
    gid = _create(client, {"resourceType": "Group", "type": "person", "actual": True, "member": members})
    manifest = _wait(client, _kick(client, f"/Group/{gid}/$export", _type="Patient,Observation"))
    data = _download(client, manifest)
    assert set(data["Patient"]) == {p1, p2}
    assert set(data["Observation"]) == {o1, o2}
    assert client.get("/Group/no-such-group/$export", headers=ASYNC).status_code == 404


def test_kick_off_errors(client):
    r = client.get("/$export")
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    for params in ({"_type": "NotAType"}, {"_outputFormat": "text/csv"}, {"_since": "yesterday"}, {"_elements": "id"}):
        assert client.get("/$export", params=params, headers=ASYNC).status_code == 400, params
    assert client.get("/Patient/$export", params={"_type": "Practitioner"}, headers=ASYNC).status_code == 400
    assert client.post("/$export", json={"resourceType": "Patient"}, headers=ASYNC).status_code == 400
    lenient = client.get(
        "/$export", params={"_elements": "id", "_type": "Device"}, headers={"Prefer": "respond-async, handling=lenient"}
    )
    assert lenient.status_code == 202
    assert client.delete(lenient.headers["Content-Location"]).status_code == 202


def test_split_files_at_the_limit(client, monkeypatch):
    monkeypatch.setattr(export, "MAX_PER_FILE", 2)
    since = _now()
    made = {_create(client, {"resourceType": "Basic", "code": {"text": unique()}}) for _ in range(5)}
    manifest = _wait(client, _kick(client, _type="Basic", _since=since))
    assert [o["count"] for o in manifest["output"]] == [2, 2, 1]
    assert set(_download(client, manifest)["Basic"]) == made


def test_cancel_then_poll_is_404(client):
    url = _kick(client, _type="Patient")
    assert client.delete(url).status_code == 202
    assert client.get(url).status_code == 404
    assert client.delete(url).status_code == 404


def test_only_the_owner_sees_the_job(client, server, services):
    url = _kick(client, _type="Patient", _since=_now())
    _patient(client)
    manifest = _wait(client, url)
    headers = {"Authorization": f"Bearer {token_for(services, 'someone-else')}"}
    with httpx.Client(headers=headers, timeout=30) as other:
        assert other.get(url).status_code == 404
        for entry in manifest["output"]:
            assert other.get(entry["url"]).status_code == 404
        assert other.delete(url).status_code == 404
    assert client.get(url).status_code == 200
    assert client.get(url.replace("poll-status", "file") + "/Patient-9.ndjson").status_code == 404


def test_failed_job_polls_as_500(client, services):
    url = _kick(client, _type="Device")
    _wait(client, url)
    with unit_of_work(services.engine) as conn:
        conn.execute(update(t_job).where(t_job.c.id == url.rsplit("/", 1)[1]).values(status="failed", message="boom"))
    r = client.get(url)
    assert r.status_code == 500 and "boom" in r.json()["issue"][0]["diagnostics"]


def test_job_survives_a_restart_and_writes_the_same_files(client, services):
    since = _now()
    kept, changed, deleted = (_create(client, {"resourceType": "Basic", "code": {"text": unique()}}) for _ in range(3))
    url = _kick(client, _type="Basic", _since=since)
    first = _wait(client, url)
    before = _download(client, first)
    assert set(before["Basic"]) == {kept, changed, deleted}
    # Writes after transactionTime must not show in a rerun.
    client.put(f"/Basic/{changed}", json={"resourceType": "Basic", "id": changed, "code": {"text": "later"}})
    client.delete(f"/Basic/{deleted}")
    _create(client, {"resourceType": "Basic", "code": {"text": "later"}})
    # The worker died mid-run: the row is 'running' with a heartbeat long gone.
    job_id = url.rsplit("/", 1)[1]
    with unit_of_work(services.engine) as conn:
        conn.execute(
            update(t_job)
            .where(t_job.c.id == job_id)
            .values(
                status="running",
                result=None,
                progress=0.5,
                worker="dead",
                heartbeat=datetime.now(UTC) - timedelta(hours=1),
            )
        )
    runner = JobRunner(services.engine, services.clock)  # a fresh instance, as after a restart
    runner.register("bulk-export", lambda ctx: export.run_export(ctx, services.blobs, services.repository))
    runner._requeue_stale()
    runner.run_one()  # (the live server's worker may win the race; either one completes it)
    again = _wait(client, url)
    assert again == first
    assert _download(client, again) == before
