"""Signalling for a consultation's room: who is in it, and relaying SDP/ICE between them.

One :class:`Switchboard` per app instance holds the rooms of that instance (keyed by
consultation: a message can only ever reach a peer of the sender's own room). Each WebSocket is
served by :meth:`Switchboard.serve`, which never lets a client's input end the loop: every bad
message is answered with an ``error`` and logged, a flood is cut by a token bucket, and a client
that keeps misbehaving is disconnected (close code 1008) without touching other rooms.

Reconnection: a page keeps its peer id across sockets. When a socket drops, the peer stays in
the room for :data:`GRACE_SECONDS`; if the page rejoins in that time nobody sees it leave, and
the page renegotiates with an ICE restart over the new socket, so the media that still flows
keeps flowing and a path that broke is replaced, all without reloading the page.

Several instances (``TELEMED_BROKER_URL``): the two peers of a call may reach different
instances. Each instance announces its peers' joins and leaves on the Hub topic
:data:`TOPIC` (Redis pub/sub), keeps a view of the peers on the others, and sends a message for a
peer it does not hold, and every broadcast, through the Hub; each instance delivers to its own
sockets. An instance that starts asks the others for their peers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from telemed.video import join as join_tokens
from telemed.video import protocol
from telemed.video.protocol import ProtocolError, dumps
from telemed.video.recording import Recordings
from telemed.video.room import Refused

log = logging.getLogger("telemed.video")

GRACE_SECONDS = 15.0
MAX_VIOLATIONS = 20  # malformed messages before the socket is closed
MAX_DROPPED = 200  # rate-limited messages before the socket is closed
POLICY_VIOLATION = 1008
NOT_VIOLATIONS = frozenset({"unknown-peer", "not-joined", "refused", "chat-failed", "sfu", "record"})
TOPIC = "video-signalling"  # the Hub topic that carries signalling between instances


@dataclass
class Peer:
    id: str
    grant: join_tokens.Grant
    send: Callable[[str], Awaitable[None]]
    close: Callable[[int], Awaitable[None]]
    joined_at: float = field(default_factory=time.monotonic)
    state: dict = field(default_factory=dict)
    known: set = field(default_factory=set)  # peers listed in its ``joined``: no later peer-joined for them
    sfu: object = None  # its SfuParticipant in an SFU room (kept across a reconnection)

    def public(self) -> dict:
        return {"peer": self.id, "name": self.grant.name, "practitioner": self.grant.practitioner, **self.state}


@dataclass
class Events:
    """What the platform does around the call (all optional; sync ones run in a thread)."""

    authorize: Callable[[str, str], join_tokens.Grant]  # (token, consultation) -> grant, or raise; no I/O (inline)
    ice_servers: Callable[[join_tokens.Grant], list[dict]] = lambda grant: []
    joined: Callable[[join_tokens.Grant, str], None] | None = None  # record attendance
    left: Callable[[join_tokens.Grant, str], None] | None = None
    chat: Callable[[join_tokens.Grant, str], dict] | None = None  # save; returns {"at": ..., "id": ...}
    refused: Callable[[str, str, str], None] | None = None  # (consultation, who, code) -> audit
    now: Callable[[], datetime] | None = None
    # In an SFU room (grant.mode == "sfu"): (grant, peer id, deliver) -> an SfuParticipant
    # (telemed.video.sfu) that publishes/subscribes for the page; ``deliver`` sends to its socket.
    sfu: Callable | None = None
    consent: Callable[[join_tokens.Grant, str, bool], None] | None = None  # (grant, recording id, yes?) -> record
    # Write several records (joined, left, consent calls as (fn, args)) at once, e.g. in one transaction,
    # by calling fn(*args, conn=...); without it each is called on its own. Raising: each is retried alone.
    batch: Callable[[list[tuple[Callable, tuple]]], None] | None = None


class Switchboard:
    def __init__(self, events: Events, grace_seconds: float = GRACE_SECONDS, bus=None):
        """``bus``: ``publish(topic, text)`` and ``add_listener(topic, fn)`` reaching every instance
        (telemed's Hub with Redis); without it a room lives on one instance."""
        self.events = events
        self.bus = bus
        self.instance = secrets.token_hex(6)
        self.remote: dict[str, dict[str, dict]] = {}  # room -> peer id -> public info, on other instances
        self._loop: asyncio.AbstractEventLoop | None = None
        if bus is not None:
            bus.add_listener(TOPIC, self._on_bus)
        self.grace = grace_seconds
        self.rooms: dict[str, dict[str, Peer]] = {}
        self._pending_leave: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self.recordings = Recordings()
        self._records: list[tuple[Callable, tuple]] = []  # attendance and consent records not yet written
        self._writer: asyncio.Task | None = None
        self.stats = {"joins": 0, "refused": 0, "malformed": 0, "rate_limited": 0, "relayed": 0}

    # -- room bookkeeping --------------------------------------------------------------------------
    def peers(self, room: str) -> list[Peer]:
        return list(self.rooms.get(room, {}).values())

    async def _broadcast(self, room: str, msg: dict, exclude: str | None = None) -> None:
        if self.bus is not None:  # every instance (this one too) delivers to its own sockets
            self._publish({"kind": "msg", "room": room, "exclude": exclude, "msg": msg})
            return
        await self._deliver(room, msg, exclude)

    async def _deliver(self, room: str, msg: dict, exclude: str | None = None) -> None:
        text = dumps(msg)
        for peer in self.peers(room):
            if peer.id == exclude or (msg.get("type") == "peer-joined" and msg.get("peer") in peer.known):
                continue  # (a join announced through the broker can arrive after the list that named it)
            await _safe(peer.send(text))

    async def _run(self, fn, *args):
        if fn is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _run_logged(self, fn, *args):
        try:
            return await self._run(fn, *args)
        except Exception:  # noqa: BLE001 - recording attendance must not end the call
            log.exception("video room hook failed")
            return None

    def _background(self, fn, *args) -> None:
        """Record attendance off the signalling path (a slow database must not delay the call), in
        the order of the events, so a leave never overtakes its join. Records that queue up while a
        batch is being written go together in the next one: one thread hop, and with
        :attr:`Events.batch` one transaction, per batch instead of per record (a burst of 400 joins
        otherwise spends more CPU on 400 commits than on the signalling itself)."""
        if fn is None:
            return
        self._records.append((fn, args))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_records())
            self._tasks.add(self._writer)
            self._writer.add_done_callback(self._tasks.discard)

    async def _write_records(self) -> None:
        while self._records:
            batch, self._records = self._records, []
            await self._run_logged(self._write_batch, batch)

    def _write_batch(self, batch: list[tuple[Callable, tuple]]) -> None:
        if self.events.batch is not None and len(batch) > 1:
            try:
                self.events.batch(batch)
                return
            except Exception:  # noqa: BLE001 - one bad record must not lose the others
                log.exception("video: a batch of %d records failed; writing them one by one", len(batch))
        for fn, args in batch:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - recording attendance must not end the call
                log.exception("video room hook failed")

    def _cancel_leave(self, room: str, peer_id: str) -> bool:
        handle = self._pending_leave.pop((room, peer_id), None)
        if handle is not None:
            handle.cancel()
            return True
        return False

    async def _leave(self, room: str, peer_id: str) -> None:
        self._pending_leave.pop((room, peer_id), None)
        members = self.rooms.get(room, {})
        peer = members.pop(peer_id, None)
        if not members:
            self.rooms.pop(room, None)
        if peer is None:
            return
        self._presence(room, "leave", peer)
        if peer.sfu is not None:
            asyncio.ensure_future(_safe(peer.sfu.close()))
        await self._broadcast(room, {"type": "peer-left", "peer": peer_id})
        if (rec := self.recordings.left(room, peer_id)) is not None:
            await self._broadcast(room, {**rec.public(), "by": peer_id, "reason": "left"})
        self._background(self.events.left, peer.grant, peer_id)

    def _schedule_leave(self, room: str, peer_id: str) -> None:
        loop = asyncio.get_running_loop()
        self._cancel_leave(room, peer_id)
        self._pending_leave[(room, peer_id)] = loop.call_later(
            self.grace, lambda: asyncio.ensure_future(self._leave(room, peer_id))
        )

    # -- one socket ----------------------------------------------------------------------------------
    async def serve(self, room: str, receive: Callable[[], Awaitable[str | None]],
                    send: Callable[[str], Awaitable[None]], close: Callable[[int], Awaitable[None]],
                    who: str = "?", authorize=None) -> None:  # fmt: skip
        """Serve one connection to ``room`` until it closes. ``receive`` returns None at the end."""
        self._attach_loop()
        bucket = protocol.TokenBucket()
        me: Peer | None = None
        violations = dropped = 0
        last_notice = 0.0
        left_cleanly = False
        try:
            while True:
                text = await receive()
                if text is None:
                    break
                if not bucket.allow():
                    dropped += 1
                    self.stats["rate_limited"] += 1
                    if dropped == 1 or dropped % 50 == 0:
                        log.warning("video: rate limit on room %s for %s (%d dropped)", room, who, dropped)
                    if time.monotonic() - last_notice > 1:
                        last_notice = time.monotonic()
                        await send(dumps({"type": "error", "code": "rate-limited", "detail": "too many messages"}))
                    if dropped >= MAX_DROPPED:
                        await self._run_logged(self.events.refused, room, who, "flood")
                        await close(POLICY_VIOLATION)
                        break
                    continue
                try:
                    msg = protocol.parse(text)
                    if msg["type"] == "join":
                        me = await self._join(room, msg, send, close, me, who, authorize)
                        continue
                    if msg["type"] == "ping":
                        await send(dumps({"type": "pong"}))
                        continue
                    if me is None:
                        raise ProtocolError("not-joined", "send join first")
                    if msg["type"] == "leave":
                        left_cleanly = True
                        break
                    await self._relay(room, me, msg)
                except ProtocolError as exc:
                    violations += exc.code not in NOT_VIOLATIONS
                    self.stats["malformed"] += exc.code in ("malformed", "unknown-type", "too-large")
                    log.warning("video: %s from %s in room %s: %s", exc.code, who, room, exc.detail)
                    await send(dumps({"type": "error", "code": exc.code, "detail": exc.detail}))
                    if violations >= MAX_VIOLATIONS:
                        await self._run_logged(self.events.refused, room, who, "malformed")
                        await close(POLICY_VIOLATION)
                        break
        finally:
            if me is not None and self.rooms.get(room, {}).get(me.id) is me:
                if left_cleanly:
                    await self._leave(room, me.id)
                else:
                    self._schedule_leave(room, me.id)  # the page may come back with a new socket

    async def _join(self, room: str, msg: dict, send, close, me: Peer | None, who: str, authorize) -> Peer:
        if me is not None:
            raise ProtocolError("malformed", "already joined")
        try:  # inline: checking a signed token is a few microseconds, less than a thread hop
            grant = (authorize or self.events.authorize)(msg["token"], room)
        except (join_tokens.InvalidJoinToken, Refused) as exc:
            code = exc.code if isinstance(exc, Refused) else "invalid-token"
            self.stats["refused"] += 1
            await self._run_logged(self.events.refused, room, who, code)
            raise ProtocolError("refused", code) from None
        members = self.rooms.setdefault(room, {})
        existing = members.get(msg["peer"])
        elsewhere = self.remote.get(room, {}).get(msg["peer"])
        if elsewhere is not None and elsewhere.get("user") != grant.user:
            raise ProtocolError("refused", "peer-id-taken")
        if existing is not None and existing.grant.user != grant.user:
            raise ProtocolError("refused", "peer-id-taken")
        if existing is None and elsewhere is None and len(members) + len(self.remote.get(room, {})) >= grant.peer_limit:
            raise ProtocolError("refused", "room-full")
        peer = Peer(msg["peer"], grant, send, close)
        resumed = self._cancel_leave(room, peer.id) or existing is not None or elsewhere is not None
        if existing is not None:
            peer.state = existing.state
            peer.sfu = existing.sfu
            await _safe(existing.close(4000))  # the old socket of a page that reconnected
        members[peer.id] = peer
        self._presence(room, "join", peer)
        others = [p.public() for p in self.peers(room) if p.id != peer.id]
        others += [{k: v for k, v in info.items() if k != "user"} for pid, info in self.remote.get(room, {}).items()
                   if pid != peer.id]  # fmt: skip
        peer.known = {o["peer"] for o in others}
        await send(dumps({"type": "joined", "peer": peer.id, "peers": others, "resumed": resumed,
                          "iceServers": self.events.ice_servers(grant)}))  # fmt: skip
        self.stats["joins"] += 1
        if not resumed:
            await self._broadcast(room, {"type": "peer-joined", **peer.public()}, exclude=peer.id)
            self._background(self.events.joined, grant, peer.id)
            if (rec := self.recordings.joined(room, peer.id)) is not None:  # a newcomer has not consented
                await self._broadcast(room, {**rec.public(), "by": peer.id, "reason": "joined"})
        log.info("video: %s %s room %s as %s", grant.user, "rejoined" if resumed else "joined", room, peer.id)
        return peer

    def _deliverer(self, room: str, peer_id: str):
        """Send to the peer's current socket (a page that reconnects gets a new one)."""

        async def deliver(msg: dict) -> None:
            peer = self.rooms.get(room, {}).get(peer_id)
            if peer is not None:
                await _safe(peer.send(dumps(msg)))

        return deliver

    async def _sfu(self, room: str, me: Peer, msg: dict) -> None:
        if me.grant.mode != "sfu" or self.events.sfu is None:
            raise ProtocolError("no-sfu", "this room has no media server")
        try:
            if me.sfu is None:
                me.sfu = self.events.sfu(me.grant, me.id, self._deliverer(room, me.id))
            if msg["type"] == "sfu-publish":
                await me.sfu.publish(msg["sdp"])
            elif msg["type"] == "sfu-subscribe":
                await me.sfu.subscribe(msg["feed"])
            elif msg["type"] == "sfu-watch":
                await me.sfu.watch()
            elif msg["type"] == "sfu-restart":
                await me.sfu.restart(msg["feed"])
            else:
                await me.sfu.start(msg["feed"], msg["sdp"])
        except Exception as exc:  # noqa: BLE001 - the media server's trouble must not end the socket
            log.warning("video: SFU request %s of %s in room %s failed: %s", msg["type"], me.grant.user, room, exc)
            raise ProtocolError("sfu", "the media server refused or is unreachable") from None

    async def _record(self, room: str, me: Peer, action: str) -> None:
        recs = self.recordings
        if action == "request":
            present = {p.id for p in self.peers(room)} | set(self.remote.get(room, {}))
            rec = recs.request(room, me.id, me.grant.user, present)
        elif action == "consent":
            rec = recs.consent(room, me.id, me.grant.user)
        elif action == "decline":
            rec = recs.decline(room, me.id)
        else:
            rec = recs.stop(room)
        if rec is None:
            raise ProtocolError("record", "there is no recording request to answer")
        self._share_record(Recordings.action_of(room, action, me.id, me.grant.user, rec))
        if action != "stop":
            self._background(self.events.consent, me.grant, rec.id, action != "decline")
        log.info("video: recording %s in room %s: %s by %s -> %s", rec.id, room, action, me.grant.user, rec.state)
        await self._broadcast(room, {**rec.public(), "by": me.id, "name": me.grant.name, "action": action})

    async def _relay(self, room: str, me: Peer, msg: dict) -> None:
        kind = msg["type"]
        if kind in protocol.SFU_TYPES:
            await self._sfu(room, me, msg)
            return
        if kind == "record":
            await self._record(room, me, msg["action"])
            return
        if kind == "chat":
            try:
                saved = await self._run(self.events.chat, me.grant, msg["text"])
            except Exception as exc:  # noqa: BLE001 - a message that cannot be saved is not sent either
                log.warning("video: chat from %s in room %s not saved: %s", me.grant.user, room, exc)
                raise ProtocolError("chat-failed", "the message could not be saved") from None
            at = (saved or {}).get("at") or (self.events.now() if self.events.now else datetime.now()).isoformat()
            await self._broadcast(room, {"type": "chat", "from": me.id, "name": me.grant.name, "text": msg["text"],
                                         "at": at})  # fmt: skip
            return
        if kind == "state":
            me.state = {k: msg[k] for k in ("audio", "video", "screen") if k in msg}
            await self._broadcast(room, {"type": "state", "from": me.id, **me.state}, exclude=me.id)
            return
        target = self.rooms.get(room, {}).get(msg["to"])
        out = {k: v for k, v in msg.items() if k != "to"}
        out["from"] = me.id
        if target is None and msg["to"] in self.remote.get(room, {}):
            self.stats["relayed"] += 1
            self._publish({"kind": "msg", "room": room, "to": msg["to"], "msg": out})
            return
        if target is None or target.id == me.id:
            raise ProtocolError("unknown-peer", "no such peer in this room")
        self.stats["relayed"] += 1
        await _safe(target.send(dumps(out)))

    # -- several instances -----------------------------------------------------------------------------
    def _attach_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self.bus is not None:  # learn who is in which room on the other instances
                self._publish({"kind": "sync"})

    def _share_record(self, action: dict) -> None:
        """The other instances apply the same recording action (their pages answer, their uploads
        are checked against the same state)."""
        if self.bus is not None:
            self._publish({"kind": "record", "room": action["room"], "action": action})

    def _publish(self, envelope: dict) -> None:
        self.bus.publish(TOPIC, dumps({**envelope, "origin": self.instance}))

    def _presence(self, room: str, op: str, peer: Peer) -> None:
        if self.bus is not None:
            info = {**peer.public(), "user": peer.grant.user}
            self._publish({"kind": "presence", "op": op, "room": room, "peer": info})

    def _on_bus(self, text: str) -> None:
        """A message from any instance (called on the broker's thread, or inline without Redis)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._on_envelope, text)

    def _on_envelope(self, text: str) -> None:
        try:
            env = json.loads(text)
        except ValueError:
            return
        mine = env.get("origin") == self.instance
        kind, room = env.get("kind"), env.get("room")
        if kind == "msg":
            to = env.get("to")
            if to is None:
                asyncio.ensure_future(self._deliver(room, env["msg"], env.get("exclude")))
            elif (target := self.rooms.get(room, {}).get(to)) is not None:
                asyncio.ensure_future(_safe(target.send(dumps(env["msg"]))))
        elif kind == "presence" and not mine:
            info = env["peer"]
            self.recordings.apply(Recordings.action_of(room, "joined" if env["op"] == "join" else "left",
                                                       info["peer"]))  # fmt: skip
            if env["op"] == "join":
                self.remote.setdefault(room, {})[info["peer"]] = info
                if self._cancel_leave(room, info["peer"]):  # the page came back through another instance
                    self.rooms.get(room, {}).pop(info["peer"], None)
            else:
                self.remote.get(room, {}).pop(info["peer"], None)
        elif kind == "record" and not mine:
            self.recordings.apply(env["action"])
        elif kind == "sync" and not mine:
            for room_id, members in self.rooms.items():
                for peer in members.values():
                    self._presence(room_id, "join", peer)


async def _safe(awaitable) -> None:
    try:
        await awaitable
    except Exception:  # noqa: BLE001 - a closed socket is cleaned up by its own loop
        pass
