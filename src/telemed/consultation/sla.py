"""Deadlines (SLA) per consultation kind, and which deadline applies in which state.

The defaults follow what provincial centres publish for their service: an urgent consultation
(急会诊) is accepted within 10 minutes and answered within an hour; a routine one is accepted
within a working day and answered within 48 hours. They are configurable
(``TELEMED_CONSULTATION_SLA``, e.g. ``urgent:accept=10m,opinion=60m;routine:opinion=48h``).

The deadline is stored on the Task (``restriction.period.end``), so timers survive restarts: the
watcher (``telemed.consultation.escalation``) compares stored deadlines with the clock, it keeps
no timers of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from telemed.consultation import workflow as wf

_UNITS = {"m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class SlaPolicy:
    accept: dict[str, timedelta] = field(
        default_factory=lambda: {
            wf.URGENT: timedelta(minutes=10),
            wf.ROUTINE: timedelta(hours=8),
            wf.MDT: timedelta(hours=8),
        }  # fmt: skip
    )
    opinion: dict[str, timedelta] = field(
        default_factory=lambda: {
            wf.URGENT: timedelta(minutes=60),
            wf.ROUTINE: timedelta(hours=48),
            wf.MDT: timedelta(hours=72),
        }  # fmt: skip
    )

    @classmethod
    def parse(cls, text: str | None) -> SlaPolicy:
        """``kind:phase=NNu,phase=NNu;kind:...`` (u = m, h or d); unknown kinds or phases are errors."""
        policy = cls()
        for part in filter(None, (p.strip() for p in (text or "").split(";"))):
            kind, _, rules = part.partition(":")
            if kind not in wf.KINDS:
                raise ValueError(f"unknown consultation kind {kind!r} in the SLA setting")
            for rule in filter(None, (r.strip() for r in rules.split(","))):
                phase, _, value = rule.partition("=")
                if phase not in ("accept", "opinion") or not value[:-1].isdigit() or value[-1] not in _UNITS:
                    raise ValueError(f"bad SLA rule {rule!r} (expected accept=10m or opinion=48h)")
                getattr(policy, phase)[kind] = timedelta(seconds=int(value[:-1]) * _UNITS[value[-1]])
        return policy

    def deadline(self, c: wf.Consultation, submitted_at: datetime | None) -> datetime | None:
        """The deadline of the consultation's current phase, counted from its (first) submission."""
        if submitted_at is None:
            return None
        if c.state == wf.SUBMITTED:
            return submitted_at + self.accept[c.kind]
        if c.state in (wf.ACCEPTED, wf.ASSIGNED, wf.SCHEDULED, wf.IN_SESSION, wf.OPINION_DRAFTED):
            return submitted_at + self.opinion[c.kind]
        return None  # waiting for the requester, or done: no clock runs against the centre
