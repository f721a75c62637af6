"""Resumable uploads (telemed.portal.uploads): parts, a dropped connection resumed from the
server's offset, the finished file attached to a consultation, and the refusals."""

from __future__ import annotations

import base64
import os

from sqlalchemy import update

from telemed.consultation import service
from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity.passwords import hash_password
from tests.consultation.network import build
from tests.consultation.test_service import details, read, run
from tests.identity.test_authentication import PASSWORD
from tests.portal.conftest import browser_client, csrf_of, sign_in


def _session(services, server, username):
    with unit_of_work(services.engine) as conn:
        conn.execute(
            update(account).where(account.c.username == username).values(password_hash=hash_password(PASSWORD))
        )
    client = browser_client(server.url)
    sign_in(client, username)
    token = csrf_of(client.get("/portal/consultations"))
    client.headers["X-CSRF-Token"] = token
    return client, token


def test_a_large_file_resumes_after_a_dropped_part_and_is_attached(services, server):
    net = build(services)
    cid = run(services, net.ctx("requester"), service.create, details(net)).consultation.id
    client, token = _session(services, server, net.requester)
    data = os.urandom(2_500_000)
    begin = client.post("/portal/uploads", json={"name": "CT报告.pdf", "type": "application/pdf", "size": len(data)})
    assert begin.status_code == 201, begin.text
    up, chunk = begin.json()["id"], begin.json()["chunk"]
    first = client.patch(f"/portal/uploads/{up}", content=data[:chunk], headers={"Upload-Offset": "0"})
    assert first.json()["offset"] == chunk
    # The answer to the next part was "lost": the client sends it again from its old offset.
    client.patch(f"/portal/uploads/{up}", content=data[chunk : 2 * chunk], headers={"Upload-Offset": str(chunk)})
    again = client.patch(
        f"/portal/uploads/{up}", content=data[chunk : 2 * chunk], headers={"Upload-Offset": str(chunk)}
    )
    assert again.status_code == 409 and again.json()["offset"] == 2 * chunk
    offset = client.get(f"/portal/uploads/{up}", headers={"Accept": "application/json"}).json()["offset"]
    done = client.patch(f"/portal/uploads/{up}", content=data[offset:], headers={"Upload-Offset": str(offset)})
    assert done.json()["complete"] is True
    attach = client.post(f"/portal/consultations/{cid}/attachments", data={"upload_id": up, "csrf_token": token},
                         headers={"Accept": "application/json"})  # fmt: skip
    assert attach.status_code == 201, attach.text
    doc = read(services, net.ctx("requester"), "DocumentReference", attach.json()["id"])
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]) == data
    assert doc["content"][0]["attachment"]["title"] == "CT报告.pdf"
    # Attached once: the upload is gone.
    assert client.get(f"/portal/uploads/{up}").status_code == 404


def test_uploads_refuse_what_they_should(services, server):
    net = build(services)
    client, _ = _session(services, server, net.requester)
    too_big = client.post("/portal/uploads", json={"name": "x.pdf", "type": "application/pdf", "size": 10**10})
    assert too_big.status_code == 413
    bad_type = client.post("/portal/uploads", json={"name": "x.exe", "type": "application/x-msdownload", "size": 10})
    assert bad_type.status_code == 415
    up = client.post("/portal/uploads", json={"name": "x.pdf", "type": "application/pdf", "size": 10}).json()["id"]
    over = client.patch(f"/portal/uploads/{up}", content=b"x" * 11, headers={"Upload-Offset": "0"})
    assert over.status_code == 400
    no_csrf = browser_client(server.url)
    no_csrf.cookies = client.cookies
    assert no_csrf.patch(f"/portal/uploads/{up}", content=b"x", headers={"Upload-Offset": "0"}).status_code == 403
    # Another user does not even see it.
    other, _ = _session(services, server, net.experts[0])
    assert other.get(f"/portal/uploads/{up}").status_code == 404
