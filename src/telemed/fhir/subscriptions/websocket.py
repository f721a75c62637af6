"""The R4 websocket channel (R4 §2.46.7.4): ``bind <id>`` -> ``bound <id>``; then ``ping <id>``.

The client authenticates with its bearer token (``Authorization`` header, ``?access_token=`` or
``bind <id> <token>``, since browsers cannot set headers on a WebSocket). With several instances,
notifications are fanned out through Redis pub/sub (``TELEMED_BROKER_URL=redis://...``): the
dispatcher that delivers a notification publishes it, and every instance forwards it to the
sockets bound on that instance. Without a broker the hub forwards in-process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import TelemedError

log = logging.getLogger("telemed.subscriptions.websocket")
CHANNEL = "telemed:subscription-notifications"


class Hub:
    """Sockets bound to subscriptions on this instance, and the fan-out to other instances."""

    def __init__(self, broker_url: str | None = None):
        self.broker_url = broker_url
        self._sockets: dict[str, set[WebSocket]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        # In-process listeners by topic (the portal's live board); called from any thread.
        self._listeners: dict[str, set[Callable[[str], None]]] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self.broker_url:
            import redis

            self._redis = redis.Redis.from_url(self.broker_url)
            self._listener = threading.Thread(target=self._listen, name="telemed-broker", daemon=True)
            self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(5)
        if self._redis is not None:
            self._redis.close()

    def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANNEL)
        while not self._stop.is_set():
            try:
                message = pubsub.get_message(timeout=0.5)
            except Exception:  # noqa: BLE001 - keep listening through broker hiccups
                log.exception("broker listener error")
                self._stop.wait(1)
                continue
            if message and message["type"] == "message":
                sub_id, _, text = message["data"].decode().partition("\n")
                self._forward(sub_id, text)
        pubsub.close()

    # -- publishing (called from the dispatcher thread) --------------------------------------------
    def publish(self, sub_id: str, text: str) -> None:
        if self._redis is not None:
            self._redis.publish(CHANNEL, f"{sub_id}\n{text}")
        else:
            self._forward(sub_id, text)

    def _forward(self, sub_id: str, text: str) -> None:
        for listener in list(self._listeners.get(sub_id, ())):
            listener(text)
        loop = self._loop
        for ws in list(self._sockets.get(sub_id, ())):
            if loop is not None:
                asyncio.run_coroutine_threadsafe(_send(ws, text), loop)

    def add_listener(self, topic: str, listener: Callable[[str], None]) -> None:
        """Call ``listener(text)`` for every message published on ``topic`` by any instance."""
        self._listeners.setdefault(topic, set()).add(listener)

    def remove_listener(self, topic: str, listener: Callable[[str], None]) -> None:
        self._listeners.get(topic, set()).discard(listener)

    # -- sockets ---------------------------------------------------------------------------------
    def bind(self, sub_id: str, ws: WebSocket) -> None:
        self._sockets.setdefault(sub_id, set()).add(ws)

    def unbind(self, ws: WebSocket) -> None:
        for sockets in self._sockets.values():
            sockets.discard(ws)


async def _send(ws: WebSocket, text: str) -> None:
    try:
        await ws.send_text(text)
    except Exception:  # noqa: BLE001 - a closed socket is unbound by its own handler
        pass


def endpoint(hub: Hub, authenticate: Callable[[str], AccessContext], can_bind: Callable[[AccessContext, str], bool]):
    """The ASGI websocket handler; ``can_bind`` checks the Subscription exists, is a websocket one
    and is visible to the caller."""

    async def handle(ws: WebSocket) -> None:
        await ws.accept()
        header = ws.headers.get("authorization", "")
        token = header.partition(" ")[2].strip() if header.lower().startswith("bearer ") else None
        token = token or ws.query_params.get("access_token")
        try:
            while True:
                text = (await ws.receive_text()).strip()
                parts = text.split()
                if len(parts) not in (2, 3) or parts[0] != "bind":
                    await ws.send_text("error expected: bind <subscription-id> [token]")
                    continue
                sub_id = parts[1]
                try:
                    context = authenticate(parts[2] if len(parts) == 3 else (token or ""))
                except TelemedError as exc:
                    await ws.send_text(f"error {exc.message}")
                    continue
                allowed = await asyncio.get_running_loop().run_in_executor(None, can_bind, context, sub_id)
                if not allowed:
                    await ws.send_text(f"error Subscription/{sub_id} is not a websocket subscription you can see")
                    continue
                hub.bind(sub_id, ws)
                await ws.send_text(f"bound {sub_id}")
        except WebSocketDisconnect:
            pass
        finally:
            hub.unbind(ws)

    return handle
