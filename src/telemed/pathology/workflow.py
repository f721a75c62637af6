"""A remote pathology consultation (远程病理会诊) as a pure state machine (no I/O, no clock, no database).

A grassroots hospital asks the pathology centre to read a case's slides; the centre assigns a
pathologist (or one of the centre's pathologists claims the case from the pool), who reads the
slides and signs a structured report; the requester acknowledges it::

    requested -> assigned -> reading -> reported -> acknowledged
    assigned/reading -> requested           (released back to the pool)
    reported/acknowledged -> reported       (amended, with a reason: a new signed version)
    requested/assigned/reading -> cancelled (with a reason)

A frozen section (术中冰冻) is the same case with a deadline of about 30 minutes from the request:
its pathologist may send a preliminary result (初步结果) to the surgeon's side before the signed
report, and a case late against its deadline is escalated (not a state: its level goes up and a
wider circle is alerted) until a result has been sent.

``apply(case, event)`` returns the new case or raises :class:`IllegalTransition`; who may send which
event is part of the machine (``EVENT_ROLES``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

REQUESTED = "requested"
ASSIGNED = "assigned"
READING = "reading"
REPORTED = "reported"
ACKNOWLEDGED = "acknowledged"
CANCELLED = "cancelled"
STATES = (REQUESTED, ASSIGNED, READING, REPORTED, ACKNOWLEDGED, CANCELLED)
OPEN = frozenset({REQUESTED, ASSIGNED, READING})
TERMINAL = frozenset({ACKNOWLEDGED, CANCELLED})

ROUTINE = "routine"
FROZEN = "frozen"
KINDS = (FROZEN, ROUTINE)

# Roles (telemed.identity.policy) allowed to send each event; "requester" and "pathologist" (the
# one holding the case) are relations to this case.
EVENT_ROLES: dict[str, frozenset[str]] = {
    "assign": frozenset({"triage-officer", "platform-admin"}),
    "claim": frozenset({"pathologist"}),
    "release": frozenset({"holder"}),
    "draft": frozenset({"holder"}),
    "preliminary": frozenset({"holder"}),
    "sign": frozenset({"holder"}),
    "acknowledge": frozenset({"requester"}),
    "amend": frozenset({"holder"}),
    "cancel": frozenset({"requester", "triage-officer", "platform-admin"}),
    "escalate": frozenset({"system"}),
}
FROM_STATES: dict[str, frozenset[str]] = {
    "assign": frozenset({REQUESTED, ASSIGNED}),
    "claim": frozenset({REQUESTED}),
    "release": frozenset({ASSIGNED, READING}),
    "draft": frozenset({ASSIGNED, READING}),
    "preliminary": frozenset({ASSIGNED, READING}),
    "sign": frozenset({READING}),
    "acknowledge": frozenset({REPORTED}),
    "amend": frozenset({REPORTED, ACKNOWLEDGED}),
    "cancel": OPEN,
    "escalate": OPEN,
}


class IllegalTransition(Exception):
    def __init__(self, reason: str, *, code: str = "illegal"):
        super().__init__(reason)
        self.reason = reason
        self.code = code  # "illegal" (409), "forbidden" (403) or "incomplete" (422: the event lacks its data)


@dataclass(frozen=True)
class Actor:
    user: str
    roles: frozenset[str] = frozenset()
    practitioner: str | None = None


SYSTEM = Actor("system", frozenset({"system"}))


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    requester: str  # Practitioner id of the requesting doctor
    state: str = REQUESTED
    pathologist: str | None = None  # Practitioner id of the one holding (or who signed) the case
    preliminary: int = 0  # how many preliminary results were sent (frozen sections)
    versions: int = 0  # signed versions of the report (amendments count up from 2)
    escalation: int = 0


@dataclass(frozen=True)
class Event:
    name: str
    actor: Actor
    reason: str | None = None
    pathologist: str | None = None  # assign


def _relations(c: Case, actor: Actor) -> frozenset[str]:
    rel = set(actor.roles)
    if actor.practitioner and actor.practitioner == c.requester:
        rel.add("requester")
    if actor.practitioner and actor.practitioner == c.pathologist and "pathologist" in actor.roles:
        rel.add("holder")
    return frozenset(rel)


def may(c: Case, event: str, actor: Actor) -> bool:
    """Whether ``actor`` may send ``event`` now (for showing buttons)."""
    if event not in EVENT_ROLES or c.state not in FROM_STATES[event]:
        return False
    if not EVENT_ROLES[event] & _relations(c, actor):
        return False
    return not (event == "preliminary" and c.kind != FROZEN)


def apply(c: Case, ev: Event) -> Case:
    allowed = EVENT_ROLES.get(ev.name)
    if allowed is None:
        raise IllegalTransition(f"Unknown event {ev.name!r}")
    if not allowed & _relations(c, ev.actor):
        raise IllegalTransition(f"{ev.actor.user} may not {ev.name} this case", code="forbidden")
    if c.state not in FROM_STATES[ev.name]:
        raise IllegalTransition(f"Cannot {ev.name} a case that is {c.state}")
    n = ev.name
    if n == "assign":
        if not ev.pathologist:
            raise IllegalTransition("Choose a pathologist", code="incomplete")
        if ev.pathologist == c.requester:
            raise IllegalTransition("The requesting doctor cannot read their own case")
        return replace(c, state=ASSIGNED, pathologist=ev.pathologist)
    if n == "claim":
        return replace(c, state=ASSIGNED, pathologist=ev.actor.practitioner)
    if n == "release":
        return replace(c, state=REQUESTED, pathologist=None)
    if n == "draft":
        return replace(c, state=READING)
    if n == "preliminary":
        if c.kind != FROZEN:
            raise IllegalTransition("Only a frozen section has a preliminary result")
        if not ev.reason:
            raise IllegalTransition("Write the preliminary result", code="incomplete")
        return replace(c, preliminary=c.preliminary + 1)
    if n == "sign":
        return replace(c, state=REPORTED, versions=1)
    if n == "acknowledge":
        return replace(c, state=ACKNOWLEDGED)
    if n == "amend":
        if not ev.reason:
            raise IllegalTransition("An amendment needs a reason", code="incomplete")
        return replace(c, state=REPORTED, versions=c.versions + 1)
    if n == "cancel":
        if not ev.reason:
            raise IllegalTransition("A reason is required to cancel a case", code="incomplete")
        return replace(c, state=CANCELLED)
    if n == "escalate":
        return replace(c, escalation=c.escalation + 1)
    raise IllegalTransition(f"Unknown event {n!r}")  # pragma: no cover


# Deadlines and escalation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How long a case may take: a frozen section ``frozen`` from its request (the surgeon waits in
    theatre), a routine case ``routine``; a frozen section is escalated ``warn_before`` its deadline
    (level 1: every pathologist of the centre), at the deadline (level 2: and the centre's duty
    line and the requester) and every ``repeat`` after that."""

    frozen: timedelta = timedelta(minutes=30)
    routine: timedelta = timedelta(hours=72)
    warn_before: timedelta = timedelta(minutes=10)
    repeat: timedelta = timedelta(minutes=10)

    @classmethod
    def from_env(cls, environ=os.environ) -> Policy:
        """``TELEMED_PATHOLOGY_FROZEN_MINUTES`` (30), ``TELEMED_PATHOLOGY_ROUTINE_HOURS`` (72),
        ``TELEMED_PATHOLOGY_WARN_MINUTES`` (10), ``TELEMED_PATHOLOGY_REPEAT_MINUTES`` (10)."""

        def num(name: str, default: float) -> float:
            raw = environ.get(name)
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name} is a number, not {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{name} must be positive")
            return value

        return cls(
            frozen=timedelta(minutes=num("TELEMED_PATHOLOGY_FROZEN_MINUTES", 30)),
            routine=timedelta(hours=num("TELEMED_PATHOLOGY_ROUTINE_HOURS", 72)),
            warn_before=timedelta(minutes=num("TELEMED_PATHOLOGY_WARN_MINUTES", 10)),
            repeat=timedelta(minutes=num("TELEMED_PATHOLOGY_REPEAT_MINUTES", 10)),
        )

    def deadline(self, kind: str, requested: datetime) -> datetime:
        return requested + (self.frozen if kind == FROZEN else self.routine)

    def answered(self, c: Case) -> bool:
        """The surgeon's side has an answer: a preliminary result (frozen) or the signed report."""
        return c.state in (REPORTED, ACKNOWLEDGED, CANCELLED) or (c.kind == FROZEN and c.preliminary > 0)

    def escalation_level(self, c: Case, requested: datetime, now: datetime) -> int:
        """The level a case should be at now (0: none); only an open frozen section escalates."""
        if c.kind != FROZEN or self.answered(c):
            return 0
        due = self.deadline(c.kind, requested)
        if now < due - self.warn_before:
            return 0
        if now < due:
            return 1
        return 2 + int((now - due) / self.repeat)
