"""Join tokens: short-lived, signed permission to enter one consultation's room.

The call page mints one after the room rules (:func:`telemed.video.room.admit`) let the user
in; the signalling socket accepts a ``join`` only with a valid token for *its* room, from the
same signed-in user. A token is an HS256 JWT of its own audience (never accepted as an access
token), checked against the injected clock, valid :data:`TTL_SECONDS`: a page that reconnects
asks for a fresh one, so a closed room or a revoked session stops reconnections too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import jwt

AUDIENCE = "telemed-video-join"
ISSUER = "telemed"
TTL_SECONDS = 120


class InvalidJoinToken(Exception):
    """Forged, expired, malformed or for another room."""


@dataclass(frozen=True)
class Grant:
    consultation: str
    user: str
    practitioner: str
    name: str
    encounter: str | None
    peer_limit: int
    context: object = field(default=None, compare=False, repr=False)  # the caller's AccessContext (set by the portal)
    mode: str = "mesh"  # "sfu": the room's media go through the SFU (Janus), driven over the socket


def mint(secret: str, grant: Grant, now: datetime, ttl_seconds: int = TTL_SECONDS) -> str:
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": grant.user, "cid": grant.consultation, "prac": grant.practitioner,
        "name": grant.name, "enc": grant.encounter, "lim": grant.peer_limit, "mode": grant.mode,
        "iat": int(now.timestamp()), "exp": int(now.timestamp()) + ttl_seconds, "jti": uuid.uuid4().hex,
    }  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str, consultation: str, now: datetime) -> Grant:
    """The grant of a token for ``consultation``'s room; raises :class:`InvalidJoinToken`."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise InvalidJoinToken("no token")
    # Expiry is checked against our clock below, not the wall clock: tests inject theirs.
    options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": ["exp", "sub", "cid", "prac"]}
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER, options=options)
    except jwt.PyJWTError as exc:
        raise InvalidJoinToken(f"invalid token ({exc.__class__.__name__})") from None
    if int(claims["exp"]) <= now.timestamp():
        raise InvalidJoinToken("expired token")
    if claims["cid"] != consultation:
        raise InvalidJoinToken("token for another room")
    return Grant(claims["cid"], claims["sub"], claims["prac"], str(claims.get("name") or claims["sub"]),
                 claims.get("enc"), int(claims.get("lim") or 8),
                 mode="sfu" if claims.get("mode") == "sfu" else "mesh")  # fmt: skip
