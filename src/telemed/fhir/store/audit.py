"""The tamper-evident audit trail (R4 AuditEvent; IHE BALP-style content).

Every FHIR interaction writes one AuditEvent row *in the transaction of the action it records*,
so nothing is audited that did not happen and nothing happens unaudited; refused requests (401,
403, 404 ...) are recorded in a transaction of their own. Rows are append-only (database
triggers reject UPDATE and DELETE).

Chaining: each row carries the SHA-256 of its content. The :class:`Sealer` then links rows in
``seq`` order, ``chain = sha256(previous chain | seq | content hash)``, into ``audit_seal``.
Sealing after commit (instead of reading the previous hash while inserting) keeps concurrent
requests from queueing on one "last hash" row. ``verify`` recomputes the chain and names the
first row that was altered, removed, or slipped in after sealing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from telemed.db.engine import unit_of_work
from telemed.db.schema import audit_event as t_audit
from telemed.db.schema import audit_seal as t_seal
from telemed.fhir.store.context import AccessContext
from telemed.kernel.clock import Clock, fhir_instant
from telemed.kernel.worker import BackgroundWorker

ACTIONS = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D"}
GAP_GRACE = timedelta(seconds=30)  # a sequence gap younger than this may be a transaction still running
GENESIS = "0" * 64
_SEAL_LOCK = 0x7E1E_A0D1  # PostgreSQL advisory lock key of the sealer
log = logging.getLogger(__name__)


@dataclass
class AuditRecord:
    interaction: str
    outcome: str  # "0" success, "4" minor failure (refused), "8" serious failure
    entity: str | None = None  # Type/id, or the type for searches
    query: str | None = None
    patient: str | None = None
    description: str | None = None
    address: str | None = None


def _event(ctx: AccessContext, rec: AuditRecord, event_id: str, now: datetime) -> dict:
    event: dict = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": rec.interaction}],
        "action": ACTIONS.get(rec.interaction, "E" if rec.interaction.startswith(("operation", "export")) else "R"),
        "recorded": fhir_instant(now),
        "outcome": rec.outcome,
        "agent": [
            {
                "who": {"identifier": {"system": "urn:telemed:user", "value": ctx.user}},
                "requestor": True,
                "role": [{"text": r} for r in sorted(ctx.roles)] or [{"text": "unknown"}],
            }
        ],
        "source": {"observer": {"display": "Telemed FHIR server"}},
    }
    if ctx.organization:
        event["agent"][0]["location"] = {"display": f"Organization/{ctx.organization}"}
    if rec.address:
        event["agent"][0]["network"] = {"address": rec.address, "type": "2"}
    if rec.description:
        event["outcomeDesc"] = rec.description[:1000]
    if ctx.break_glass:
        event["purposeOfEvent"] = [
            {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}],
                "text": ctx.break_glass[:500],
            }
        ]
    entities = []
    if rec.patient:
        entities.append({"what": {"reference": f"Patient/{rec.patient}"}, "type": {"code": "1"}})
    if rec.entity:
        entities.append({"what": {"reference": rec.entity} if "/" in rec.entity else {"display": rec.entity}})
    if rec.query:
        entities.append({"query": base64.b64encode(rec.query.encode()).decode()})
    if entities:
        event["entity"] = entities
    return event


HASHED_COLUMNS = ("id", "username", "organization", "patient", "action", "interaction", "outcome", "break_glass")


def content_hash(row: dict) -> str:
    """SHA-256 over the event and every searchable column, so editing either is detected."""
    canonical = {k: row[k] for k in (*HASHED_COLUMNS, "content")}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record(conn: Connection, ctx: AccessContext, rec: AuditRecord, clock: Clock) -> str:
    """Write one AuditEvent in ``conn``'s transaction; returns its id."""
    now = clock.now()
    event_id = str(uuid.uuid4())
    content = _event(ctx, rec, event_id, now)
    row = {
        "id": event_id,
        "username": ctx.user[:64],
        "organization": ctx.organization,
        "patient": rec.patient,
        "action": content["action"],
        "interaction": rec.interaction[:40],
        "outcome": rec.outcome,
        "break_glass": ctx.break_glass[:512] if ctx.break_glass else None,
        "content": content,
    }
    conn.execute(insert(t_audit).values(recorded=now, content_hash=content_hash(row), **row))
    return event_id


def _chain(previous: str, seq: int, digest: str) -> str:
    return hashlib.sha256(f"{previous}|{seq}|{digest}".encode()).hexdigest()


def seal(engine: Engine, clock: Clock, limit: int = 5000) -> int:
    """Link unsealed events into the chain, in seq order; returns how many were sealed.

    Every instance of the app runs a sealer: on PostgreSQL one at a time holds the lock and the others
    skip the round; elsewhere (SQLite, one writer) a round that lost the race ends in a duplicate
    seal, which ``Sealer`` takes for the other instance's success."""
    with unit_of_work(engine) as conn:
        if conn.dialect.name == "postgresql" and not conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _SEAL_LOCK}
        ).scalar_one():
            return 0
        last = conn.execute(select(t_seal.c.seq, t_seal.c.chain_hash).order_by(t_seal.c.seq.desc()).limit(1)).first()
        previous, last_seq = (last.chain_hash, last.seq) if last else (GENESIS, 0)
        rows = conn.execute(
            select(t_audit.c.seq, t_audit.c.content_hash, t_audit.c.recorded)
            .where(t_audit.c.seq > last_seq)
            .order_by(t_audit.c.seq)
            .limit(limit)
        ).all()
        now = clock.now()
        seals = []
        expected = last_seq + 1
        for row in rows:
            if row.seq != expected and _young(row.recorded, now):
                break  # an earlier sequence number may still be committing: wait for it
            previous = _chain(previous, row.seq, row.content_hash)
            seals.append({"seq": row.seq, "chain_hash": previous, "sealed": now})
            expected = row.seq + 1
        if seals:
            conn.execute(insert(t_seal), seals)
        return len(seals)


def _young(recorded: datetime, now: datetime) -> bool:
    from telemed.kernel.clock import as_utc

    return as_utc(now) - as_utc(recorded) < GAP_GRACE


@dataclass
class Verification:
    ok: bool
    checked: int
    unsealed: int
    problem: str | None = None
    seq: int | None = None


def verify(engine: Engine) -> Verification:
    """Recompute every content hash and the chain; report the first broken link."""
    with unit_of_work(engine, write=False) as conn:
        seals = conn.execute(select(t_seal).order_by(t_seal.c.seq)).all()
        events = {r.seq: r for r in conn.execute(select(t_audit)).all()}
    previous = GENESIS
    for s in seals:
        event = events.pop(s.seq, None)
        if event is None:
            return Verification(False, 0, 0, f"audit event {s.seq} was removed", s.seq)
        if content_hash(event._asdict()) != event.content_hash:
            return Verification(
                False, 0, 0, f"audit event {s.seq} was altered (content does not match its hash)", s.seq
            )
        previous = _chain(previous, s.seq, event.content_hash)
        if previous != s.chain_hash:
            return Verification(False, 0, 0, f"the chain breaks at audit event {s.seq}", s.seq)
    last_sealed = seals[-1].seq if seals else 0
    slipped = sorted(seq for seq in events if seq < last_sealed)
    if slipped:
        return Verification(
            False, len(seals), len(events), f"audit event {slipped[0]} was inserted into the sealed chain", slipped[0]
        )
    return Verification(True, len(seals), len(events))


class Sealer(BackgroundWorker):
    """Seals new audit events every second."""

    thread_name = "telemed-audit-sealer"

    def __init__(self, engine: Engine, clock: Clock, interval: float = 1.0):
        super().__init__(interval)
        self.engine, self.clock = engine, clock

    def tick(self) -> None:
        try:
            while seal(self.engine, self.clock) == 5000:
                pass
        except IntegrityError:
            log.debug("audit events sealed by another instance meanwhile")


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(t_audit)).scalar_one()
