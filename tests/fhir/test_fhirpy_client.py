"""A real third-party FHIR client (fhirpy) talks to the server: create, read, update, history, transaction."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient

from tests.conftest import token_for, unique


@pytest.fixture
def fhir(server, services) -> SyncFHIRClient:
    return SyncFHIRClient(f"{server.url}/fhir", authorization=f"Bearer {token_for(services, 'fhirpy')}")


def test_fhirpy_create_read_update_history(fhir):
    patient = fhir.resource(
        "Patient",
        name=[{"family": "李", "given": ["娜"], "text": "李娜"}],
        gender="female",
        identifier=[{"system": "urn:oid:2.16.156.10011.1.1", "value": unique("id")}],
    )
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"
    fetched = fhir.reference("Patient", patient.id).to_resource()
    assert fetched["name"][0]["text"] == "李娜"
    fetched["birthDate"] = "1975-03-04"
    fetched.save()
    assert fetched["meta"]["versionId"] == "2"
    history = fhir.execute(f"Patient/{patient.id}/_history", method="get")
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    found = fhir.resources("Patient").search(_id=patient.id).fetch()
    assert [p.id for p in found] == [patient.id]


def test_fhirpy_transaction(fhir):
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:2b8b1d6e-6a0b-4e43-9f55-9b3b0c7b1a01",
                "resource": {"resourceType": "Patient", "name": [{"text": "王芳"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Condition",
                    "subject": {"reference": "urn:uuid:2b8b1d6e-6a0b-4e43-9f55-9b3b0c7b1a01"},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "高血压"}]},
                },
                "request": {"method": "POST", "url": "Condition"},
            },
        ],
    }
    result = fhir.execute("", method="post", data=bundle)
    assert result["type"] == "transaction-response"
    pid = result["entry"][0]["resource"]["id"]
    assert result["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
