"""number parameters (R4 §3.1.1.4.2): the search value's precision is its range (100 = [99.5,100.5))."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Table, and_, or_

from telemed.fhir.search.types._common import parse_decimal, precision_range, split_prefix
from telemed.kernel.errors import incorrect


def extract(value: object, fhir_type: str | None) -> list[dict]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [{"value": float(value)}]
    return []


def compare(column, prefix: str, value: Decimal):
    low, high = precision_range(value)
    v = float(value)
    if prefix == "eq":
        return and_(column >= low, column < high)
    if prefix == "ne":
        return or_(column < low, column >= high)
    if prefix in ("gt", "sa"):
        return column > v
    if prefix in ("lt", "eb"):
        return column < v
    if prefix == "ge":
        return column >= v
    if prefix == "le":
        return column <= v
    margin = abs(v) * 0.1  # ap: within 10 %
    return and_(column >= v - margin, column <= v + margin)


def condition(t: Table, raw: str, modifier: str | None, param: str):
    if modifier is not None:
        raise incorrect(f"Modifier :{modifier} is not supported on number parameter {param}", param)
    prefix, text = split_prefix(raw, param)
    return compare(t.c.value, prefix, parse_decimal(text, param))


def sort_column(t: Table):
    return t.c.value
