"""Instance and type interactions (R4 §3.1.0) over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.conftest import unique


def patient(**extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": "张", "given": ["伟"], "text": "张伟"}], **extra}


def test_create_assigns_id_version_location_etag(client):
    r = client.post("/Patient", json=patient(id="ignored"))
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "ignored"
    assert body["meta"]["versionId"] == "1"
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert r.headers["Last-Modified"].endswith("GMT")
    assert r.headers["Content-Type"].startswith("application/fhir+json")


def test_read_vread_and_if_none_match(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    r = client.get(f"/Patient/{pid}")
    assert r.status_code == 200 and r.json()["name"][0]["text"] == "张伟"
    assert client.get(f"/Patient/{pid}/_history/1").json()["id"] == pid
    assert client.get(f"/Patient/{pid}/_history/9").status_code == 404
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/Patient/{unique()}").status_code == 404


def test_update_versions_and_if_match(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    r = client.put(f"/Patient/{pid}", json=patient(id=pid, active=True), headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.headers["ETag"] == 'W/"2"' and r.json()["meta"]["versionId"] == "2"
    stale = client.put(f"/Patient/{pid}", json=patient(id=pid, active=False), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Patient/{pid}").json()["active"] is True
    assert client.get(f"/Patient/{pid}/_history/1").json().get("active") is None


def test_update_as_create_with_client_id(client):
    pid = unique("client")
    r = client.put(f"/Patient/{pid}", json=patient(id=pid))
    assert r.status_code == 201
    assert r.headers["Location"].endswith(f"/Patient/{pid}/_history/1")
    assert client.put(f"/Patient/{pid}", json=patient(id=pid, active=True)).status_code == 200


def test_delete_then_gone_and_history_kept(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    r = client.delete(f"/Patient/{pid}")
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'
    gone = client.get(f"/Patient/{pid}")
    assert gone.status_code == 410 and gone.json()["issue"][0]["code"] == "deleted"
    hist = client.get(f"/Patient/{pid}/_history").json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "POST"]
    assert client.get(f"/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/Patient/{pid}/_history/2").status_code == 410
    assert client.delete(f"/Patient/{pid}").status_code == 200  # idempotent
    # Re-creating a deleted resource by PUT is a create (201) with the next version.
    again = client.put(f"/Patient/{pid}", json=patient(id=pid))
    assert again.status_code == 201 and again.json()["meta"]["versionId"] == "3"


def test_delete_with_stale_if_match(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    client.put(f"/Patient/{pid}", json=patient(id=pid, active=True))
    assert client.delete(f"/Patient/{pid}", headers={"If-Match": 'W/"1"'}).status_code == 412
    assert client.get(f"/Patient/{pid}").status_code == 200


def test_json_patch(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    ops = [
        {"op": "add", "path": "/active", "value": True},
        {"op": "replace", "path": "/name/0/text", "value": "张伟伟"},
    ]
    r = client.patch(f"/Patient/{pid}", json=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True and r.json()["meta"]["versionId"] == "2"
    stale = client.patch(
        f"/Patient/{pid}", json=ops, headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    invalid = client.patch(
        f"/Patient/{pid}",
        json=[{"op": "add", "path": "/gender", "value": "robot"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert invalid.status_code == 422
    assert invalid.json()["issue"][0]["expression"] == ["Patient.gender"]
    bad_path = client.patch(
        f"/Patient/{pid}",
        json=[{"op": "remove", "path": "/nothing/here"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert bad_path.status_code == 422


def test_conditional_create(client):
    ident = {"system": "urn:oid:2.16.156.10011.1.1", "value": unique("id")}
    body = patient(identifier=[ident])
    cond = {"If-None-Exist": f"identifier={ident['system']}|{ident['value']}"}
    first = client.post("/Patient", json=body, headers=cond)
    assert first.status_code == 201
    second = client.post("/Patient", json=body, headers=cond)
    assert second.status_code == 200 and second.json()["id"] == first.json()["id"]
    dup = unique("dup")
    assert client.put(f"/Patient/{dup}", json=patient(id=dup, identifier=[ident])).status_code == 201
    assert client.post("/Patient", json=body, headers=cond).status_code == 412


def test_conditional_update_and_delete(client):
    value = unique("mrn")
    q = f"identifier=urn:mrn|{value}"
    created = client.put(f"/Patient?{q}", json=patient(identifier=[{"system": "urn:mrn", "value": value}]))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(f"/Patient?{q}", json=patient(active=True, identifier=[{"system": "urn:mrn", "value": value}]))
    assert updated.status_code == 200 and updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    assert client.delete(f"/Patient?{q}").status_code == 200
    assert client.get(f"/Patient/{pid}").status_code == 410
    assert client.put("/Patient", json=patient()).status_code == 400  # no criteria


def test_prefer_return(client):
    minimal = client.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b"" and "Location" in minimal.headers
    oo = client.post("/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert oo.json()["resourceType"] == "OperationOutcome"
    rep = client.post("/Patient", json=patient(), headers={"Prefer": "return=representation"})
    assert rep.json()["resourceType"] == "Patient"


def test_format_and_pretty(client):
    pid = client.post("/Patient", json=patient()).json()["id"]
    r = client.get(f"/Patient/{pid}?_format=json&_pretty=true", headers={"Accept": "*/*"})
    assert r.status_code == 200 and b"\n  " in r.content
    assert client.get(f"/Patient/{pid}?_format=application/json").headers["Content-Type"].startswith("application/json")
    assert client.get(f"/Patient/{pid}?_format=xml").status_code == 415


def test_search_by_id_and_identifier_with_paging(client):
    value = unique("s")
    ids = [
        client.post("/Patient", json=patient(identifier=[{"system": "urn:s", "value": value}])).json()["id"]
        for _ in range(3)
    ]
    page1 = client.get("/Patient", params={"identifier": f"urn:s|{value}", "_count": 2}).json()
    # A full page has no total unless asked for (counting every match costs the server a second search).
    assert page1["type"] == "searchset" and "total" not in page1 and len(page1["entry"]) == 2
    counted = client.get("/Patient", params={"identifier": f"urn:s|{value}", "_count": 2, "_total": "accurate"})
    assert counted.json()["total"] == 3
    nxt = next(link["url"] for link in page1["link"] if link["relation"] == "next")
    page2 = client.get(nxt).json()
    got = {e["resource"]["id"] for e in page1["entry"] + page2["entry"]}
    assert got == set(ids)
    assert client.get("/Patient", params={"_id": ids[0]}).json()["total"] == 1
    assert client.get("/Patient", params={"identifier": value}).json()["total"] == 3
    assert client.get("/Patient", params={"name": "张", "_id": ids[0]}).json()["total"] == 1
    assert client.get("/Patient", params={"_summary": "count", "identifier": value}).json()["total"] == 3
    post = client.post(
        "/Patient/_search",
        content=f"identifier=urn:s|{value}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert post.json()["total"] == 3
