"""Custom SearchParameter resources at run time, and $reindex (instance, type job)."""

from __future__ import annotations

import time

from tests.conftest import unique

EXT = "http://telemed.example.cn/fhir/StructureDefinition/blood-type"


def patient_with_blood_type(tag: str, blood: str) -> dict:
    return {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:test", "code": tag}]},
        "extension": [{"url": EXT, "valueString": blood}],
    }


def search_parameter(code: str, status: str = "active") -> dict:
    return {
        "resourceType": "SearchParameter",
        "url": f"http://telemed.example.cn/fhir/SearchParameter/{code}",
        "name": code,
        "status": status,
        "description": "Blood type recorded in an extension",
        "code": code,
        "base": ["Patient"],
        "type": "string",
        "expression": f"Patient.extension.where(url='{EXT}').value",
    }


def _search(client, code: str, value: str, tag: str) -> set[str]:
    r = client.get("/Patient", params={code: value, "_tag": f"urn:test|{tag}"})
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"}


def _wait_job(client, location: str) -> dict:
    deadline = time.time() + 30
    while time.time() < deadline:
        params = {
            p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in client.get(location).json()["parameter"]
        }
        if params["status"] in ("done", "failed"):
            return params
        time.sleep(0.2)
    raise AssertionError("job did not finish")


def test_custom_parameter_indexes_new_writes_and_reindex_covers_old_ones(client):
    tag, code = unique("cp"), unique("blood").replace("-", "")
    before = client.post("/Patient", json=patient_with_blood_type(tag, "AB")).json()["id"]
    created = client.post("/SearchParameter", json=search_parameter(code))
    assert created.status_code == 201, created.text
    after = client.post("/Patient", json=patient_with_blood_type(tag, "AB")).json()["id"]
    client.post("/Patient", json=patient_with_blood_type(tag, "O"))
    assert _search(client, code, "ab", tag) == {after}  # written after the parameter existed
    assert client.post(f"/Patient/{before}/$reindex").status_code == 200
    assert _search(client, code, "ab", tag) == {before, after}
    job = client.post("/Patient/$reindex")
    assert job.status_code == 202
    assert _wait_job(client, job.headers["Content-Location"])["status"] == "done"
    capability = client.get("/metadata").json()
    patient = next(r for r in capability["rest"][0]["resource"] if r["type"] == "Patient")
    assert code in {p["name"] for p in patient["searchParam"]}
    # Retiring the parameter removes it again.
    sp = client.get("/SearchParameter", params={"url": f"http://telemed.example.cn/fhir/SearchParameter/{code}"})
    sp_resource = sp.json()["entry"][0]["resource"]
    client.put(f"/SearchParameter/{sp_resource['id']}", json={**sp_resource, "status": "retired"})
    r = client.get("/Patient", params={code: "ab"}, headers={"Prefer": "handling=strict"})
    assert r.status_code == 400


def test_bad_custom_parameters_are_rejected(client):
    clash = search_parameter("name")
    assert client.post("/SearchParameter", json=clash).status_code == 400
    composite = search_parameter(unique("c").replace("-", "")) | {"type": "composite"}
    assert client.post("/SearchParameter", json=composite).status_code == 400
    draft = search_parameter(unique("d").replace("-", ""), status="draft") | {"type": "special"}
    assert client.post("/SearchParameter", json=draft).status_code == 201  # stored, not used
