"""Every error is a precise OperationOutcome with the right status, never a stack trace."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import token_for, unique


def outcome(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all("Traceback" not in i.get("diagnostics", "") for i in body["issue"])
    return body


def test_malformed_json(client):
    body = outcome(client.post("/Patient", content=b'{"resourceType": "Patient",'), 400)
    assert "JSON" in body["issue"][0]["diagnostics"]


def test_wrong_resource_type(client):
    body = outcome(client.post("/Patient", json={"resourceType": "Observation", "status": "final"}), 400)
    assert body["issue"][0]["expression"] == ["resourceType"]


def test_id_mismatch_on_put(client):
    body = outcome(client.put("/Patient/a1", json={"resourceType": "Patient", "id": "b2"}), 400)
    assert "does not match" in body["issue"][0]["diagnostics"]
    outcome(client.put("/Patient/a1", json={"resourceType": "Patient", "active": True}), 400)


def test_unknown_type(client):
    body = outcome(client.get("/Patients"), 404)
    assert "Unknown resource type" in body["issue"][0]["diagnostics"]
    outcome(client.post("/patient", json={"resourceType": "patient"}), 404)


def test_body_too_large(client):
    big = b'{"resourceType":"Patient","text":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    outcome(client.post("/Patient", content=big), 413)


def test_unsupported_media_type(client):
    outcome(client.post("/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}), 415)
    outcome(client.get("/Patient", headers={"Accept": "application/fhir+xml"}), 415)


def test_method_not_allowed(client):
    r = client.post(f"/Patient/{unique()}", json={"resourceType": "Patient"})
    outcome(r, 405)
    assert "Allow" in r.headers
    outcome(client.delete("/metadata"), 405)
    outcome(client.delete(""), 405)


def test_empty_body(client):
    outcome(client.post("/Patient", content=b""), 400)


def test_invalid_resource_names_offending_element(client):
    bad = {"resourceType": "Patient", "gender": "unknown-gender", "birthDate": "1990-02-30x", "foo": 1}
    body = outcome(client.post("/Patient", json=bad), 422)
    expressions = {e for i in body["issue"] for e in i.get("expression", [])}
    assert {"Patient.gender", "Patient.birthDate", "Patient.foo"} <= expressions
    obs = {"resourceType": "Observation", "code": {"text": "x"}}
    body = outcome(client.post("/Observation", json=obs), 422)
    assert body["issue"][0]["expression"] == ["Observation.status"] and body["issue"][0]["code"] == "required"
    ref = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "bad ref"}}
    body = outcome(client.post("/Observation", json=ref), 422)
    assert body["issue"][0]["expression"] == ["Observation.subject.reference"]


@pytest.mark.parametrize(
    "auth",
    [None, "Bearer", "Bearer not-a-jwt", "Basic YWRtaW46YWRtaW4="],
)
def test_requires_a_valid_bearer_token(server, auth):
    headers = {"Authorization": auth} if auth else {}
    r = httpx.get(server.url + "/fhir/Patient", headers=headers)
    outcome(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_and_foreign_signature(server, services):
    import jwt

    expired = token_for(services, "expired-user", ttl=-10)
    r = httpx.get(server.url + "/fhir/metadata", headers={"Authorization": f"Bearer {expired}"})
    assert "expired" in outcome(r, 401)["issue"][0]["diagnostics"]
    forged = jwt.encode({"sub": "admin", "exp": 9999999999, "aud": "telemed-fhir", "iss": "telemed"}, "other-key-" * 4)
    outcome(httpx.get(server.url + "/fhir/Patient", headers={"Authorization": f"Bearer {forged}"}), 401)


def test_read_only_scope_cannot_write(server, services):
    token = token_for(services, "reader", scopes=["user/*.read"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    assert httpx.get(server.url + "/fhir/Patient", headers=headers).status_code == 200
    outcome(httpx.post(server.url + "/fhir/Patient", json={"resourceType": "Patient"}, headers=headers), 403)


def test_unknown_operation(client):
    outcome(client.post("/Patient/$everything", json={"resourceType": "Parameters"}), 501)


def test_options_and_non_object_bodies(client):
    outcome(client.request("OPTIONS", "/Patient"), 405)
    outcome(client.post("/Patient", content=b"[1, 2]"), 400)
    outcome(client.put("/Patient/x1", content=b'"just a string"'), 400)
