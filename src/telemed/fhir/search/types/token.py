"""token parameters (R4 §3.1.1.4.9): ``code``, ``system|code``, ``|code``, ``system|``; modifiers
``:text``, ``:not`` (negated by the caller), ``:of-type`` (Identifier type + value)."""

from __future__ import annotations

from sqlalchemy import Table, and_

from telemed.fhir.search.types._common import MAX_LEN, escape_like, normalise, split_unescaped, unescape
from telemed.kernel.errors import incorrect


def _text(value: object) -> str | None:
    return normalise(value) if isinstance(value, str) and value else None


def _coding(c: dict, text: str | None) -> dict:
    return {"system": c.get("system"), "value": _cut(c.get("code")), "text": text or _text(c.get("display"))}


def _cut(v: object) -> str | None:
    return str(v)[:MAX_LEN] if v is not None else None


def extract(value: object, fhir_type: str | None) -> list[dict]:
    if isinstance(value, bool):
        return [{"system": None, "value": "true" if value else "false", "text": None}]
    if isinstance(value, (str, int, float)):
        return [{"system": None, "value": _cut(value), "text": None}]
    if not isinstance(value, dict):
        return []
    if "coding" in value or fhir_type == "CodeableConcept":
        # :text searches CodeableConcept.text and every Coding.display: one row each.
        rows = [_coding(c, None) for c in value.get("coding", []) if isinstance(c, dict)]
        text = _text(value.get("text"))
        if text and all(r["text"] != text for r in rows):
            rows.append({"system": None, "value": None, "text": text})
        return rows
    if fhir_type == "Identifier" or ("value" in value and ("system" in value or "type" in value)):
        type_ = value.get("type") or {}
        rows = [{"system": value.get("system"), "value": _cut(value.get("value")), "text": _text(type_.get("text"))}]
        for c in type_.get("coding", []):
            if c.get("code") and value.get("value") is not None:
                rows.append(
                    {"_suffix": ":of-type", "system": c.get("system"), "value": _cut(f"{c['code']}|{value['value']}")}
                )
        return rows
    if fhir_type == "ContactPoint" or ("value" in value and "use" in value):
        return [{"system": None, "value": _cut(value.get("value")), "text": None}]
    if "code" in value:  # Coding, Quantity-as-token
        return [_coding(value, None)]
    return []


def condition(t: Table, raw: str, modifier: str | None, param: str):
    if modifier == "text":
        return t.c.text.like(escape_like(normalise(unescape(raw))) + "%", escape="\\")
    if modifier == "of-type":
        parts = [unescape(p) for p in split_unescaped(raw, "|")]
        if len(parts) != 3:
            raise incorrect(f"{param}:of-type expects system|code|value", param)
        return and_(t.c.system == parts[0], t.c.value == f"{parts[1]}|{parts[2]}")
    if modifier not in (None, "not"):
        raise incorrect(f"Modifier :{modifier} is not supported on token parameter {param}", param)
    parts = split_unescaped(raw, "|", 1)
    if len(parts) == 1:
        return t.c.value == unescape(raw)
    system, code = unescape(parts[0]), unescape(parts[1])
    if system == "":
        return and_(t.c.system.is_(None), t.c.value == code)
    if code == "":
        return t.c.system == system
    return and_(t.c.system == system, t.c.value == code)


def sort_column(t: Table):
    return t.c.value
