"""System-level search with _type (R4 §3.1.1.2)."""

from __future__ import annotations

from tests.conftest import unique


def test_type_search_across_patient_and_practitioner(client):
    tag = unique("sys")
    meta = {"tag": [{"system": "urn:test", "code": tag}]}
    p = client.post("/Patient", json={"resourceType": "Patient", "meta": meta, "name": [{"family": "欧阳"}]}).json()
    d = client.post(
        "/Practitioner", json={"resourceType": "Practitioner", "meta": meta, "name": [{"family": "欧阳"}]}
    ).json()
    client.post(
        "/Observation", json={"resourceType": "Observation", "meta": meta, "status": "final", "code": {"text": "x"}}
    )
    r = client.get("", params={"_type": "Patient,Practitioner", "_tag": f"urn:test|{tag}", "_count": 1})
    assert r.status_code == 200, r.text
    page1 = r.json()
    assert page1["type"] == "searchset" and len(page1["entry"]) == 1
    nxt = next(link["url"] for link in page1["link"] if link["relation"] == "next")
    page2 = client.get(nxt).json()
    got = {e["fullUrl"].split("/fhir/")[1] for e in page1["entry"] + page2["entry"]}
    assert got == {f"Patient/{p['id']}", f"Practitioner/{d['id']}"}
    assert not [link for link in page2["link"] if link["relation"] == "next"]
    shared = client.get("", params={"_type": "Patient,Practitioner", "name": "欧阳", "_tag": f"urn:test|{tag}"})
    assert len(shared.json()["entry"]) == 2
    # A parameter that not every listed type defines is an error, not silently ignored.
    assert client.get("", params={"_type": "Patient,Observation", "birthdate": "2000"}).status_code == 400
    assert client.get("", params={"_type": "Nope"}).status_code == 400
