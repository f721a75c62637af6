"""date parameters (R4 §3.1.1.4.3): every value is a range [low, high] (a partial date, a Period,
a Timing's events); prefixes eq ne gt lt ge le sa eb ap compare the search range with it."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, and_, not_

from telemed.fhir.search.types._common import split_prefix
from telemed.kernel.errors import incorrect

MIN = datetime(1, 1, 1, tzinfo=UTC)
MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_DATE = re.compile(
    r"(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})(T(?P<H>\d{2})(:(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def parse_range(text: str) -> tuple[datetime, datetime]:
    """The range a FHIR date/dateTime/instant (possibly partial) covers, in UTC."""
    m = _DATE.fullmatch(text.strip())
    if not m:
        raise ValueError(text)
    y = int(m["y"])
    mo = int(m["m"] or 1)
    d = int(m["d"] or 1)
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hh, mm = m["tz"][1:].split(":")
        tz = timezone_offset(sign * (int(hh) * 60 + int(mm)))
    if m["m"] is None:
        low = datetime(y, 1, 1, tzinfo=tz)
        high = datetime(y + 1, 1, 1, tzinfo=tz) if y < 9999 else MAX
    elif m["d"] is None:
        low = datetime(y, mo, 1, tzinfo=tz)
        high = low + timedelta(days=calendar.monthrange(y, mo)[1])
    elif m["H"] is None:
        low = datetime(y, mo, d, tzinfo=tz)
        high = low + timedelta(days=1)
    elif m["S"] is None:
        low = datetime(y, mo, d, int(m["H"]), int(m["M"] or 0), tzinfo=tz)
        high = low + timedelta(minutes=1)
    else:
        frac = (m["f"] or "")[1:7]
        micro = int((frac + "000000")[:6]) if frac else 0
        low = datetime(y, mo, d, int(m["H"]), int(m["M"]), min(int(m["S"]), 59), micro, tzinfo=tz)
        # The value's own precision is its range: .123 covers [.123, .124).
        high = low + timedelta(microseconds=10 ** (6 - len(frac)))
    return low.astimezone(UTC), min(high.astimezone(UTC) - timedelta(microseconds=1), MAX)


def timezone_offset(minutes: int):
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


def _row(low: datetime, high: datetime) -> dict:
    return {"low": low, "high": high}


def extract(value: object, fhir_type: str | None) -> list[dict]:
    try:
        if isinstance(value, str):
            return [_row(*parse_range(value))]
        if not isinstance(value, dict):
            return []
        if fhir_type == "Timing" or "event" in value or "repeat" in value:
            rows = [_row(*parse_range(e)) for e in value.get("event", []) if isinstance(e, str)]
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                rows.extend(extract(bounds, "Period"))
            return rows
        if "start" in value or "end" in value:  # Period
            low = parse_range(value["start"])[0] if isinstance(value.get("start"), str) else MIN
            high = parse_range(value["end"])[1] if isinstance(value.get("end"), str) else MAX
            return [_row(low, high)]
    except ValueError:
        return []
    return []


def condition(t: Table, raw: str, modifier: str | None, param: str):
    if modifier is not None:
        raise incorrect(f"Modifier :{modifier} is not supported on date parameter {param}", param)
    prefix, text = split_prefix(raw, param)
    try:
        low, high = parse_range(text)
    except (ValueError, OverflowError):
        raise incorrect(f"{param}: {text!r} is not a valid date", param) from None
    if prefix == "eq":
        return and_(t.c.low >= low, t.c.high <= high)
    if prefix == "ne":
        return not_(and_(t.c.low >= low, t.c.high <= high))
    if prefix == "gt":
        return t.c.high > high
    if prefix == "lt":
        return t.c.low < low
    if prefix == "ge":  # the range at or after the search value overlaps the target
        return t.c.high >= low
    if prefix == "le":
        return t.c.low <= high
    if prefix == "sa":
        return t.c.low > high
    if prefix == "eb":
        return t.c.high < low
    # ap: within 10% of the distance from now (at least a day), per the spec's suggestion.
    now = datetime.now(UTC)
    margin = max(abs(now - low) * 0.1, timedelta(days=1))
    return and_(t.c.low <= high + margin, t.c.high >= low - margin)


def sort_column(t: Table):
    return t.c.low
