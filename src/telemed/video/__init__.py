"""In-browser video for consultations (WebRTC): rooms, join tokens, signalling, TURN, attendance.

A domain package that knows nothing of the consultation workflow: the portal describes a
consultation's room as a :class:`RoomSpec` (participants, scheduled start, whether it is live)
and this package decides who may join and when, relays the signalling, mints TURN credentials
and records attendance on the room's Encounter.
"""

from telemed.video import attendance, backend, janus, join, protocol, room, signalling, turn
from telemed.video.join import Grant, InvalidJoinToken
from telemed.video.room import Refused, RoomSpec, admit
from telemed.video.signalling import Events, Switchboard

__all__ = [
    "Events", "Grant", "InvalidJoinToken", "Refused", "RoomSpec", "Switchboard", "admit", "attendance", "backend",
    "janus", "join", "protocol", "room", "signalling", "turn",
]  # fmt: skip
