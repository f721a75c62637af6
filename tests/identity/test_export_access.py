"""Bulk ``$export`` under the access rules: the job exports as the user who asked, so an
institution's doctor gets its own patients' records and nothing of another institution's."""

from __future__ import annotations

import httpx

from tests.conftest import unique
from tests.fhir.test_bulk_export import ASYNC, _download, _kick, _wait
from tests.identity.test_institution_admin import headers


def _client(server, services, role: str, org: str | None) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/fhir", headers=headers(services, role, org), timeout=30)


def test_a_doctor_exports_only_what_the_rules_let_them_see(server, services):
    ours, theirs = unique("org-a"), unique("org-b")
    with _client(server, services, "platform-admin", None) as admin:
        ids = {}
        for org in (ours, theirs):
            patient = {"resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{org}"}}
            pid = admin.post("/Patient", json=patient).json()["id"]
            obs = {"resourceType": "Observation", "status": "final", "code": {"text": "体温"},
                   "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip
            ids[org] = (pid, admin.post("/Observation", json=obs).json()["id"])
        everything = _download(admin, _wait(admin, _kick(admin, "/Patient/$export", _type="Patient,Observation")))
        assert {ids[ours][0], ids[theirs][0]} <= set(everything["Patient"])

    with _client(server, services, "requesting-doctor", ours) as doctor:
        for path in ("/$export", "/Patient/$export"):
            data = _download(doctor, _wait(doctor, _kick(doctor, path, _type="Patient,Observation")))
            assert ids[ours][0] in data["Patient"] and ids[ours][1] in data["Observation"]
            assert ids[theirs][0] not in data["Patient"] and ids[theirs][1] not in data["Observation"]
            assert all(p.get("managingOrganization", {}).get("reference") == f"Organization/{ours}"
                       for p in data["Patient"].values())  # fmt: skip

    with _client(server, services, "supervisor", ours) as supervisor:  # statistics only: no patient data
        r = supervisor.get("/Patient/$export", params={"_type": "Patient"}, headers=ASYNC)
        if r.status_code == 202:
            manifest = _wait(supervisor, r.headers["Content-Location"])
            assert manifest["output"] == []
        else:
            assert r.status_code in (403, 404)
