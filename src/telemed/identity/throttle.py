"""Login throttling per client address, on top of the per-account lockout (telemed.identity.login).

The lockout stops guessing one account's password; it does nothing against one address trying a
few passwords on many accounts (password spraying) or against locking everyone out. So every
failed sign-in is also counted against the client's address: after ``failures`` failures within
``window`` the address is refused (HTTP 429 with ``Retry-After``, RFC 6585 §4) for ``window``,
before any password is checked. A successful sign-in does not reset the count (one valid account
must not buy unlimited guesses at the others).

The counts are shared by every instance of the app: in the database (``login_throttle``, one
upsert per failure) or, when ``TELEMED_BROKER_URL`` names a Redis server, in Redis (``INCR`` with
an expiry). The client's address is the socket's peer, or the address a trusted reverse proxy
names in ``X-Forwarded-For`` (``TELEMED_TRUSTED_PROXIES``): a header from anyone else is ignored,
since a client could otherwise pick a new address for each guess.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Protocol

from sqlalchemy import Engine, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from telemed.db.engine import unit_of_work
from telemed.db.schema import login_throttle as t_throttle
from telemed.kernel.clock import as_utc
from telemed.kernel.errors import Category, TelemedError

FAILURES = 50
WINDOW = timedelta(minutes=15)
REDIS_PREFIX = "telemed:login-throttle:"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LoginThrottled(TelemedError):
    """Too many failed sign-ins from the client's address: 429, ``Retry-After`` in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            Category.TOO_MANY_REQUESTS,
            "Too many failed sign-ins from this address; try again later",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


@lru_cache(maxsize=8)
def parse_networks(text: str | None) -> tuple[Network, ...]:
    """``TELEMED_TRUSTED_PROXIES``: comma-separated addresses or CIDRs. Raises ValueError."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in (text or "").split(",") if p.strip())


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client's address: ``peer`` (the socket's), unless ``peer`` is a trusted proxy; then the
    nearest address in ``X-Forwarded-For`` (read from the right, each proxy appending its own
    peer) that is not a trusted proxy itself. A malformed entry ends the walk at the last good one."""
    if peer is None or not forwarded_for or not _trusted(peer, trusted):
        return peer
    address = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            hop = str(ipaddress.ip_address(hop))
        except ValueError:
            break
        address = hop
        if not _trusted(hop, trusted):
            break
    return address


class Throttle(Protocol):
    def wait(self, address: str | None, now: datetime) -> int:
        """Seconds the address must wait before its next attempt (0: it may try now)."""

    def failed(self, address: str | None, now: datetime) -> None:
        """Count a failed sign-in from the address."""


@dataclass
class DatabaseThrottle:
    """Counts in the ``login_throttle`` table: one atomic upsert per failure (a fixed window that
    starts with the first failure after the previous one ended)."""

    engine: Engine
    failures: int = FAILURES
    window: timedelta = WINDOW

    def wait(self, address: str | None, now: datetime) -> int:
        if not address:
            return 0
        with unit_of_work(self.engine, write=False) as conn:
            until = conn.execute(
                select(t_throttle.c.blocked_until).where(t_throttle.c.address == address[:64])
            ).scalar()
        return _seconds(as_utc(until) - now) if until is not None else 0

    def failed(self, address: str | None, now: datetime) -> None:
        if not address:
            return
        cutoff = now - self.window
        c = t_throttle.c
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        first_block = now + self.window if self.failures <= 1 else None
        stmt = dialect.insert(t_throttle).values(
            address=address[:64], window_start=now, failures=1, blocked_until=first_block
        )
        ended = c.window_start <= cutoff  # the row's window is over: this failure starts a new one
        failures = case((ended, 1), else_=c.failures + 1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.address],
            set_={
                "failures": failures,
                "window_start": case((ended, now), else_=c.window_start),
                "blocked_until": case((failures >= self.failures, now + self.window), else_=c.blocked_until),
            },
        )
        with unit_of_work(self.engine) as conn:
            conn.execute(stmt)
            # Forget addresses whose window and block are both over (bounded by the index).
            conn.execute(
                delete(t_throttle).where(
                    c.window_start < cutoff - self.window, (c.blocked_until.is_(None)) | (c.blocked_until < now)
                )
            )


class RedisThrottle:
    """Counts in Redis: ``INCR`` of the address's key, which expires a window after the first
    failure; reaching the limit sets a block key that expires after ``window``."""

    def __init__(self, url: str, failures: int = FAILURES, window: timedelta = WINDOW):
        import redis

        self.redis = redis.Redis.from_url(url)
        self.failures = failures
        self.window = window

    def wait(self, address: str | None, now: datetime) -> int:
        if not address:
            return 0
        ttl = self.redis.pttl(REDIS_PREFIX + "blocked:" + address[:64])
        return _seconds(timedelta(milliseconds=ttl)) if ttl and ttl > 0 else 0

    def failed(self, address: str | None, now: datetime) -> None:
        if not address:
            return
        key = REDIS_PREFIX + "failures:" + address[:64]
        window_ms = int(self.window.total_seconds() * 1000)
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.pexpire(key, window_ms, nx=True)
        count = pipe.execute()[0]
        if count >= self.failures:
            pipe = self.redis.pipeline()
            pipe.set(REDIS_PREFIX + "blocked:" + address[:64], "1", px=window_ms)
            pipe.delete(key)
            pipe.execute()


def _seconds(delta: timedelta) -> int:
    return max(0, math.ceil(delta.total_seconds()))


def from_settings(settings, engine: Engine) -> Throttle:
    """The throttle ``settings`` ask for: Redis when ``broker_url`` is a Redis URL, else the database."""
    failures = getattr(settings, "login_throttle_failures", FAILURES)
    window = timedelta(seconds=getattr(settings, "login_throttle_window_seconds", WINDOW.total_seconds()))
    url = getattr(settings, "broker_url", None)
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        return RedisThrottle(url, failures, window)
    return DatabaseThrottle(engine, failures, window)


def request_address(request) -> str | None:
    """The client address of a Starlette request, under the app's ``TELEMED_TRUSTED_PROXIES``."""
    peer = request.client.host if request.client else None
    settings = request.app.state.services.settings
    return client_address(peer, request.headers.get("x-forwarded-for"), parse_networks(settings.trusted_proxies))


def for_services(services) -> Throttle:
    """The app's throttle: ``services.login_throttle`` when set (tests inject one), else made once
    from the settings and kept there."""
    found = getattr(services, "login_throttle", None)
    if found is None:
        found = from_settings(services.settings, services.engine)
        services.login_throttle = found
    return found
