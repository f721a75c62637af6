"""quantity parameters (R4 §3.1.1.4.6): ``[prefix]number|system|code``; ``number||code`` matches the
unit code or the human unit. Units are compared as written (no UCUM conversion)."""

from __future__ import annotations

from sqlalchemy import Table, and_

from telemed.fhir.search.types import number
from telemed.fhir.search.types._common import parse_decimal, split_prefix, split_unescaped, unescape
from telemed.kernel.errors import incorrect


def extract(value: object, fhir_type: str | None) -> list[dict]:
    if not isinstance(value, dict):
        return []
    if fhir_type == "Range" or "low" in value or "high" in value:
        return [r for part in ("low", "high") for r in extract(value.get(part), "Quantity")]
    v = value.get("value")
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return []
    code = value.get("code") or value.get("currency")
    rows = [{"value": float(v), "system": value.get("system"), "unit_code": str(code)[:64] if code else None}]
    unit = value.get("unit")
    if unit and unit != code:  # value||unit matches the code or the human unit (R4 §3.1.1.4.6)
        rows.append({"value": float(v), "system": None, "unit_code": str(unit)[:64]})
    return rows


def condition(t: Table, raw: str, modifier: str | None, param: str):
    if modifier is not None:
        raise incorrect(f"Modifier :{modifier} is not supported on quantity parameter {param}", param)
    parts = [unescape(p) for p in split_unescaped(raw, "|")]
    if len(parts) not in (1, 3):
        raise incorrect(f"{param}: expected [prefix]number|system|code, got {raw!r}", param)
    prefix, text = split_prefix(parts[0], param)
    cond = [number.compare(t.c.value, prefix, parse_decimal(text, param))]
    if len(parts) == 3:
        system, code = parts[1], parts[2]
        if system:
            cond.append(t.c.system == system)
        if code:
            cond.append(t.c.unit_code == code)
    return and_(*cond)


def sort_column(t: Table):
    return t.c.value
