"""Janus as the SFU of MDT rooms: the VideoRoom plugin over Janus's HTTP API.

Janus (Debian package ``janus``) forwards each participant's streams to the others, so a
browser sends its camera once however many people are in the room. Rooms are created per
consultation with a per-publisher bitrate cap (REMB), so a participant on a weak uplink is asked
for less and does not drag the others down; VP8 allows simulcast from the browser.

Janus API: https://janus.conf.meetecho.com/docs/rest.html (sessions, handles, long-poll events)
and the VideoRoom plugin's requests (``create``, ``destroy``, ``join`` as publisher or
subscriber, ``configure``, ``start``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import httpx

from telemed.video.room import RoomSpec

PLUGIN = "janus.plugin.videoroom"


class JanusError(Exception):
    pass


def room_number(consultation: str) -> int:
    """The VideoRoom id of a consultation (Janus wants an integer); stable across instances."""
    return int.from_bytes(hashlib.sha256(consultation.encode()).digest()[:6], "big")


class Janus:
    """A small client of Janus's HTTP API: one session, handles attached to plugins, events."""

    def __init__(self, url: str, timeout: float = 10.0, api_secret: str | None = None):
        self.url = url.rstrip("/")
        self.api_secret = api_secret
        self.http = httpx.Client(timeout=timeout)
        self.session: int | None = None
        self._pending: list[dict] = []

    def _post(self, path: str, body: dict) -> dict:
        body = {**body, "transaction": secrets.token_hex(8)}
        if self.api_secret:
            body["apisecret"] = self.api_secret
        out = self.http.post(self.url + path, json=body).json()
        if out.get("janus") == "error":
            raise JanusError(out["error"].get("reason", "Janus error"))
        return out

    def connect(self) -> Janus:
        self.session = self._post("", {"janus": "create"})["data"]["id"]
        return self

    def attach(self, plugin: str = PLUGIN) -> int:
        return self._post(f"/{self.session}", {"janus": "attach", "plugin": plugin})["data"]["id"]

    def request(self, handle: int, body: dict) -> dict:
        """A synchronous plugin request (create, destroy, exists, listparticipants)."""
        out = self._post(f"/{self.session}/{handle}", {"janus": "message", "body": body})
        data = (out.get("plugindata") or {}).get("data") or {}
        if "error" in data:
            raise JanusError(data["error"])
        return data

    def send(self, handle: int, body: dict, jsep: dict | None = None) -> None:
        """An asynchronous plugin request (join, configure, start): the answer comes as an event."""
        msg = {"janus": "message", "body": body}
        if jsep:
            msg["jsep"] = jsep
        self._post(f"/{self.session}/{handle}", msg)

    def event(self, handle: int, timeout: float = 10.0, want=lambda e: True) -> dict:
        """The next plugin event of ``handle`` that ``want`` accepts (long poll); events for other
        handles of the session are kept for their own callers."""
        for e in self._pending:
            if e.get("sender") == handle and want(e):
                self._pending.remove(e)
                return e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            params = {"maxev": 1, **({"apisecret": self.api_secret} if self.api_secret else {})}
            e = self.http.get(f"{self.url}/{self.session}", params=params, timeout=timeout + 35).json()
            if e.get("janus") in ("keepalive", "ack"):
                continue
            if e.get("sender") == handle and e.get("janus") == "event" and want(e):
                return e
            self._pending.append(e)
        raise JanusError("no event from Janus in time")

    def close(self) -> None:
        if self.session is not None:
            try:
                self._post(f"/{self.session}", {"janus": "destroy"})
            except (httpx.HTTPError, JanusError):
                pass
        self.http.close()


def room_pin(key: str, consultation: str) -> str:
    """The Janus room's pin (and admin secret): derived from the platform's key, so every instance
    knows it and no browser ever does."""
    return hmac.new(key.encode(), b"janus-room:" + consultation.encode(), hashlib.sha256).hexdigest()[:24]


class JanusBackend:
    """MDT rooms on Janus; the page publishes once and subscribes to each other participant, all
    through the platform's signalling socket (:mod:`telemed.video.sfu`): the page is told only
    ``mode: sfu``, never Janus's address, the room number or its pin."""

    name = "janus"

    def __init__(self, admin_url: str, key: str = "", bitrate: int = 512_000, max_publishers: int = 12,
                 api_secret: str | None = None):  # fmt: skip
        self.admin_url = admin_url
        self.key = key
        self.bitrate = bitrate
        self.max_publishers = max_publishers
        self.api_secret = api_secret

    def pin(self, spec_or_consultation) -> str:
        cid = getattr(spec_or_consultation, "consultation", spec_or_consultation)
        return room_pin(self.key, cid)

    def ensure_room(self, spec: RoomSpec) -> int:
        """Create the consultation's VideoRoom unless it exists; returns its id."""
        number = room_number(spec.consultation)
        janus = Janus(self.admin_url, api_secret=self.api_secret).connect()
        try:
            handle = janus.attach()
            if not janus.request(handle, {"request": "exists", "room": number}).get("exists"):
                janus.request(handle, {
                    "request": "create", "room": number, "description": spec.room or spec.consultation,
                    "publishers": self.max_publishers, "bitrate": self.bitrate, "bitrate_cap": True,
                    "fir_freq": 10, "videocodec": "vp8", "audiocodec": "opus", "permanent": False,
                    "pin": self.pin(spec), "secret": self.pin(spec),
                })  # fmt: skip
        finally:
            janus.close()
        return number

    def destroy_room(self, spec: RoomSpec) -> None:
        janus = Janus(self.admin_url, api_secret=self.api_secret).connect()
        try:
            handle = janus.attach()
            try:
                janus.request(handle, {"request": "destroy", "room": room_number(spec.consultation),
                                       "secret": self.pin(spec)})
            except JanusError:
                pass  # already gone
        finally:
            janus.close()

    def client_config(self, spec: RoomSpec) -> dict:
        self.ensure_room(spec)
        return {"mode": "sfu"}

    def peer_limit(self, spec: RoomSpec) -> int:
        return self.max_publishers
