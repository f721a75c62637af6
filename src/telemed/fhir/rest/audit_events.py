"""AuditEvent reads and searches for auditors, served from the append-only audit trail.

``GET [base]/AuditEvent?agent=&patient=&date=&action=&outcome=&purpose=BTG&organization=``,
newest first, paged with a cursor. AuditEvents are written only by the platform itself, so
create/update/delete are refused (405). Only auditors and platform administrators may read them.
"""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy import select

from telemed.db.schema import audit_event as t_audit
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.search.types._common import split_prefix
from telemed.fhir.search.types.date import parse_range
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError, incorrect

READERS = {"auditor", "platform-admin"}
MAX_COUNT = 500


def _require_auditor(repo: Repository) -> None:
    if not (READERS & repo.context.roles) and repo.context.user != "system":
        raise TelemedError(Category.FORBIDDEN, "Only auditors may read the audit trail")


def read(repo: Repository, req: FhirRequest, event_id: str) -> FhirResponse:
    _require_auditor(repo)
    row = repo.conn.execute(select(t_audit.c.content).where(t_audit.c.id == event_id)).first()
    if row is None:
        raise TelemedError(Category.NOT_FOUND, f"AuditEvent/{event_id} is not known")
    return FhirResponse(200, row.content, {}, "read")


def search(repo: Repository, req: FhirRequest) -> FhirResponse:
    _require_auditor(repo)
    q = select(t_audit.c.seq, t_audit.c.content).order_by(t_audit.c.seq.desc())
    count = 50
    for name, value in req.params:
        if name in ("agent", "user"):
            q = q.where(t_audit.c.username == value)
        elif name == "patient":
            q = q.where(t_audit.c.patient == value.removeprefix("Patient/"))
        elif name == "organization":
            q = q.where(t_audit.c.organization == value.removeprefix("Organization/"))
        elif name == "action":
            q = q.where(t_audit.c.action.in_(value.split(",")))
        elif name == "outcome":
            q = q.where(t_audit.c.outcome.in_(value.split(",")))
        elif name == "purpose":
            if value.rsplit("|", 1)[-1] != "BTG":
                raise incorrect("purpose: only BTG (break-glass) is searchable", name)
            q = q.where(t_audit.c.break_glass.is_not(None))
        elif name == "date":
            prefix, text = split_prefix(value, name)
            try:
                low, high = parse_range(text)
            except ValueError:
                raise incorrect(f"date: {text!r} is not a valid date", name) from None
            col = t_audit.c.recorded
            cond = {
                "ge": col >= low,
                "gt": col > high,
                "le": col <= high,
                "lt": col < low,
                "eq": col.between(low, high),
            }
            if prefix not in cond:
                raise incorrect(f"date: prefix {prefix!r} is not supported here", name)
            q = q.where(cond[prefix])
        elif name == "_count":
            if not value.isdigit():
                raise incorrect("_count must be a non-negative integer", name)
            count = min(int(value), MAX_COUNT)
        elif name == "_cursor":
            q = q.where(t_audit.c.seq < int(value))
        else:
            raise incorrect(f"Search parameter {name!r} is not supported on AuditEvent", name)
    rows = repo.conn.execute(q.limit(count + 1)).all()
    links = [{"relation": "self", "url": f"{req.base_url}/AuditEvent?{urlencode(req.params)}".rstrip("?")}]
    if len(rows) > count:
        kept = [(k, v) for k, v in req.params if k != "_cursor"] + [("_cursor", str(rows[count - 1].seq))]
        links.append({"relation": "next", "url": f"{req.base_url}/AuditEvent?{urlencode(kept)}"})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "link": links}
    entries = [
        {"fullUrl": f"{req.base_url}/AuditEvent/{r.content['id']}", "resource": r.content, "search": {"mode": "match"}}
        for r in rows[:count]
    ]
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, bundle, {}, "search-type")
