"""OAuth 2.0 refresh tokens (no HTTP here), for the authorization code grant of SMART apps.

A refresh token is issued when the app was granted ``offline_access`` (lives ``OFFLINE_TTL`` from
each use) or ``online_access`` (the whole family ends ``ONLINE_TTL`` after the sign-in). It is an
opaque random string; the database keeps only its SHA-256.

Rotation (RFC 9700 §4.14.2): each use marks the token used and issues the next token of the same
*family*. A used (or revoked) token presented again means that it was stolen or replayed: the
whole family is revoked, and so is the access token last issued with it, and the refusal is
audited. Revoking a refresh token (RFC 7009) revokes its family. "Log out everywhere" ends every
family of the user (a refresh token older than the account's ``tokens_valid_after`` is refused).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, insert, select, update

from telemed.db.schema import account as t_account
from telemed.db.schema import refresh_token as t_refresh
from telemed.identity import revocation
from telemed.kernel.clock import as_utc

OFFLINE = "offline_access"
ONLINE = "online_access"
SCOPES = (OFFLINE, ONLINE)
OFFLINE_TTL = timedelta(days=30)
ONLINE_TTL = timedelta(hours=12)


class RefreshRefused(Exception):
    """The refresh token cannot be used; ``reuse`` when it had been used before (family revoked)."""

    def __init__(self, description: str, reuse: bool = False, username: str | None = None):
        super().__init__(description)
        self.description = description
        self.reuse = reuse
        self.username = username


@dataclass(frozen=True)
class RefreshGrant:
    username: str
    client_id: str
    scopes: list[str]
    family: str
    expires: datetime
    patient: str | None = None  # the launch's patient context, kept by every token of the family


def wants_refresh(scopes: list[str]) -> bool:
    return any(s in SCOPES for s in scopes)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    conn: Connection,
    client_id: str,
    username: str,
    scopes: list[str],
    now: datetime,
    access_claims: dict,
    family: RefreshGrant | None = None,
    patient: str | None = None,
) -> str:
    """A new refresh token: of a new family (after the code exchange) or the next of ``family``."""
    token = secrets.token_urlsafe(32)
    if family is not None:
        family_id = family.family
        expires = now + OFFLINE_TTL if OFFLINE in scopes else family.expires
    else:
        family_id = secrets.token_hex(16)
        expires = now + (OFFLINE_TTL if OFFLINE in scopes else ONLINE_TTL)
    conn.execute(
        insert(t_refresh).values(
            token_hash=_digest(token), family=family_id, client_id=client_id, username=username, scopes=scopes,
            issued=now, expires=expires, used=None, revoked=None, access_jti=access_claims.get("jti"),
            access_expires=datetime.fromtimestamp(access_claims["exp"], UTC) if "exp" in access_claims else None,
            patient_id=patient,
        )
    )  # fmt: skip
    return token


def _row(conn: Connection, token: str):
    return conn.execute(select(t_refresh).where(t_refresh.c.token_hash == _digest(token[:512]))).first()


def _ended_by_logout(conn: Connection, row) -> bool:
    acct = conn.execute(
        select(t_account.c.tokens_valid_after, t_account.c.active).where(t_account.c.username == row.username)
    ).first()
    if acct is None or not acct.active:
        return True
    return acct.tokens_valid_after is not None and as_utc(row.issued) <= as_utc(acct.tokens_valid_after)


def redeem(conn: Connection, token: str, client_id: str, now: datetime) -> RefreshGrant:
    """Use a refresh token once. Raises RefreshRefused; on reuse the family is revoked first (in
    ``conn``'s transaction, which the caller commits before answering)."""
    row = _row(conn, token)
    if row is None or row.client_id != client_id:
        raise RefreshRefused("The refresh token is invalid")  # another client's token: as if unknown
    if row.revoked is not None:
        raise RefreshRefused("The refresh token was revoked")
    if row.used is not None:
        revoke_family(conn, row.family, now)
        raise RefreshRefused("The refresh token was already used; its tokens are revoked", True, row.username)
    if as_utc(row.expires) <= now:
        raise RefreshRefused("The refresh token has expired")
    if _ended_by_logout(conn, row):
        raise RefreshRefused("The user signed out everywhere or the account is no longer active")
    # Only one of two concurrent uses marks it; the other is a reuse.
    marked = conn.execute(
        update(t_refresh).where(t_refresh.c.token_hash == row.token_hash, t_refresh.c.used.is_(None)).values(used=now)
    ).rowcount
    if marked != 1:
        revoke_family(conn, row.family, now)
        raise RefreshRefused("The refresh token was already used; its tokens are revoked", True, row.username)
    return RefreshGrant(row.username, row.client_id, list(row.scopes), row.family, as_utc(row.expires), row.patient_id)


def revoke_family(conn: Connection, family: str, now: datetime) -> None:
    """Revoke every refresh token of ``family`` and the access tokens issued with them that may still live."""
    rows = conn.execute(select(t_refresh).where(t_refresh.c.family == family)).all()
    live = (t_refresh.c.family == family) & t_refresh.c.revoked.is_(None)
    conn.execute(update(t_refresh).where(live).values(revoked=now))
    for row in rows:
        if row.access_jti and row.access_expires is not None and as_utc(row.access_expires) > now:
            claims = {"jti": row.access_jti, "exp": int(as_utc(row.access_expires).timestamp()), "sub": row.username}
            revocation.revoke(conn, claims, now)


def revoke(conn: Connection, token: str, client_id: str, now: datetime) -> str | None:
    """RFC 7009 for a refresh token: revoke its family. Returns the user name, or None when the
    token is not a refresh token of this client (nothing happens then)."""
    row = _row(conn, token)
    if row is None or row.client_id != client_id:
        return None
    revoke_family(conn, row.family, now)
    return row.username


def introspect(conn: Connection, token: str, now: datetime) -> dict | None:
    """RFC 7662 fields of an active refresh token, or None."""
    row = _row(conn, token)
    if row is None or row.used is not None or row.revoked is not None or as_utc(row.expires) <= now:
        return None
    if _ended_by_logout(conn, row):
        return None
    return {
        "active": True, "token_type": "refresh_token", "client_id": row.client_id, "username": row.username,
        "sub": row.username, "scope": " ".join(row.scopes), "iat": int(as_utc(row.issued).timestamp()),
        "exp": int(as_utc(row.expires).timestamp()),
    }  # fmt: skip
