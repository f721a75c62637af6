"""Large binaries live in the blob store, not in database rows (Binary and attachment data)."""

from __future__ import annotations

import base64
import os

from sqlalchemy import select

from telemed.db.schema import resource


def _row_content(services, rtype, rid):
    with services.engine.connect() as conn:
        return conn.execute(
            select(resource.c.content).where(resource.c.resource_type == rtype, resource.c.id == rid)
        ).scalar_one()


def test_raw_binary_upload_and_download(client, services):
    payload = os.urandom(50_000)
    r = client.post("/Binary", content=payload, headers={"Content-Type": "application/dicom"})
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    raw = client.get(f"/Binary/{bid}", headers={"Accept": "application/dicom"})
    assert raw.status_code == 200 and raw.content == payload
    assert raw.headers["Content-Type"] == "application/dicom"
    as_fhir = client.get(f"/Binary/{bid}").json()
    assert base64.b64decode(as_fhir["data"]) == payload
    stored = _row_content(services, "Binary", bid)
    assert stored["data"].startswith("blob:") and len(str(stored)) < 1000


def test_attachment_data_is_externalised_transparently(client, services):
    data = base64.b64encode(os.urandom(20_000)).decode()
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/pdf", "data": data}}],
    }
    r = client.post("/DocumentReference", json=doc)
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    assert client.get(f"/DocumentReference/{did}").json()["content"][0]["attachment"]["data"] == data
    assert _row_content(services, "DocumentReference", did)["content"][0]["attachment"]["data"].startswith("blob:")
    hist = client.get(f"/DocumentReference/{did}/_history").json()
    assert hist["entry"][0]["resource"]["content"][0]["attachment"]["data"] == data
