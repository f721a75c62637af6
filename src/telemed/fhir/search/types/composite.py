"""composite parameters (R4 §3.1.1.4.8), e.g. ``code-value-quantity=http://loinc.org|8480-6$gt140``.

The two components are indexed together in one row, so both must match the *same* element
(an Observation component's code and that component's value). Supported component kinds: a token
or reference first; a token, reference, string, quantity, number or date second.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table, and_

from telemed.fhir.search.types import date, number, quantity, reference, string, token
from telemed.fhir.search.types._common import normalise, parse_decimal, split_prefix, split_unescaped, unescape
from telemed.kernel.errors import incorrect

Extractor = Callable[[str, object, "str | None"], list[dict]]


_EXTRACT = {"token": token.extract, "string": string.extract, "quantity": quantity.extract,
            "number": number.extract, "date": date.extract}  # fmt: skip


def _direct(kind: str, value: object, fhir_type: str | None) -> list[dict]:
    return _EXTRACT[kind](value, fhir_type)


def _first(kind: str, value: object, fhir_type: str | None, extract: Extractor = _direct) -> list[tuple]:
    if kind == "token":
        return [(r.get("system"), r.get("value")) for r in extract("token", value, fhir_type) if "_suffix" not in r]
    if kind == "reference":
        return [
            (None, f"{r['target_type']}/{r['target_id']}" if r.get("target_id") else r.get("url"))
            for r in reference.extract(value, fhir_type)
            if "_table" not in r
        ]
    return []


def _second(kind: str, value: object, fhir_type: str | None, extract: Extractor = _direct) -> list[dict]:
    if kind in ("token", "reference"):
        return [{"c2_system": s, "c2_value": v} for s, v in _first(kind, value, fhir_type, extract)]
    if kind == "string":
        return [{"c2_value": r["value"]} for r in extract("string", value, fhir_type)]
    if kind == "quantity":
        return [
            {"c2_low": r["value"], "c2_high": r["value"], "c2_system": r["system"], "c2_value": r["unit_code"]}
            for r in extract("quantity", value, fhir_type)
        ]
    if kind == "number":
        return [{"c2_low": r["value"], "c2_high": r["value"]} for r in extract("number", value, fhir_type)]
    if kind == "date":
        return [
            {"c2_low": r["low"].timestamp(), "c2_high": r["high"].timestamp()}
            for r in extract("date", value, fhir_type)
        ]
    return []


def extract_components(node: object, components, extract: Extractor = _direct, evaluate=None) -> list[dict]:
    """Rows of one composite value. ``extract`` and ``evaluate`` (``evaluate(component, node)``)
    let the indexer reuse what other parameters of the same resource already computed."""
    if not isinstance(node, dict) or len(components) != 2:
        return []
    first, second = components
    rows = []
    firsts = evaluate(first, node) if evaluate else first.evaluate(node)
    for v1, t1 in firsts:
        for system, code in _first(first.type, v1, t1, extract):
            for v2, t2 in evaluate(second, node) if evaluate else second.evaluate(node):
                for r2 in _second(second.type, v2, t2, extract):
                    rows.append({"c1_system": system, "c1_value": code, **r2})
    return rows


def condition(t: Table, raw: str, modifier: str | None, param: str, components=()):
    if modifier is not None:
        raise incorrect(f"Modifier :{modifier} is not supported on composite parameter {param}", param)
    if "$" not in raw or len(components) != 2:
        raise incorrect(f"{param} expects two values joined by '$'", param)
    left, right = (unescape(p) for p in split_unescaped(raw, "$", 1))
    first, second = components
    if "|" in left:
        system, _, code = left.partition("|")
        c1 = [t.c.c1_value == code] + ([t.c.c1_system == system] if system else [t.c.c1_system.is_(None)])
    else:
        c1 = [t.c.c1_value == left]
    kind = second.type
    if kind in ("token", "reference"):
        if "|" in right:
            system, _, code = right.partition("|")
            c2 = [t.c.c2_value == code] + ([t.c.c2_system == system] if system else [])
        else:
            c2 = [t.c.c2_value == right]
    elif kind == "string":
        c2 = [t.c.c2_value.like(normalise(right) + "%")]
    elif kind in ("quantity", "number"):
        parts = right.split("|")
        prefix, text = split_prefix(parts[0], param)
        c2 = [number.compare(t.c.c2_low, prefix, parse_decimal(text, param))]
        if len(parts) == 3:
            if parts[1]:
                c2.append(t.c.c2_system == parts[1])
            if parts[2]:
                c2.append(t.c.c2_value == parts[2])
    elif kind == "date":
        prefix, text = split_prefix(right, param)
        try:
            low, high = date.parse_range(text)
        except ValueError:
            raise incorrect(f"{param}: {text!r} is not a valid date", param) from None
        lo, hi = low.timestamp(), high.timestamp()
        c2 = {
            "eq": [t.c.c2_low >= lo, t.c.c2_high <= hi],
            "gt": [t.c.c2_high > hi],
            "lt": [t.c.c2_low < lo],
            "ge": [t.c.c2_high >= lo],
            "le": [t.c.c2_low <= hi],
            "sa": [t.c.c2_low > hi],
            "eb": [t.c.c2_high < lo],
        }.get(prefix, [t.c.c2_low <= hi, t.c.c2_high >= lo])
    else:
        raise incorrect(f"{param}: component type {kind} is not supported", param)
    return and_(*c1, *c2)


def sort_column(t: Table):
    return t.c.c1_value
