"""Injected time, so tests can pin it and every layer agrees on UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at


def fhir_instant(dt: datetime) -> str:
    """Format as a FHIR ``instant`` (millisecond precision, explicit UTC offset)."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_utc(dt: datetime) -> datetime:
    """SQLite hands timestamps back without their offset; everything we store is UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_fhir_datetime(value: str) -> datetime:
    """A FHIR ``instant``/``dateTime``/``date`` as an aware UTC datetime (start of a partial date)."""
    v = value.strip()
    if len(v) == 4:
        v += "-01-01"
    elif len(v) == 7:
        v += "-01"
    dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return as_utc(dt)
