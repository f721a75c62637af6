"""History at instance, type and system level (R4 §3.1.0.9), with _since, _count and stable paging."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests.conftest import unique


def test_type_history_paging_has_no_gaps_or_duplicates_while_writing(client):
    rtype = "Basic"
    tag = unique("h")
    made = []
    for _ in range(5):
        made.append(client.post(f"/{rtype}", json={"resourceType": rtype, "code": {"text": tag}}).json()["id"])
    seen = []
    page = client.get(f"/{rtype}/_history", params={"_count": 2}).json()
    while True:
        seen += [e["fullUrl"].rsplit("/", 1)[1] for e in page.get("entry", [])]
        # A write between pages must not shift what later pages return.
        client.post(f"/{rtype}", json={"resourceType": rtype, "code": {"text": "interleaved"}})
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt or set(made) <= set(seen):
            break
        page = client.get(nxt[0]).json()
    assert len(seen) == len(set(seen))
    assert set(made) <= set(seen)


def test_since_filters_and_system_history(client):
    before = client.post("/Basic", json={"resourceType": "Basic", "code": {"text": "old"}}).json()["id"]
    time.sleep(0.05)
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.05)
    after = client.post("/Basic", json={"resourceType": "Basic", "code": {"text": "new"}}).json()["id"]
    ids = [
        e["fullUrl"].rsplit("/", 1)[1] for e in client.get("/Basic/_history", params={"_since": since}).json()["entry"]
    ]
    assert after in ids and before not in ids
    system = client.get("/_history", params={"_since": since, "_count": 100}).json()
    assert system["type"] == "history"
    assert any(e["fullUrl"].endswith(f"/Basic/{after}") for e in system["entry"])
    assert client.get("/_history", params={"_since": "not-a-date"}).status_code == 400


def test_instance_history_entries(client):
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    client.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True})
    bundle = client.get(f"/Patient/{pid}/_history").json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    first, second = bundle["entry"]
    assert first["response"]["etag"] == 'W/"2"' and first["request"] == {"method": "PUT", "url": f"Patient/{pid}"}
    assert second["request"] == {"method": "POST", "url": "Patient"}
    assert client.get("/Patient/never-was/_history").status_code == 404
