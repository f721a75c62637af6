"""Operations endpoints: health, readiness, Prometheus metrics, request ids and the capability statement."""

from __future__ import annotations

import httpx

from telemed.app import Services, create_app
from telemed.db.migrate import upgrade
from telemed.identity import issue_token
from telemed.kernel.clock import SystemClock
from tests.conftest import LiveServer, make_settings


def test_healthz_and_readyz(server):
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}


def test_readyz_reports_an_unmigrated_or_unreachable_database(tmp_path):
    svc = Services.from_settings(make_settings(tmp_path, f"sqlite:///{tmp_path}/empty.db"))
    with LiveServer(create_app(svc)) as live:
        r = httpx.get(live.url + "/readyz")
        assert r.status_code == 503 and "not migrated" in r.json()["reason"]
    svc = Services.from_settings(make_settings(tmp_path, "postgresql://nobody@127.0.0.1:1/none"))
    with LiveServer(create_app(svc)) as live:
        r = httpx.get(live.url + "/readyz")
        assert r.status_code == 503 and "unreachable" in r.json()["reason"]


def test_database_down_is_503_operation_outcome(tmp_path):
    svc = Services.from_settings(make_settings(tmp_path, "postgresql://nobody@127.0.0.1:1/none"))
    # A token signed elsewhere: the signing keys live in the database, so checking it needs the database too.
    signer = Services.from_settings(make_settings(tmp_path, f"sqlite:///{tmp_path}/keys.db"))
    upgrade(signer.engine)
    token = issue_token(signer.token_keys, "x", ["user/*.*"], 60, SystemClock().now(), [])
    with LiveServer(create_app(svc)) as live:
        r = httpx.get(live.url + "/fhir/Patient/1", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503
        assert r.json()["resourceType"] == "OperationOutcome"


def test_metrics_count_interactions(server, client):
    client.get("/metadata")
    client.post("/Patient", json={"resourceType": "Patient"})
    text = httpx.get(server.url + "/metrics").text
    assert 'telemed_http_requests_total{interaction="create",method="POST",status="201"}' in text
    assert 'telemed_http_request_duration_seconds_bucket{interaction="capabilities"' in text


def test_request_id_is_echoed(client):
    r = client.get("/metadata", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/metadata").headers["X-Request-ID"]) == 32


def test_capability_statement_is_honest(client):
    cs = client.get("/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    types = {r["type"]: r for r in rest["resource"]}
    assert len(types) >= 145 and "Patient" in types and "Binary" in types
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    patient_params = {p["name"] for p in types["Patient"]["searchParam"]}
    assert {"_id", "_lastUpdated", "identifier", "name", "birthdate", "general-practitioner", "_tag"} <= patient_params
    assert "identifier" not in {p["name"] for p in types["Binary"]["searchParam"]}
    assert "near" in types["Location"]["documentation"]  # unsupported parameters are named, not hidden
