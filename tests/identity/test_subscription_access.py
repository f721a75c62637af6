"""Subscriptions under the access rules: a rest-hook notification carries the matched resource (or
its id) to the subscriber, and matching sees every resource, so a caller limited to some patients
may not subscribe a rest-hook to patient data; a websocket subscription (a bare ping, then a search
under the caller's own rules) and rest-hooks on directory data stay open to everyone."""

from __future__ import annotations

import httpx

from tests.identity.test_institution_admin import headers


def _subscription(rtype: str, channel: str) -> dict:
    body = {"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": f"{rtype}?",
            "channel": {"type": channel}}  # fmt: skip
    if channel == "rest-hook":
        body["channel"] |= {"endpoint": "https://hospital.example.cn/hook", "payload": "application/fhir+json"}
    return body


def test_only_callers_seeing_every_patient_subscribe_rest_hooks_to_patient_data(server, services):
    url = f"{server.url}/fhir/Subscription"
    doctor = headers(services, "requesting-doctor", "org-a")
    refused = httpx.post(url, json=_subscription("Observation", "rest-hook"), headers=doctor)
    assert refused.status_code == 403, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome" and "websocket" in refused.text
    assert httpx.post(url, json=_subscription("Patient", "rest-hook"), headers=doctor).status_code == 403
    assert httpx.post(url, json=_subscription("Observation", "websocket"), headers=doctor).status_code == 201
    assert httpx.post(url, json=_subscription("Organization", "rest-hook"), headers=doctor).status_code == 201
    admin = headers(services, "platform-admin", None)
    assert httpx.post(url, json=_subscription("Observation", "rest-hook"), headers=admin).status_code == 201
