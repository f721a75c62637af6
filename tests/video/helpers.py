"""A scheduled consultation with portal accounts, and signalling clients on the live server."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from telemed.consultation import service
from telemed.consultation import workflow as wf
from telemed.db.engine import unit_of_work
from telemed.db.schema import account, audit_event
from telemed.identity.passwords import hash_password
from tests.consultation.network import build
from tests.consultation.test_service import details, run
from tests.identity.test_authentication import PASSWORD
from tests.portal.conftest import browser_client, csrf_of, sign_in


@dataclass
class Call:
    net: object
    cid: str
    encounter: str


def scheduled(services, *, start_in=timedelta(minutes=5), kind=wf.ROUTINE, net=None) -> Call:
    """A consultation of ``kind`` scheduled ``start_in`` from now (routine: expert e1; MDT: e1 and e2)."""
    net = net or build(services)
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net, kind=kind)).consultation.id
    run(services, r, service.act, cid, "submit")
    run(services, net.ctx("qc"), service.act, cid, "accept")
    experts = (net.experts[0],) if kind != wf.MDT else (net.experts[0], net.experts[1])
    run(services, net.ctx("triage"), service.act, cid, "assign", experts=experts)
    start = services.clock.now() + start_in
    loaded = run(services, net.ctx("triage"), service.act, cid, "schedule", start=start)
    return Call(net, cid, loaded.encounter.resource["id"])


def set_password(services, username: str) -> None:
    with unit_of_work(services.engine) as conn:
        hashed = hash_password(PASSWORD)
        conn.execute(update(account).where(account.c.username == username).values(password_hash=hashed))


def portal(services, server, username: str, lang: str | None = None):
    """A signed-in browser-like client and its CSRF token."""
    set_password(services, username)
    client = browser_client(server.url)
    if lang:
        client.get(f"/portal/lang/{lang}")
    sign_in(client, username)
    return client, csrf_of(client.get("/portal/consultations"))


def join_token(client, csrf: str, cid: str):
    return client.post(f"/portal/consultations/{cid}/video/join", headers={"X-CSRF-Token": csrf,
                       "Accept": "application/json"})  # fmt: skip


def ws_url(server, cid: str) -> str:
    return server.url.replace("http://", "ws://") + f"/portal/video/{cid}/ws"


def connect(server, client, cid: str):
    """A signalling socket with the client's session cookie."""
    from websockets.sync.client import connect as ws_connect

    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    return ws_connect(ws_url(server, cid), additional_headers={"Cookie": cookie}, open_timeout=10)


def recv(ws, timeout: float = 5.0, skip=("state", "pong")) -> dict:
    while True:
        msg = json.loads(ws.recv(timeout=timeout))
        if msg.get("type") not in skip:
            return msg


def send(ws, msg) -> None:
    ws.send(msg if isinstance(msg, str) else json.dumps(msg))


def join(ws, token: str, peer: str, rejoin: bool = False) -> dict:
    send(ws, {"type": "join", "token": token, "peer": peer, "rejoin": rejoin})
    return recv(ws)


def video_audits(services, cid: str) -> list[tuple[str, str, str]]:
    """(user, outcome, description) of the video room's AuditEvents."""
    with unit_of_work(services.engine, write=False) as conn:
        rows = conn.execute(select(audit_event.c.username, audit_event.c.outcome, audit_event.c.content)
                            .where(audit_event.c.interaction == "operation-video")).all()  # fmt: skip
    out = []
    for user, outcome, content in rows:
        content = json.loads(content) if isinstance(content, str) else content
        if any(e.get("what", {}).get("reference") == f"Encounter/{cid}" for e in content.get("entity", [])):
            out.append((user, outcome, content.get("outcomeDesc", "")))
    return out
