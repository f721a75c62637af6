"""Withdrawn access tokens: single-token logout (by ``jti``) and "log out everywhere" (every token
of a user issued before a moment). Checked on each request with a short in-process cache, so a
revocation takes effect on every instance within ``CACHE_SECONDS``."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, insert, select, update

from telemed.db.schema import account as t_account
from telemed.db.schema import revoked_token as t_revoked
from telemed.kernel.clock import as_utc

CACHE_SECONDS = 5.0


class Revocations:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def is_valid(self, claims: dict) -> bool:
        key = (claims.get("jti", ""), claims["sub"])
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        valid = self._check(claims)
        with self._lock:
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = (time.monotonic(), valid)
        return valid

    def _check(self, claims: dict) -> bool:
        with self.engine.connect() as conn:
            if conn.execute(select(t_revoked.c.jti).where(t_revoked.c.jti == claims.get("jti", ""))).first():
                return False
            after = conn.execute(
                select(t_account.c.tokens_valid_after, t_account.c.active).where(t_account.c.username == claims["sub"])
            ).first()
        if after is not None and not after.active:
            return False
        if after is not None and after.tokens_valid_after is not None:
            issued = datetime.fromtimestamp(claims.get("iat", 0), UTC)
            return issued > as_utc(after.tokens_valid_after)
        return True

    def forget(self, claims: dict) -> None:
        self._cache.pop((claims.get("jti", ""), claims["sub"]), None)

    def forget_user(self, username: str) -> None:
        """Drop every cached answer about ``username``'s tokens (after "log out everywhere")."""
        with self._lock:
            for key in [k for k in self._cache if k[1] == username]:
                self._cache.pop(key, None)


def revoke(conn: Connection, claims: dict, now: datetime) -> None:
    """Withdraw one token; expired entries are cleaned up on the way."""
    conn.execute(delete(t_revoked).where(t_revoked.c.expires < now))
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if not conn.execute(select(t_revoked.c.jti).where(t_revoked.c.jti == claims["jti"])).first():
        conn.execute(insert(t_revoked).values(jti=claims["jti"], expires=expires))


def revoke_all(conn: Connection, username: str, now: datetime) -> None:
    conn.execute(update(t_account).where(t_account.c.username == username).values(tokens_valid_after=now))
