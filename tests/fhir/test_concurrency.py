"""No lost update (R4 §3.1.0.4.2 managing resource contention): racing writers, one winner."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx


def test_same_if_match_exactly_one_succeeds(server, client):
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    headers = dict(client.headers) | {"If-Match": 'W/"1"'}

    def attempt(i: int) -> int:
        body = {"resourceType": "Patient", "id": pid, "name": [{"text": f"writer {i}"}]}
        return httpx.put(f"{server.url}/fhir/Patient/{pid}", json=body, headers=headers, timeout=30).status_code

    for _round in range(3):
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(attempt, range(8)))
        assert sorted(statuses) == [200] + [412] * 7, statuses
        version = client.get(f"/Patient/{pid}").json()["meta"]["versionId"]
        headers["If-Match"] = f'W/"{version}"'
    history = client.get(f"/Patient/{pid}/_history").json()
    assert len(history["entry"]) == 4


def test_unconditional_updates_all_land_as_versions(server, client):
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    headers = dict(client.headers)

    def attempt(i: int) -> int:
        body = {"resourceType": "Patient", "id": pid, "name": [{"text": f"writer {i}"}]}
        return httpx.put(f"{server.url}/fhir/Patient/{pid}", json=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, range(16)))
    assert statuses == [200] * 16
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "17"
    versions = [e["response"]["etag"] for e in client.get(f"/Patient/{pid}/_history?_count=100").json()["entry"]]
    assert len(versions) == len(set(versions)) == 17


def test_concurrent_update_as_create_same_id(server, client):
    pid = "race-" + client.post("/Patient", json={"resourceType": "Patient"}).json()["id"][:8]
    headers = dict(client.headers)

    def attempt(i: int) -> int:
        body = {"resourceType": "Patient", "id": pid, "name": [{"text": f"writer {i}"}]}
        return httpx.put(f"{server.url}/fhir/Patient/{pid}", json=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(attempt, range(6)))
    assert statuses.count(201) == 1 and statuses.count(200) == 5, statuses
