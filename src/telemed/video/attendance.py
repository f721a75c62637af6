"""Who was in the call and when: ``Encounter.participant.period`` and the audit trail.

R4 Encounter.participant (individual + period) records each joining: an entry typed
``PART`` (participation, v3-ParticipationType) with the text ``video`` gets ``period.start`` at
the join and ``period.end`` at the leave; joining again adds a new entry. The write goes
through the platform's repository (so it is versioned and audited like any update), and an
AuditEvent names the user who joined or left; refused attempts are audited as failures.
"""

from __future__ import annotations

from datetime import datetime

from telemed.fhir.store import audit
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.clock import fhir_instant

PARTICIPATION = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PART",
                             "display": "Participation"}], "text": "video"}  # fmt: skip


def _is_video(p: dict, practitioner: str) -> bool:
    return (p.get("individual") or {}).get("reference") == f"Practitioner/{practitioner}" and any(
        t.get("text") == "video" for t in p.get("type", [])
    )


def joined(repo: Repository, encounter: str, practitioner: str, at: datetime) -> None:
    stored = repo.read("Encounter", encounter)
    enc = dict(stored.resource)
    entry = {"type": [PARTICIPATION], "individual": {"reference": f"Practitioner/{practitioner}"},
             "period": {"start": fhir_instant(at)}}  # fmt: skip
    enc["participant"] = [*enc.get("participant", []), entry]
    repo.update("Encounter", encounter, enc, if_match=stored.etag)


def left(repo: Repository, encounter: str, practitioner: str, at: datetime) -> None:
    stored = repo.read("Encounter", encounter)
    enc = dict(stored.resource)
    participants = [dict(p) for p in enc.get("participant", [])]
    for p in reversed(participants):  # the latest open stay of this practitioner
        if _is_video(p, practitioner) and "end" not in (p.get("period") or {}):
            p["period"] = {**p["period"], "end": fhir_instant(at)}
            break
    else:
        return
    enc["participant"] = participants
    repo.update("Encounter", encounter, enc, if_match=stored.etag)


def audit_event(conn, ctx: AccessContext, clock, consultation: str, what: str, ok: bool, patient: str | None = None):
    """An AuditEvent for a join, a leave or a refusal (``what`` says which, and why)."""
    rec = audit.AuditRecord("operation-video", "0" if ok else "4", f"Encounter/{consultation}", None, patient,
                            description=f"video room: {what}")  # fmt: skip
    audit.record(conn, ctx, rec, clock)
