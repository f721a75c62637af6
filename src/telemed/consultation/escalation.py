"""Overdue consultations are escalated to the centre's dispatch desk, once each.

Deadlines live on the Tasks (``restriction.period.end``, set by each transition from the SLA
policy), so nothing here keeps timers: every tick compares the stored deadlines of the open
consultations with the clock. That survives restarts, and with several instances the Task's
version check makes sure only one of them escalates a given consultation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from telemed.consultation import model
from telemed.consultation.queries import OPEN_STATES, find_tasks, states_param
from telemed.consultation.service import Notice, untracked_version
from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError
from telemed.kernel.worker import BackgroundWorker

log = logging.getLogger("telemed.consultation")


def escalate_overdue(repo: Repository, now, notify: Callable[[Repository, list[Notice]], None] | None) -> list[str]:
    """Mark every open consultation past its deadline as overdue (Task extension) and tell the
    centre's triage desk; returns the ids escalated now."""
    escalated = []
    for t in find_tasks(repo, [states_param(OPEN_STATES)], 1000):
        task = t.resource
        deadline = model.parse_dt(((task.get("restriction") or {}).get("period") or {}).get("end"))
        if deadline is None or deadline > now:
            continue
        if any(e.get("url") == model.SLA_URL and e.get("valueDateTime") == model.iso(deadline)
               for e in task.get("extension", [])):  # fmt: skip
            continue  # this deadline was escalated already
        marked = untracked_version(task, now)
        marked["extension"] = [e for e in marked.get("extension", []) if e.get("url") != model.SLA_URL]
        marked["extension"].append({"url": model.SLA_URL, "valueDateTime": model.iso(deadline)})
        try:
            repo.update("Task", task["id"], marked, if_match=t.etag)
        except TelemedError as exc:
            if exc.category in (Category.PRECONDITION_FAILED, Category.CONFLICT):
                continue  # another instance (or a user) got there first
            raise
        sr = repo.read("ServiceRequest", task["id"]).resource
        centre = next((model.ref_id(e.get("valueReference"), "Organization") for e in sr.get("extension", [])
                       if e.get("url", "").endswith("/target-centre")), None)  # fmt: skip
        if notify is not None:
            notify(repo, [Notice("overdue", task["id"], role="triage-officer", organization=centre)])
        escalated.append(task["id"])
        log.warning("consultation %s is overdue (deadline %s): escalated", task["id"], deadline.isoformat())
    return escalated


class SlaWatcher(BackgroundWorker):
    """Runs :func:`escalate_overdue` every ``poll_seconds`` as the platform itself."""

    thread_name = "telemed-sla"

    def __init__(self, engine, clock, repository_for: Callable, notify, poll_seconds: float = 30.0):
        super().__init__(poll_seconds)
        self.engine, self.clock, self.repository_for, self.notify = engine, clock, repository_for, notify

    def tick(self) -> None:
        with unit_of_work(self.engine) as conn:
            escalate_overdue(self.repository_for(conn, AccessContext.system()), self.clock.now(), self.notify)
