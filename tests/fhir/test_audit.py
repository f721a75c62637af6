"""The audit trail: one AuditEvent per interaction, refused ones too, break-glass, append-only,
hash chain verification catching an edited and a deleted row."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from sqlalchemy import text

from telemed.app import Services
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.fhir.store import audit
from telemed.fhir.store.context import AccessContext
from telemed.identity import issue_token
from tests.conftest import make_settings, unique


def headers_for(services, role: str, org: str | None = None, user: str | None = None) -> dict:
    token = issue_token(
        services.token_keys, user or unique(role), ["user/*.*"], 600, services.clock.now(), [role], organization=org
    )
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def events(server, services, **params) -> list[dict]:
    r = httpx.get(f"{server.url}/fhir/AuditEvent", params=params, headers=headers_for(services, "auditor"))
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_reads_writes_and_refusals_are_audited(server, services, client):
    user = unique("doc")
    h = headers_for(services, "platform-admin", user=user)
    pid = httpx.post(f"{server.url}/fhir/Patient", json={"resourceType": "Patient"}, headers=h).json()["id"]
    httpx.get(f"{server.url}/fhir/Patient/{pid}", headers=h)
    httpx.get(f"{server.url}/fhir/Patient/{unique()}", headers=h)  # 404
    mine = events(server, services, agent=user)
    by_action = sorted((e["action"], e["outcome"], e["subtype"][0]["code"]) for e in mine)
    assert by_action == [("C", "0", "create"), ("R", "0", "read"), ("R", "4", "get-refused")]
    assert {e["entity"][0]["what"]["reference"] for e in mine if e["outcome"] == "0"} == {f"Patient/{pid}"}
    assert len(events(server, services, patient=f"Patient/{pid}")) == 2
    httpx.get(f"{server.url}/fhir/Patient")  # no token
    anonymous = events(server, services, agent="anonymous", _count="5")
    assert anonymous and anonymous[0]["outcomeDesc"].startswith("401")


def test_only_auditors_read_the_trail_and_nobody_writes_it(server, services):
    doctor = headers_for(services, "requesting-doctor", org="org-x")
    assert httpx.get(f"{server.url}/fhir/AuditEvent", headers=doctor).status_code == 403
    auditor = headers_for(services, "auditor")
    event = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z"}
    assert httpx.post(f"{server.url}/fhir/AuditEvent", json=event, headers=auditor).status_code == 405


def test_break_glass_is_allowed_with_a_reason_and_flagged(server, services):
    with unit_of_work(services.engine) as conn:
        owner = AccessContext(user="owner", organization=unique("org-a"), clinical="scoped")
        pid = services.repository(conn, owner).create("Patient", {"resourceType": "Patient"}).resource["id"]
    user = unique("er-doc")
    h = headers_for(services, "requesting-doctor", org=unique("org-b"), user=user)
    url = f"{server.url}/fhir/Patient/{pid}"
    assert httpx.get(url, headers=h).status_code == 404
    assert httpx.get(url, headers=h | {"X-Break-Glass-Reason": "x"}).status_code == 400
    assert httpx.get(url, headers=h | {"X-Break-Glass-Reason": "unconscious patient in ER"}).status_code == 200
    flagged = events(server, services, agent=user, purpose="BTG")
    assert len(flagged) == 1 and flagged[0]["purposeOfEvent"][0]["text"] == "unconscious patient in ER"
    supervisor = headers_for(services, "supervisor")
    assert httpx.get(url, headers=supervisor | {"X-Break-Glass-Reason": "curious"}).status_code == 403


def test_audit_rows_are_append_only(services, client):
    client.get("/metadata")
    with pytest.raises(Exception, match="append-only"):
        with unit_of_work(services.engine) as conn:
            conn.execute(text("UPDATE audit_event SET username = 'someone-else'"))
    with pytest.raises(Exception, match="append-only"):
        with unit_of_work(services.engine) as conn:
            conn.execute(text("DELETE FROM audit_event"))


@pytest.fixture
def fresh(tmp_path, backend, request):
    url = f"sqlite:///{tmp_path}/audit.db" if backend == "sqlite" else request.getfixturevalue("own_pg_database")
    settings = make_settings(tmp_path, url)
    svc = Services.from_settings(settings)
    upgrade(svc.engine)
    ctx = AccessContext.system()
    for i in range(5):
        with unit_of_work(svc.engine) as conn:
            audit.record(conn, ctx, audit.AuditRecord("read", "0", f"Patient/p{i}", patient=f"p{i}"), svc.clock)
    assert audit.seal(svc.engine, svc.clock) == 5
    yield svc, url, tmp_path
    svc.engine.dispose()


def _without_triggers(svc, statement: str) -> None:
    with unit_of_work(svc.engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
            conn.execute(text(statement))
            conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_event_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_event_no_delete"))
            conn.execute(text(statement))


def test_verify_accepts_an_intact_chain(fresh):
    svc, _, _ = fresh
    result = audit.verify(svc.engine)
    assert result.ok and result.checked == 5


def test_sealers_of_several_instances_seal_each_event_once(fresh):
    """Every app instance runs a sealer: racing ones neither fail nor fork the chain."""
    import threading

    svc, _, _ = fresh
    ctx = AccessContext.system()
    with unit_of_work(svc.engine) as conn:
        for i in range(200):
            audit.record(conn, ctx, audit.AuditRecord("read", "0", f"Patient/q{i}", patient=f"q{i}"), svc.clock)
    errors = []

    def instance():
        try:
            for _ in range(5):
                audit.Sealer(svc.engine, svc.clock).tick()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=instance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = audit.verify(svc.engine)
    assert result.ok and result.checked == 205 and result.unsealed == 0


def test_verify_catches_an_edited_row(fresh):
    svc, url, tmp = fresh
    _without_triggers(svc, "UPDATE audit_event SET username = 'mallory' WHERE seq = 3")
    result = audit.verify(svc.engine)
    assert not result.ok and result.seq == 3 and "altered" in result.problem
    cli = subprocess.run(
        [sys.executable, "-m", "telemed", "audit", "verify"],
        env={"TELEMED_DATABASE_URL": url, "TELEMED_VAR_DIR": str(tmp), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert cli.returncode == 1 and "audit event 3 was altered" in cli.stdout, cli.stdout + cli.stderr


def test_verify_catches_a_deleted_row(fresh):
    svc, _, _ = fresh
    _without_triggers(svc, "DELETE FROM audit_event WHERE seq = 2")
    result = audit.verify(svc.engine)
    assert not result.ok and result.seq == 2 and "removed" in result.problem
