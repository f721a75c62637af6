"""A remote imaging reading (远程影像诊断) as a pure state machine (no I/O, no clock, no database).

A county hospital asks a reading centre to read one study; the request may come before the images
(the study is still being sent) or after; whichever comes second puts it on the worklist of the
centre's radiologists. A radiologist claims it (one wins), writes the report from a template, signs
it; the requester acknowledges. A critical finding (危急值) is a separate, audited alert with its
own acknowledgement (:mod:`telemed.imaging.reading.critical`)::

    awaiting-images -> requested                 (the study arrived)
    requested -> claimed -> reading -> reported -> acknowledged
    claimed/reading -> requested                 (released back to the worklist)
    reported/acknowledged -> reported            (amended, with a reason: a new signed version)
    awaiting-images/requested/claimed/reading -> cancelled (with a reason)

``apply(reading, event)`` returns the new reading or raises :class:`IllegalTransition`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

AWAITING = "awaiting-images"
REQUESTED = "requested"
CLAIMED = "claimed"
READING = "reading"
REPORTED = "reported"
ACKNOWLEDGED = "acknowledged"
CANCELLED = "cancelled"
STATES = (AWAITING, REQUESTED, CLAIMED, READING, REPORTED, ACKNOWLEDGED, CANCELLED)
OPEN = frozenset({AWAITING, REQUESTED, CLAIMED, READING})
WORKLIST = frozenset({REQUESTED, CLAIMED, READING})

ROUTINE, URGENT, STAT = "routine", "urgent", "stat"
PRIORITIES = (STAT, URGENT, ROUTINE)  # most pressing first

EVENT_ROLES: dict[str, frozenset[str]] = {
    "arrive": frozenset({"system"}),
    "claim": frozenset({"radiologist"}),
    "release": frozenset({"holder"}),
    "draft": frozenset({"holder"}),
    "sign": frozenset({"holder"}),
    "acknowledge": frozenset({"requester"}),
    "amend": frozenset({"holder", "signer"}),
    "cancel": frozenset({"requester", "platform-admin"}),
}
FROM_STATES: dict[str, frozenset[str]] = {
    "arrive": frozenset({AWAITING}),
    "claim": frozenset({REQUESTED}),
    "release": frozenset({CLAIMED, READING}),
    "draft": frozenset({CLAIMED, READING}),
    "sign": frozenset({READING}),
    "acknowledge": frozenset({REPORTED}),
    "amend": frozenset({REPORTED, ACKNOWLEDGED}),
    "cancel": OPEN,
}


class IllegalTransition(Exception):
    def __init__(self, reason: str, *, code: str = "illegal"):
        super().__init__(reason)
        self.reason = reason
        self.code = code  # "illegal" (409) or "forbidden" (403)


@dataclass(frozen=True)
class Actor:
    user: str
    roles: frozenset[str] = frozenset()
    practitioner: str | None = None


SYSTEM = Actor("system", frozenset({"system"}))


@dataclass(frozen=True)
class Reading:
    id: str
    priority: str
    requester: str  # Practitioner id of the requesting doctor
    state: str = AWAITING
    radiologist: str | None = None  # the one holding the reading, then its signer
    versions: int = 0  # signed versions of the report


@dataclass(frozen=True)
class Event:
    name: str
    actor: Actor
    reason: str | None = None


def _relations(r: Reading, actor: Actor) -> frozenset[str]:
    rel = set(actor.roles)
    if actor.practitioner and actor.practitioner == r.requester:
        rel.add("requester")
    if actor.practitioner and actor.practitioner == r.radiologist and "radiologist" in actor.roles:
        rel.add("holder" if r.state in (CLAIMED, READING) else "signer")
    return frozenset(rel)


def may(r: Reading, event: str, actor: Actor) -> bool:
    """Whether ``actor`` may send ``event`` now (for showing buttons)."""
    return (event in EVENT_ROLES and r.state in FROM_STATES[event]
            and bool(EVENT_ROLES[event] & _relations(r, actor)))  # fmt: skip


def apply(r: Reading, ev: Event) -> Reading:
    allowed = EVENT_ROLES.get(ev.name)
    if allowed is None:
        raise IllegalTransition(f"Unknown event {ev.name!r}")
    if not allowed & _relations(r, ev.actor):
        raise IllegalTransition(f"{ev.actor.user} may not {ev.name} this reading", code="forbidden")
    if r.state not in FROM_STATES[ev.name]:
        raise IllegalTransition(f"Cannot {ev.name} a reading that is {r.state}")
    n = ev.name
    if n == "arrive":
        return replace(r, state=REQUESTED)
    if n == "claim":
        if ev.actor.practitioner == r.requester:
            raise IllegalTransition("The requesting doctor cannot read their own request", code="forbidden")
        return replace(r, state=CLAIMED, radiologist=ev.actor.practitioner)
    if n == "release":
        return replace(r, state=REQUESTED, radiologist=None)
    if n == "draft":
        return replace(r, state=READING)
    if n == "sign":
        return replace(r, state=REPORTED, versions=1)
    if n == "acknowledge":
        return replace(r, state=ACKNOWLEDGED)
    if n == "amend":
        if not ev.reason:
            raise IllegalTransition("An amendment needs a reason")
        return replace(r, state=REPORTED, versions=r.versions + 1)
    if n == "cancel":
        if not ev.reason:
            raise IllegalTransition("A reason is required to cancel a reading")
        return replace(r, state=CANCELLED)
    raise IllegalTransition(f"Unknown event {n!r}")  # pragma: no cover


@dataclass(frozen=True)
class Policy:
    """Turnaround per priority, counted from the moment the reading is on the worklist (the later of
    the request and the images), and how long a critical finding may stay unacknowledged before
    it is escalated (then again every ``critical_repeat``)."""

    stat: timedelta = timedelta(hours=1)
    urgent: timedelta = timedelta(hours=4)
    routine: timedelta = timedelta(hours=48)
    critical_ack: timedelta = timedelta(minutes=15)
    critical_repeat: timedelta = timedelta(minutes=15)

    @classmethod
    def from_env(cls, environ=os.environ) -> Policy:
        """``TELEMED_READING_STAT_MINUTES`` (60), ``TELEMED_READING_URGENT_HOURS`` (4),
        ``TELEMED_READING_ROUTINE_HOURS`` (48), ``TELEMED_CRITICAL_ACK_MINUTES`` (15),
        ``TELEMED_CRITICAL_REPEAT_MINUTES`` (15)."""

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
            stat=timedelta(minutes=num("TELEMED_READING_STAT_MINUTES", 60)),
            urgent=timedelta(hours=num("TELEMED_READING_URGENT_HOURS", 4)),
            routine=timedelta(hours=num("TELEMED_READING_ROUTINE_HOURS", 48)),
            critical_ack=timedelta(minutes=num("TELEMED_CRITICAL_ACK_MINUTES", 15)),
            critical_repeat=timedelta(minutes=num("TELEMED_CRITICAL_REPEAT_MINUTES", 15)),
        )

    def deadline(self, priority: str, ready: datetime) -> datetime:
        return ready + {STAT: self.stat, URGENT: self.urgent}.get(priority, self.routine)

    def critical_level(self, flagged: datetime, now: datetime) -> int:
        """The escalation level an unacknowledged critical finding should be at now (0: none)."""
        if now < flagged + self.critical_ack:
            return 0
        return 1 + int((now - flagged - self.critical_ack) / self.critical_repeat)
