"""The gateway link: a WebSocket the site gateway opens OUTBOUND to the centre (sites sit behind NAT).

Over it the centre asks for what it does not have yet, and the gateway answers:

- centre -> gateway, text: ``{"op": "tile", "id": n, "slide": s, "level": l, "col": c, "row": r}``;
- gateway -> centre, binary: the request id as 8 bytes big-endian, then the tile's JPEG bytes;
- gateway -> centre, text: ``{"id": n, "error": "..."}`` when it cannot make that tile;
- either side, text ``{"op": "ping"}`` / ``{"op": "pong"}`` to keep NATs from forgetting the link.

The protocol names operations, not pathology data, so the same link can later carry other
store-and-forward traffic (DICOM, ECG). Requests for the same tile share one round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from dataclasses import dataclass, field

from telemed.kernel.errors import Category, TelemedError

log = logging.getLogger("telemed.pathology.link")
HEADER = struct.Struct(">Q")


@dataclass
class Link:
    gateway: str
    send_text: object  # async callable(str)
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    inflight: dict[tuple, asyncio.Future] = field(default_factory=dict)
    next_id: int = 1


class Links:
    """The gateways connected to this instance, by OAuth client id."""

    def __init__(self) -> None:
        self._links: dict[str, Link] = {}

    def connected(self, gateway: str | None) -> bool:
        return gateway is not None and gateway in self._links

    def attach(self, gateway: str, send_text) -> Link:
        old = self._links.get(gateway)
        if old is not None:
            self._fail(old, "replaced by a new connection")
        link = self._links[gateway] = Link(gateway, send_text)
        return link

    def detach(self, link: Link) -> None:
        if self._links.get(link.gateway) is link:
            del self._links[link.gateway]
        self._fail(link, "the site gateway disconnected")

    @staticmethod
    def _fail(link: Link, reason: str) -> None:
        for fut in link.pending.values():
            if not fut.done():
                fut.set_exception(TelemedError(Category.UNAVAILABLE, f"The tile did not arrive: {reason}"))
        link.pending.clear()
        link.inflight.clear()

    async def request_tile(self, gateway: str, slide: str, level: int, col: int, row: int, timeout: float) -> bytes:
        link = self._links.get(gateway)
        if link is None:
            raise TelemedError(Category.UNAVAILABLE, "The site holding this slide is offline")
        key = (slide, level, col, row)
        fut = link.inflight.get(key)
        if fut is None:
            rid = link.next_id
            link.next_id += 1
            fut = asyncio.get_running_loop().create_future()
            link.pending[rid] = fut
            link.inflight[key] = fut
            fut.add_done_callback(lambda _f: (link.pending.pop(rid, None), link.inflight.pop(key, None)))
            msg = {"op": "tile", "id": rid, "slide": slide, "level": level, "col": col, "row": row}
            await link.send_text(json.dumps(msg))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise TelemedError(Category.UNAVAILABLE, "The site did not send the tile in time") from None

    def received(self, link: Link, message: dict) -> None:
        """A message from the gateway: ``{"bytes": ...}`` or ``{"text": ...}`` (ASGI websocket)."""
        data = message.get("bytes")
        if data is not None:
            if len(data) < HEADER.size:
                return
            (rid,) = HEADER.unpack_from(data)
            fut = link.pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(bytes(data[HEADER.size :]))
            return
        try:
            body = json.loads(message.get("text") or "")
        except ValueError:
            return
        if "error" in body:
            fut = link.pending.get(body.get("id"))
            if fut is not None and not fut.done():
                reason = f"The site could not send the tile: {body['error']}"
                fut.set_exception(TelemedError(Category.UNAVAILABLE, reason))
