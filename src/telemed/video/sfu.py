"""One participant's side of an MDT room on Janus, driven by the server for the page.

The browser never talks to Janus: it sends ``sfu-publish`` (its offer), ``sfu-subscribe`` (a
feed) and ``sfu-start`` (its answer to a feed's offer) over the room's signalling socket, and the
server makes the matching VideoRoom requests in the consultation's Janus room, with the room's
pin, which only the server knows. So a participant can only ever publish to and subscribe in the
room of the consultation their join token names; Janus's HTTP API stays on a private address and
only its media ports face the browsers.

Janus answers asynchronously: one long-poll task per participant reads the session's events and
turns them into messages for the page: ``sfu-answer`` (to its publish offer), ``sfu-offer`` (a
feed to receive), ``sfu-publishers`` (feeds in the room: Janus feed id and our peer id, which is
the publisher's display), ``sfu-unpublished`` (a feed that went away) and ``error``.
Descriptions are exchanged complete (no trickle): the page waits for its ICE gathering and Janus
puts its candidates in its SDP.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import httpx

from telemed.video.janus import PLUGIN, JanusError

log = logging.getLogger("telemed.video")


class SfuParticipant:
    def __init__(self, url: str, room: int, pin: str, peer: str, deliver: Callable[[dict], Awaitable[None]],
                 api_secret: str | None = None, bitrate: int = 512_000):  # fmt: skip
        self.url = url.rstrip("/")
        self.room, self.pin, self.peer = room, pin, peer
        self.deliver = deliver
        self.api_secret = api_secret
        self.bitrate = bitrate
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=45.0))
        self.session: int | None = None
        self.publisher: int | None = None  # handle
        self.feed: int | None = None  # our publisher id in the room
        self.subscriptions: dict[int, int] = {}  # handle -> feed
        self._poller: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    async def _post(self, path: str, body: dict) -> dict:
        body = {**body, "transaction": secrets.token_hex(8)}
        if self.api_secret:
            body["apisecret"] = self.api_secret
        out = (await self.http.post(self.url + path, json=body)).json()
        if out.get("janus") == "error":
            raise JanusError(out["error"].get("reason", "Janus error"))
        return out

    async def _open(self) -> None:
        if self.session is None:
            self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
            self._poller = asyncio.ensure_future(self._poll())

    async def _attach(self) -> int:
        return (await self._post(f"/{self.session}", {"janus": "attach", "plugin": PLUGIN}))["data"]["id"]

    async def _message(self, handle: int, body: dict, jsep: dict | None = None) -> None:
        msg = {"janus": "message", "body": body}
        if jsep:
            msg["jsep"] = jsep
        await self._post(f"/{self.session}/{handle}", msg)

    # -- what the page asks ----------------------------------------------------------------------------
    async def publish(self, sdp: str) -> None:
        """Join the room as a publisher with the page's offer (or renegotiate); Janus's answer comes
        as ``sfu-answer``. Every publisher is capped at the room's bitrate (REMB)."""
        async with self._lock:
            await self._open()
            jsep = {"type": "offer", "sdp": sdp}
            if self.publisher is None:
                self.publisher = await self._attach()
                body = {"request": "joinandconfigure", "ptype": "publisher", "room": self.room, "pin": self.pin,
                        "display": self.peer, "bitrate": self.bitrate}  # fmt: skip
            else:
                body = {"request": "configure", "bitrate": self.bitrate}
            await self._message(self.publisher, body, jsep)

    async def watch(self) -> None:
        """Join the room as a publisher that sends nothing (yet): Janus then lists the room's feeds
        to subscribe to, so a page without camera or microphone still sees and hears the others.
        A later ``publish`` on the same handle starts sending."""
        async with self._lock:
            await self._open()
            if self.publisher is None:
                self.publisher = await self._attach()
                await self._message(self.publisher, {"request": "join", "ptype": "publisher", "room": self.room,
                                                     "pin": self.pin, "display": self.peer})  # fmt: skip

    async def subscribe(self, feed: int) -> None:
        """Receive ``feed`` (of this room only: the request names our room and its pin)."""
        async with self._lock:
            await self._open()
            if feed == self.feed or feed in self.subscriptions.values():
                return
            handle = await self._attach()
            self.subscriptions[handle] = feed
            await self._message(handle, {"request": "join", "ptype": "subscriber", "room": self.room,
                                         "pin": self.pin, "streams": [{"feed": feed}]})  # fmt: skip

    async def start(self, feed: int, sdp: str) -> None:
        """The page's answer to a feed's offer."""
        handle = next((h for h, f in self.subscriptions.items() if f == feed), None)
        if handle is None:
            raise JanusError("not subscribed to this feed")
        await self._message(handle, {"request": "start"}, {"type": "answer", "sdp": sdp})

    async def restart(self, feed: int) -> None:
        """Ask Janus to offer ``feed`` again with new ICE credentials (the page's network changed);
        its offer comes as ``sfu-offer`` and the page's answer as ``start``."""
        handle = next((h for h, f in self.subscriptions.items() if f == feed), None)
        if handle is None:
            raise JanusError("not subscribed to this feed")
        await self._message(handle, {"request": "configure", "restart": True})

    async def close(self) -> None:
        self.closed = True
        if self._poller is not None:
            self._poller.cancel()
        if self.session is not None:
            try:
                await self._post(f"/{self.session}", {"janus": "destroy"})
            except (httpx.HTTPError, JanusError, ValueError):
                pass
        await self.http.aclose()

    # -- Janus's events -----------------------------------------------------------------------------------
    async def _poll(self) -> None:
        params = {"maxev": 10}
        if self.api_secret:
            params["apisecret"] = self.api_secret
        failures = 0
        while not self.closed:
            try:
                out = (await self.http.get(f"{self.url}/{self.session}", params=params)).json()
                failures = 0
            except (httpx.HTTPError, ValueError) as exc:
                failures += 1
                if failures >= 5:
                    log.warning("video: Janus session of %s lost: %s", self.peer, exc)
                    await self.deliver({"type": "error", "code": "sfu", "detail": "media server unreachable"})
                    return
                await asyncio.sleep(0.5 * failures)
                continue
            for event in out if isinstance(out, list) else [out]:
                try:
                    await self._on_event(event)
                except Exception:  # noqa: BLE001 - one odd event must not end the participant's media
                    log.exception("video: Janus event not handled")

    async def _on_event(self, e: dict) -> None:
        if e.get("janus") != "event":
            return
        sender = e.get("sender")
        data = (e.get("plugindata") or {}).get("data") or {}
        jsep = e.get("jsep") or {}
        if "error" in data:
            log.warning("video: Janus refused a request of %s: %s", self.peer, data["error"])
            await self.deliver({"type": "error", "code": "sfu", "detail": str(data["error"])})
            return
        if sender == self.publisher:
            if data.get("videoroom") == "joined":
                self.feed = data.get("id")
            if data.get("publishers"):
                feeds = [{"feed": p["id"], "peer": str(p.get("display") or "")} for p in data["publishers"]
                         if p.get("id") != self.feed]  # fmt: skip
                if feeds:
                    await self.deliver({"type": "sfu-publishers", "feeds": feeds})
            for key in ("unpublished", "leaving"):
                gone = data.get(key)
                if isinstance(gone, int):
                    await self.deliver({"type": "sfu-unpublished", "feed": gone})
            if jsep.get("type") == "answer":
                await self.deliver({"type": "sfu-answer", "sdp": jsep["sdp"]})
        elif sender in self.subscriptions and jsep.get("type") == "offer":
            await self.deliver({"type": "sfu-offer", "feed": self.subscriptions[sender], "sdp": jsep["sdp"]})
