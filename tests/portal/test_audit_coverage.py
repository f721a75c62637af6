"""Every module's portal pages leave a trace in the audit trail: the demo network's staff open their
worklists and one case each (ECG, pathology, imaging reading, imaging studies), and each page they
saw is an AuditEvent naming them, the page, their address and, for a case, the patient."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from telemed.app import Services, create_app
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.db.schema import account as t_account
from telemed.db.schema import audit_event
from telemed.demo.loader import DEMO_PASSWORD, load_demo
from tests.conftest import LiveServer, make_settings
from tests.portal.conftest import browser_client, sign_in

# (role, worklist, link to one case on it)
MODULES = [
    ("ecg-reader", "/portal/ecg", r'href="(/portal/ecg/(?!stats)[A-Za-z0-9\-.]+)"'),
    ("pathologist", "/portal/pathology/cases", r'href="(/portal/pathology/cases/(?!new)[A-Za-z0-9\-.]+)"'),
    ("radiologist", "/portal/reading", r'href="(/portal/reading/(?!new|teaching)[A-Za-z0-9\-.]+)"'),
    ("requesting-doctor", "/portal/imaging", None),
]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit-demo")
    services = Services.from_settings(make_settings(tmp, f"sqlite:///{tmp}/telemed.db"))
    upgrade(services.engine)
    load_demo(services)
    with LiveServer(create_app(services)) as live:
        yield services, live
    services.engine.dispose()


def _users_with(services: Services, role: str) -> list[str]:
    with unit_of_work(services.engine, write=False) as conn:
        rows = conn.execute(select(t_account.c.username, t_account.c.roles).order_by(t_account.c.username)).all()
    return [r.username for r in rows if role in r.roles]


def _events(services: Services, username: str) -> list:
    with unit_of_work(services.engine, write=False) as conn:
        return conn.execute(
            select(audit_event.c.interaction, audit_event.c.patient, audit_event.c.content)
            .where(audit_event.c.username == username)
            .order_by(audit_event.c.seq)
        ).all()


def _read_of(events: list, path: str) -> list:
    return [e for e in events if e.interaction == "read" and e.content.get("outcomeDesc") == f"portal GET {path}"]


@pytest.mark.parametrize(("role", "worklist", "link"), MODULES, ids=[m[1] for m in MODULES])
def test_pages_are_audited(demo_server, role, worklist, link):
    services, live = demo_server
    for username in _users_with(services, role):
        with browser_client(live.url) as client:
            assert sign_in(client, username, DEMO_PASSWORD).status_code == 303
            page = client.get(worklist)
            assert page.status_code == 200, page.text[:300]
            found = re.search(link, page.text) if link else None
            if link and not found:
                continue  # nothing of theirs on this worklist: the next colleague
            events = _events(services, username)
            seen = _read_of(events, worklist)
            assert seen, f"{worklist} opened by {username} is not in the audit trail"
            assert seen[-1].content["agent"][0]["network"]["address"] == "127.0.0.1"
            if found:
                case = found.group(1)
                assert client.get(case).status_code == 200
                opened = _read_of(_events(services, username), case)
                assert opened and opened[-1].patient, f"{case} is not audited with its patient"
            return
    pytest.fail(f"no demo {role} has anything on {worklist}")
