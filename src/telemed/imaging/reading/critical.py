"""Critical findings (危急值): flagged by the radiologist, told to the requester at once, acknowledged.

A critical finding is a ``Communication`` (priority ``stat``, category critical-finding) from the
radiologist to the requesting doctor, ``in-progress`` until that doctor (or a colleague of the
requesting institution with the requesting-doctor role) acknowledges it; then ``completed`` with
who acknowledged and when. The requester is told at once (portal notice, SMS, e-mail through
telemed.notify). Unacknowledged after ``Policy.critical_ack`` it is escalated: level 1 tells the
requester again and the requesting institution's duty line, and every ``critical_repeat`` after
that the level goes up and the alert is repeated (the reading centre's duty line too). Every step
is a store write, so it is in the audit trail (AuditEvent) and the Communication's history.
"""

from __future__ import annotations

from datetime import datetime

from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.imaging.reading import model as m
from telemed.imaging.reading import service as s
from telemed.imaging.reading import workflow as wf
from telemed.kernel.errors import Category, TelemedError

MAX_CRITICAL = 2000


def findings(repo: Repository, rid: str) -> list[dict]:
    """The reading's critical findings, oldest first."""
    found = s.find(repo, "Communication", [("based-on", f"ServiceRequest/{rid}")], 50)
    return sorted((f.resource for f in found if _is_critical(f.resource)), key=lambda r: r.get("sent", ""))


def _is_critical(comm: dict) -> bool:
    return any(c.get("code") == "critical-finding" for cat in comm.get("category", []) for c in cat.get("coding", []))


def flag(repo: Repository, env: s.Env, ctx: AccessContext, rid: str, text: str) -> s.Loaded:
    """The radiologist holding (or who signed) the reading flags a critical finding."""
    text = (text or "").strip()
    if not text:
        raise s.incorrect("Describe the critical finding", "critical")
    if len(text) > MAX_CRITICAL:
        raise s.incorrect(f"A critical finding is at most {MAX_CRITICAL} characters", "critical")
    loaded = s.load(repo, rid)
    r = loaded.reading
    if not (ctx.practitioner and ctx.practitioner == r.radiologist and "radiologist" in ctx.roles
            and r.state in (wf.CLAIMED, wf.READING, wf.REPORTED, wf.ACKNOWLEDGED)):  # fmt: skip
        raise TelemedError(Category.FORBIDDEN, "Only the radiologist reading this study can flag a critical finding")
    n = len(findings(repo, rid)) + 1
    comm = m.critical_finding(rid, n, patient=loaded.patient, radiologist=ctx.practitioner, requester=r.requester,
                              text=text, now=env.clock.now())  # fmt: skip
    repo.update("Communication", comm["id"], comm)
    loaded.notices = [s.Notice("critical", rid, (r.requester,), text=text)]
    return loaded


def acknowledge(repo: Repository, env: s.Env, ctx: AccessContext, rid: str, comm_id: str) -> dict:
    """The requester (or a requesting doctor of the same institution) acknowledges a critical finding."""
    loaded = s.load(repo, rid)
    stored = s.read(repo, "Communication", comm_id)
    if stored is None or not _is_critical(stored.resource) or \
            m.ref_id((stored.resource.get("basedOn") or [{}])[0], "ServiceRequest") != rid:  # fmt: skip
        raise TelemedError(Category.NOT_FOUND, "No such critical finding")
    if stored.resource["status"] == "completed":
        raise TelemedError(Category.CONFLICT, "This critical finding is already acknowledged")
    requester_org = _organization_of(repo, loaded.reading.requester)
    if not (ctx.practitioner == loaded.reading.requester
            or ("requesting-doctor" in ctx.roles and ctx.organization
                and ctx.organization == requester_org)):  # fmt: skip
        raise TelemedError(Category.FORBIDDEN, "Only the requesting side acknowledges a critical finding")
    now = env.clock.now()
    comm = m.with_critical_parts(stored.resource, acknowledgedBy=ctx.practitioner or ctx.user,
                                 acknowledgedAt=m.iso(now))  # fmt: skip
    comm["status"] = "completed"
    comm["received"] = m.iso(now)
    return repo.update("Communication", comm_id, comm, if_match=stored.etag).resource


def _organization_of(repo: Repository, practitioner: str) -> str | None:
    roles = s.find(repo, "PractitionerRole", [("practitioner", f"Practitioner/{practitioner}")], 1)
    return m.ref_id(roles[0].resource.get("organization"), "Organization") if roles else None


def unacknowledged(repo: Repository, practitioner: str | None = None) -> list[dict]:
    """Open critical findings the caller sees (to one requester, if given), oldest first: the banner."""
    params = [("status", "in-progress"), ("priority", "stat")]
    if practitioner:
        params.append(("recipient", f"Practitioner/{practitioner}"))
    found = s.find(repo, "Communication", params, 100)
    return sorted((f.resource for f in found if _is_critical(f.resource)), key=lambda r: r.get("sent", ""))


def escalate_due(repo: Repository, env: s.Env, now: datetime | None = None) -> list[s.Notice]:
    """Raise each unacknowledged critical finding to the level its age calls for (platform's
    repository) and return the alerts to queue."""
    now = now or env.clock.now()
    notices = []
    for comm in unacknowledged(repo):
        flagged = m.parse_dt(comm.get("sent"))
        if flagged is None:
            continue
        level = int(m.critical_parts(comm).get("level") or 0)
        due = env.policy.critical_level(flagged, now)
        if due <= level:
            continue
        rid = m.ref_id((comm.get("basedOn") or [{}])[0], "ServiceRequest") or ""
        try:
            loaded = s.load(repo, rid)
        except TelemedError:
            continue
        repo.update("Communication", comm["id"], m.with_critical_parts(comm, level=due))
        minutes = int((now - flagged).total_seconds() // 60)
        requester = loaded.reading.requester
        notices.append(s.Notice("critical-overdue", rid, (requester,), _organization_of(repo, requester),
                                text=str(minutes)))  # fmt: skip
        if due >= 2:
            notices.append(s.Notice("critical-overdue", rid, (), loaded.centre, text=str(minutes)))
    return notices
