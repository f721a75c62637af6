"""The signalling protocol: JSON messages on the room's WebSocket, validated before use.

Client to server (``type`` and its fields)::

    join       token, peer (the page's stable peer id, 8-64 of [A-Za-z0-9_-]), rejoin? (bool)
    offer      to, sdp, restart? (an ICE restart)        answer     to, sdp
    candidate  to, candidate (RTCIceCandidateInit or null = end of candidates)
    chat       text (1-2000 characters)                  ping       (answered by pong)
    state      audio?, video?, screen? (booleans shown to the others)
    leave
    sfu-publish  sdp (the page's offer to the SFU)      sfu-subscribe  feed (an SFU feed id)
    sfu-start    feed, sdp (the page's answer to that feed's offer)
    sfu-watch    (join the SFU room to receive only: a page with no camera or microphone)
    sfu-restart  feed (ask Janus to offer that feed again with new ICE credentials)
    record       action: request | consent | decline | stop (recording only with everyone's consent)

Server to client: ``joined`` (peer, peers, iceServers), ``peer-joined``, ``peer-left``,
``offer``/``answer``/``candidate`` with ``from``, ``chat`` (from, name, text, at), ``state``,
``pong``, and ``error`` (code, detail) for anything refused; in an SFU room also ``sfu-answer``,
``sfu-offer`` (feed, sdp), ``sfu-publishers`` (feeds: feed, peer) and ``sfu-unpublished`` (feed);
``record`` (id, state asking/on/off, recorder, consented, required, by, name) to everyone.
A malformed message is answered with an ``error`` and dropped; it never reaches another peer
and never ends the server's loop.
"""

from __future__ import annotations

import re
import time

import orjson

MAX_MESSAGE_BYTES = 64 * 1024  # an SDP with simulcast and many codecs stays well under this
MAX_CHAT = 2000
PEER_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
TYPES = frozenset({"join", "leave", "offer", "answer", "candidate", "chat", "ping", "state", "sfu-publish",
                   "sfu-subscribe", "sfu-start", "sfu-watch", "sfu-restart", "record"})  # fmt: skip
RECORD_ACTIONS = frozenset({"request", "consent", "decline", "stop"})
SFU_TYPES = frozenset({"sfu-publish", "sfu-subscribe", "sfu-start", "sfu-watch", "sfu-restart"})


class ProtocolError(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _need(cond: bool, detail: str) -> None:
    if not cond:
        raise ProtocolError("malformed", detail)


def parse(text: str | bytes) -> dict:
    """The message as a dict with only its known fields; raises :class:`ProtocolError`."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too-large", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("malformed", "not JSON") from None
    _need(isinstance(msg, dict), "a message is a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise ProtocolError("unknown-type", "unknown message type")
    out: dict = {"type": kind}
    if kind == "join":
        _need(isinstance(msg.get("token"), str), "join needs a token")
        _need(isinstance(msg.get("peer"), str) and bool(PEER_ID.match(msg["peer"])), "join needs a peer id")
        out.update(token=msg["token"], peer=msg["peer"], rejoin=msg.get("rejoin") is True)
    elif kind in ("offer", "answer", "candidate"):
        _need(isinstance(msg.get("to"), str) and bool(PEER_ID.match(msg["to"])), f"{kind} needs 'to'")
        out["to"] = msg["to"]
        if kind == "candidate":
            c = msg.get("candidate")
            _need(c is None or (isinstance(c, dict) and isinstance(c.get("candidate", ""), str)), "bad candidate")
            if c is not None:
                mid, index = c.get("sdpMid"), c.get("sdpMLineIndex")
                _need(mid is None or isinstance(mid, str), "bad sdpMid")
                _need(index is None or (isinstance(index, int) and 0 <= index < 64), "bad sdpMLineIndex")
                c = {"candidate": c.get("candidate", ""), "sdpMid": mid, "sdpMLineIndex": index}
            out["candidate"] = c
        else:
            sdp = msg.get("sdp")
            _need(isinstance(sdp, str) and sdp.startswith("v=0"), f"{kind} needs an SDP")
            out["sdp"] = sdp
            out["restart"] = msg.get("restart") is True
    elif kind in SFU_TYPES:
        if kind in ("sfu-subscribe", "sfu-start", "sfu-restart"):
            feed = msg.get("feed")
            _need(isinstance(feed, int) and not isinstance(feed, bool) and 0 < feed < 2**53, f"{kind} needs a feed")
            out["feed"] = feed
        if kind in ("sfu-publish", "sfu-start"):
            sdp = msg.get("sdp")
            _need(isinstance(sdp, str) and sdp.startswith("v=0"), f"{kind} needs an SDP")
            out["sdp"] = sdp
    elif kind == "record":
        _need(msg.get("action") in RECORD_ACTIONS, "record needs an action: request, consent, decline or stop")
        out["action"] = msg["action"]
    elif kind == "chat":
        text_ = msg.get("text")
        _need(isinstance(text_, str) and 0 < len(text_.strip()) <= MAX_CHAT, "chat needs 1-2000 characters")
        out["text"] = text_.strip()
    elif kind == "state":
        for key in ("audio", "video", "screen"):
            if key in msg:
                _need(isinstance(msg[key], bool), f"{key} is a boolean")
                out[key] = msg[key]
    return out


def dumps(msg: dict) -> str:
    return orjson.dumps(msg).decode()


class TokenBucket:
    """At most ``rate`` messages a second on average, bursts of ``burst`` (ICE gathering sends a
    dozen candidates at once); a client beyond that is refused message by message."""

    def __init__(self, rate: float = 20.0, burst: float = 60.0, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
