"""When a consultation's video room is open, and to whom (pure rules, no I/O).

The room belongs to a scheduled consultation. The caller (the portal, which knows the
consultation) describes it as a :class:`RoomSpec`; this module never reads the consultation
itself, so the video package does not depend on the consultation package.

Opening hours, chosen for the 2018 rules' scheduled sessions: the room opens
:data:`OPENS_BEFORE` (15 minutes) before the scheduled start, so participants can test their
devices, and stays open while the consultation is live (scheduled, in session, opinions being
written); it closes when the consultation is concluded, acknowledged, archived or cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

OPENS_BEFORE = timedelta(minutes=15)

# Refusal codes (the portal shows each as a localized sentence).
NOT_SCHEDULED = "not-scheduled"
NOT_PARTICIPANT = "not-participant"
TOO_EARLY = "too-early"
CLOSED = "closed"


class Refused(Exception):
    """Joining the room is not allowed now, or not to this person; ``code`` says why."""

    def __init__(self, code: str, opens_at: datetime | None = None):
        super().__init__(code)
        self.code = code
        self.opens_at = opens_at


@dataclass(frozen=True)
class RoomSpec:
    consultation: str  # the room's key: rooms of different consultations never share a message
    room: str | None  # the virtual room identifier given when scheduling
    participants: frozenset[str]  # Practitioner ids (requester, active experts, the invited external expert)
    scheduled_start: datetime | None
    live: bool  # the consultation is in a state where the session may take place
    encounter: str | None = None  # Encounter id where attendance is recorded
    group: bool = False  # an MDT: three or more participants (the SFU backend when one is configured)

    @property
    def opens_at(self) -> datetime | None:
        return self.scheduled_start - OPENS_BEFORE if self.scheduled_start else None


def admit(spec: RoomSpec, practitioner: str | None, now: datetime) -> None:
    """Raise :class:`Refused` unless ``practitioner`` may join the room at ``now``."""
    if not spec.room or spec.scheduled_start is None:
        raise Refused(NOT_SCHEDULED)
    if not practitioner or practitioner not in spec.participants:
        raise Refused(NOT_PARTICIPANT)
    if not spec.live:
        raise Refused(CLOSED)
    if now < spec.opens_at:
        raise Refused(TOO_EARLY, spec.opens_at)
