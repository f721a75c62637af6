"""ID numbers, phones and addresses: encrypted at rest, blind-indexed, masked in lists, revealed
in full only to roles that need them (and that reveal is audited)."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from telemed.db.engine import unit_of_work
from telemed.identity import issue_token
from tests.conftest import unique

RESIDENT_ID = "urn:oid:2.16.156.10011.1.1"


def headers(services, role: str, org: str, user: str | None = None) -> dict:
    token = issue_token(
        services.token_keys, user or unique(role), ["user/*.*"], 600, services.clock.now(), [role], organization=org
    )
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def test_sensitive_fields_are_encrypted_blind_indexed_and_masked(server, services):
    org = unique("org")
    id_number = "41010219800101" + unique("")[-4:].upper().replace("-", "0")[:4]
    phone = "1380013" + "8000"
    doctor = headers(services, "requesting-doctor", org, user=unique("doc"))
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID, "value": id_number}],
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"line": ["解放路26号"], "city": "北溪市"}],
        "managingOrganization": {"reference": f"Organization/{org}"},
    }
    created = httpx.post(f"{server.url}/fhir/Patient", json=patient, headers=doctor)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]

    with unit_of_work(services.engine, write=False) as conn:
        row = str(conn.execute(text("SELECT content FROM resource WHERE id = :id"), {"id": pid}).scalar_one())
        history = str(
            conn.execute(text("SELECT content FROM resource_history WHERE id = :id"), {"id": pid}).scalar_one()
        )
        index = [str(r) for r in conn.execute(text("SELECT * FROM idx_token WHERE resource_id = :id"), {"id": pid})]
        strings = [str(r) for r in conn.execute(text("SELECT * FROM idx_string WHERE resource_id = :id"), {"id": pid})]
    for secret in (id_number, phone, "解放路26号"):
        assert secret not in row and secret not in history, secret
        assert not any(secret in r for r in index + strings), secret
    assert "北溪市" in str(strings)  # the city stays clear for statistics

    found = httpx.get(f"{server.url}/fhir/Patient", params={"identifier": f"{RESIDENT_ID}|{id_number}"}, headers=doctor)
    entry = found.json()["entry"][0]["resource"]
    assert entry["id"] == pid
    masked = entry["identifier"][0]["value"]
    assert masked.startswith(id_number[:4]) and masked.endswith(id_number[-4:]) and "*" in masked
    assert entry["telecom"][0]["value"] == "138****8000"
    assert httpx.get(f"{server.url}/fhir/Patient", params={"phone": phone}, headers=doctor).json()["total"] == 1

    full = httpx.get(f"{server.url}/fhir/Patient/{pid}", headers=doctor).json()
    assert full["identifier"][0]["value"] == id_number and full["address"][0]["line"] == ["解放路26号"]
    nurse_less = headers(services, "qc-officer", org)
    assert "*" in httpx.get(f"{server.url}/fhir/Patient/{pid}", headers=nurse_less).json()["identifier"][0]["value"]

    auditor = headers(services, "auditor", org)
    trail = httpx.get(f"{server.url}/fhir/AuditEvent", params={"patient": pid, "action": "R"}, headers=auditor).json()
    assert any(e["resource"].get("outcomeDesc") == "identifiers revealed" for e in trail["entry"])
