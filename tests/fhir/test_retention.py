"""Retention holds: a record carrying the date until which it must be kept cannot be deleted, nor its
hold removed or brought forward, before that date (409 with an OperationOutcome); after it, it can."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telemed.fhir.store.retention import RETAIN_UNTIL_URL


def _doc(until: datetime) -> dict:
    return {
        "resourceType": "DocumentReference", "status": "current",
        "content": [{"attachment": {"contentType": "video/webm", "title": "recording"}}],
        "extension": [{"url": RETAIN_UNTIL_URL, "valueDateTime": until.isoformat(timespec="seconds")}],
    }  # fmt: skip


def test_a_held_record_is_kept_until_its_date(client):
    until = datetime.now(UTC) + timedelta(days=3 * 365 + 1)
    created = client.post("/DocumentReference", json=_doc(until))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]

    refused = client.delete(f"/DocumentReference/{rid}")
    assert refused.status_code == 409
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert until.date().isoformat() in outcome["issue"][0]["diagnostics"]

    dropped = {k: v for k, v in created.json().items() if k != "extension"}
    assert client.put(f"/DocumentReference/{rid}", json=dropped).status_code == 409  # the hold cannot go
    earlier = {**created.json(), **_doc(until - timedelta(days=400)), "id": rid}
    assert client.put(f"/DocumentReference/{rid}", json=earlier).status_code == 409  # nor come sooner
    later = {**created.json(), **_doc(until + timedelta(days=30)), "id": rid, "description": "kept longer"}
    assert client.put(f"/DocumentReference/{rid}", json=later).status_code == 200  # a longer hold is fine
    assert client.get(f"/DocumentReference/{rid}").status_code == 200


def test_after_its_date_a_record_may_be_deleted(client):
    created = client.post("/DocumentReference", json=_doc(datetime.now(UTC) - timedelta(days=1)))
    rid = created.json()["id"]
    assert client.delete(f"/DocumentReference/{rid}").status_code in (200, 204)
    assert client.get(f"/DocumentReference/{rid}").status_code == 410
