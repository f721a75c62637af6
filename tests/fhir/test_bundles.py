"""Batch and transaction Bundles (R4 §3.1.0.11)."""

from __future__ import annotations

import uuid

from tests.conftest import unique


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def test_transaction_resolves_urn_uuid_references(client):
    p, e = urn(), urn()
    mrn = unique("mrn")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": e,
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "VR"},
                    "subject": {"reference": p},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
            {
                "fullUrl": p,
                "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "HR"},
                    "subject": {"reference": p},
                    "encounter": {"reference": e},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [x["response"]["status"] for x in out["entry"]] == ["201 Created"] * 3
    patient_id = out["entry"][1]["resource"]["id"]
    enc = out["entry"][0]["resource"]
    obs = out["entry"][2]["resource"]
    assert enc["subject"]["reference"] == f"Patient/{patient_id}"
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"
    assert obs["encounter"]["reference"] == f"Encounter/{enc['id']}"
    # Stored, not just echoed
    assert client.get(f"/Observation/{obs['id']}").json()["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_is_atomic(client):
    mrn = unique("atomic")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert "Bundle.entry[1]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1].resource.status"]
    assert client.get("/Patient", params={"identifier": f"urn:mrn|{mrn}"}).json()["total"] == 0


def test_transaction_processing_order_and_conditionals(client):
    mrn = unique("cond")
    existing = client.post(
        "/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}]}
    ).json()
    doomed = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    p = urn()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
            {
                "fullUrl": p,
                "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}]},
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:mrn|{mrn}"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "t"},
                    "subject": {"reference": p},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "t"},
                    "subject": {"reference": f"Patient?identifier=urn:mrn|{mrn}"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "DELETE", "url": f"Patient/{doomed}"}},
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"].startswith("200")
    assert entries[4]["response"]["status"].startswith("200")
    assert client.get(f"/Patient/{doomed}").status_code == 410
    assert entries[1]["response"]["status"].startswith("200")  # conditional create found the existing one
    assert entries[2]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert entries[3]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"


def test_batch_entries_are_independent(client):
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Patient", "active": True}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "gender": "bad"}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
            {"request": {"method": "GET", "url": f"Patient/{unique()}"}},
            {
                "resource": {"resourceType": "Patient", "id": pid, "active": False},
                "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"7"'},
            },
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert statuses == ["201", "422", "200", "404", "412"]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    created = out["entry"][0]["resource"]["id"]
    assert client.get(f"/Patient/{created}").status_code == 200


def test_transaction_put_with_urn_and_conditional_put(client):
    pid = unique("tx")
    mrn = unique("mrn")
    p = urn()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": p,
                "resource": {"resourceType": "Patient", "id": pid},
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            },
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:mrn", "value": mrn}],
                    "link": [{"other": {"reference": p}, "type": "seealso"}],
                },
                "request": {"method": "PUT", "url": f"Patient?identifier=urn:mrn|{mrn}"},
            },
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 200, r.text
    second = r.json()["entry"][1]["resource"]
    assert second["link"][0]["other"]["reference"] == f"Patient/{pid}"
    assert client.get("/Patient", params={"identifier": f"urn:mrn|{mrn}"}).json()["total"] == 1


def test_bad_bundles(client):
    assert client.post("", json={"resourceType": "Patient"}).status_code == 400
    assert client.post("", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    dup = urn()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": dup, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": dup, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    assert client.post("", json=bundle).status_code == 400
    no_request = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Patient"}}]}
    assert client.post("", json=no_request).json()["entry"][0]["response"]["status"] == "400"
