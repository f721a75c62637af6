"""Where the media goes: the ``VideoBackend`` interface.

A 1:1 call is peer-to-peer between the browsers (:class:`MeshBackend`): the server only relays
signalling, and media flows directly or through TURN. An SFU for MDT sessions (Janus VideoRoom)
plugs in behind the same interface: the page asks the backend how to connect (``client_config``)
and the backend sets up and tears down its side of a room.
"""

from __future__ import annotations

from typing import Protocol

from telemed.video.room import RoomSpec

MESH_LIMIT = 4  # a browser sending its camera to more than 3 others saturates a township uplink


class VideoBackend(Protocol):
    name: str

    def client_config(self, spec: RoomSpec) -> dict:
        """What the call page needs to connect (its ``mode`` and any endpoint)."""

    def peer_limit(self, spec: RoomSpec) -> int: ...


class MeshBackend:
    """Browsers connect to each other (full mesh); fine for 1:1 and small rooms."""

    name = "mesh"

    def client_config(self, spec: RoomSpec) -> dict:
        return {"mode": "mesh"}

    def peer_limit(self, spec: RoomSpec) -> int:
        return MESH_LIMIT
