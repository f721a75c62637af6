"""uri parameters (R4 §3.1.1.4.13): exact match, ``:above`` and ``:below``."""

from __future__ import annotations

from sqlalchemy import Table, literal

from telemed.fhir.search.types._common import escape_like, unescape
from telemed.kernel.errors import incorrect


def extract(value: object, fhir_type: str | None) -> list[dict]:
    return [{"value": value[:512]}] if isinstance(value, str) and value else []


def condition(t: Table, raw: str, modifier: str | None, param: str):
    raw = unescape(raw)
    if modifier is None:
        return t.c.value == raw
    if modifier == "below":
        return t.c.value.like(escape_like(raw) + "%", escape="\\")
    if modifier == "above":
        # The stored URI is a prefix of the search value.
        return literal(raw).like(t.c.value + "%")
    raise incorrect(f"Modifier :{modifier} is not supported on uri parameter {param}", param)


def sort_column(t: Table):
    return t.c.value
