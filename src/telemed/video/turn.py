"""ICE servers for a participant: STUN, and TURN with short-lived credentials.

TURN REST API (draft-uberti-behave-turn-rest-00, coturn's ``use-auth-secret`` +
``static-auth-secret``): the username is ``<expiry unix time>:<user>`` and the password is
``base64(HMAC-SHA1(shared secret, username))``. The TURN server recomputes the HMAC, so it needs
no user database, and a leaked credential stops working at its expiry.

Without any configured URL the list is empty: two browsers on one machine or LAN still connect
with host candidates (``make run``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime


def credential(secret: str, user: str, now: datetime, ttl_seconds: int) -> tuple[str, str]:
    """(username, password) valid until ``now + ttl_seconds``."""
    username = f"{int(now.timestamp()) + ttl_seconds}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(urls: list[str], secret: str | None, user: str, now: datetime, ttl_seconds: int = 3600) -> list[dict]:
    """RTCIceServer dictionaries for ``RTCPeerConnection``: STUN URLs as they are, TURN URLs
    (``turn:``/``turns:``, e.g. ``turn:host:3478?transport=tcp`` for the TCP fallback) with a
    credential minted for ``user``; TURN URLs are left out when there is no secret."""
    stun = [u for u in urls if u.startswith(("stun:", "stuns:"))]
    turn = [u for u in urls if u.startswith(("turn:", "turns:"))]
    out: list[dict] = []
    if stun:
        out.append({"urls": stun})
    if turn and secret:
        username, password = credential(secret, user, now, ttl_seconds)
        out.append({"urls": turn, "username": username, "credential": password})
    return out
