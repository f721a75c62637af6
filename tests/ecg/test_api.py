"""``POST /api/ecg`` with a bearer token, then the reading through plain FHIR (claim = PUT Task with If-Match)."""

from __future__ import annotations

import httpx
from pydicom.data import get_testdata_file

from telemed.identity import issue_token
from telemed.kernel.clock import SystemClock
from tests.ecg import network

DICOM = open(get_testdata_file("waveform_ecg.dcm"), "rb").read()


def bearer(services, net, who, roles):
    ctx = net.ctx(who)
    token = issue_token(services.token_keys, ctx.user, ["user/*.*"], 3600, SystemClock().now(), roles,
                        organization=ctx.organization, practitioner=ctx.practitioner)  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


def test_api_upload_then_fhir_claim_with_if_match(services, server):
    net = network.build(services)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        doctor = bearer(services, net, "doctor", ["requesting-doctor"])
        r = c.post("/api/ecg", params={"patient": net.patient, "priority": "urgent"}, content=DICOM,
                   headers={**doctor, "Content-Type": "application/dicom"})  # fmt: skip
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["task"] == f"Task/{body['id']}" and len(body["leads"]) == 12 and body["readers_notified"] == 2
        assert r.headers["location"] == f"/fhir/Task/{body['id']}"
        bad = c.post("/api/ecg", params={"patient": net.patient}, content=b"junk",
                     headers={**doctor, "Content-Type": "application/dicom"})  # fmt: skip
        assert bad.status_code == 422 and "not a DICOM waveform" in bad.json()["detail"]
        assert c.post("/api/ecg", params={"patient": net.patient}, content=DICOM).status_code == 401
        # Two readers claim through FHIR with the version they read: one 200, one 412.
        fhir = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
        results = []
        for who in ("r1", "r2"):
            auth = {**bearer(services, net, who, ["ecg-reader"]), **fhir}
            task = c.get(f"/fhir/{body['task']}", headers=auth).json()
            task["owner"] = {"reference": f"Practitioner/{net.ctx(who).practitioner}"}
            task["status"] = "accepted"
            results.append((auth, task))
        codes = [c.put(f"/fhir/{body['task']}", json=task, headers={**auth, "If-Match": 'W/"1"'}).status_code
                 for auth, task in results]  # fmt: skip
        assert codes == [200, 412]
