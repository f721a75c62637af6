"""Recording a call, only with everyone's consent (pure state, no I/O).

A participant asks (``record`` / ``request``, which is their own consent); every other
participant in the room at that moment is asked on their page and answers ``consent`` or
``decline``. Recording starts only when all of them consented, and every page shows that it is on.
One ``decline`` ends the request. Someone who joins while a request is open or the recording is on
has not consented, so it stops (they may ask again); the requester's page records and uploads,
and the server accepts the upload only for a recording that reached ``on`` (:meth:`Recordings.
accepted`). Each answer is recorded by the platform (a FHIR ``Consent`` per participant).

With several app instances, every instance keeps the same state: the instance that takes an action
applies it and sends it to the others (``apply``), which apply it in turn, and each applies the
joins and leaves of the others' pages; so an answer reaches its request, and the upload is accepted,
whichever instance a page or the upload reaches.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

ASKING, ON, OFF = "asking", "on", "off"


@dataclass
class Recording:
    id: str
    room: str
    recorder: str  # peer id of the page that records
    recorder_user: str
    required: set[str]  # peer ids whose consent is needed
    consented: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)  # peer id -> user, of those who consented
    state: str = ASKING

    def public(self) -> dict:
        return {"type": "record", "id": self.id, "state": self.state, "recorder": self.recorder,
                "consented": sorted(self.consented), "required": sorted(self.required)}  # fmt: skip


class Recordings:
    """The open recording request of each room, and the recordings that were allowed."""

    def __init__(self) -> None:
        self.by_room: dict[str, Recording] = {}
        self.allowed: dict[str, Recording] = {}  # recording id -> the recording (reached ``on``)

    def request(self, room: str, peer: str, user: str, present: set[str], rec_id: str | None = None) -> Recording:
        current = self.by_room.get(room)
        if current is not None and current.state in (ASKING, ON):  # asking too: their answer is yes
            return self.consent(room, peer, user) or current
        rec = Recording(rec_id or secrets.token_hex(8), room, peer, user, set(present) | {peer})
        self.by_room[room] = rec
        self.consent(room, peer, user)
        return rec

    def consent(self, room: str, peer: str, user: str) -> Recording | None:
        rec = self.by_room.get(room)
        if rec is None or rec.state != ASKING or peer not in rec.required:
            return None
        rec.consented.add(peer)
        rec.users[peer] = user
        self._check(rec)
        return rec

    def decline(self, room: str, peer: str) -> Recording | None:
        rec = self.by_room.get(room)
        if rec is None or rec.state != ASKING or peer not in rec.required:
            return None
        rec.state = OFF
        return rec

    def stop(self, room: str) -> Recording | None:
        rec = self.by_room.get(room)
        if rec is None or rec.state == OFF:
            return None
        rec.state = OFF
        return rec

    def joined(self, room: str, peer: str) -> Recording | None:
        """A newcomer has not consented: an open request or a running recording stops."""
        rec = self.by_room.get(room)
        if rec is None or rec.state == OFF or peer in rec.required:
            return None
        rec.state = OFF
        return rec

    def left(self, room: str, peer: str) -> Recording | None:
        rec = self.by_room.get(room)
        if rec is None or rec.state == OFF:
            return None
        if peer == rec.recorder:
            rec.state = OFF
            return rec
        if rec.state == ASKING:
            rec.required.discard(peer)
            self._check(rec)
            return rec
        return None

    def _check(self, rec: Recording) -> None:
        if rec.state == ASKING and rec.required <= rec.consented:
            rec.state = ON
            self.allowed[rec.id] = rec

    def apply(self, action: dict) -> Recording | None:
        """An action another instance took (:meth:`action_of`), applied here the same way."""
        room, peer, user, kind = action["room"], action["peer"], action.get("user", ""), action["action"]
        if kind == "request":
            return self.request(room, peer, user, set(action.get("present", [])), rec_id=action.get("id"))
        if kind == "consent":
            return self.consent(room, peer, user)
        if kind == "decline":
            return self.decline(room, peer)
        if kind == "stop":
            return self.stop(room)
        if kind == "joined":
            return self.joined(room, peer)
        if kind == "left":
            return self.left(room, peer)
        return None

    @staticmethod
    def action_of(room: str, kind: str, peer: str, user: str = "", rec: Recording | None = None) -> dict:
        out = {"room": room, "action": kind, "peer": peer, "user": user}
        if kind == "request" and rec is not None:
            out.update(id=rec.id, present=sorted(rec.required))
        return out

    def accepted(self, recording_id: str, room: str, user: str) -> Recording | None:
        """The recording, if it was allowed in ``room`` and ``user`` is its recorder."""
        rec = self.allowed.get(recording_id)
        if rec is None or rec.room != room or rec.recorder_user != user:
            return None
        return rec
