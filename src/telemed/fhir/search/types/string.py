"""string parameters (R4 §3.1.1.4.7): starts-with by default, case- and accent-insensitive;
``:exact`` (exact, case-sensitive) and ``:contains``. HumanName and Address match any of their parts."""

from __future__ import annotations

from sqlalchemy import Table

from telemed.fhir.search.types._common import MAX_LEN, escape_like, normalise, unescape
from telemed.kernel.errors import incorrect

_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _strings(value: object, fhir_type: str | None) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    parts = _NAME_PARTS if fhir_type == "HumanName" else _ADDRESS_PARTS if fhir_type == "Address" else None
    out: list[str] = []
    for key, v in value.items():
        if parts is not None and key not in parts:
            continue
        if parts is None and key in ("id", "extension", "system", "use", "url"):
            continue
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, str):
                out.append(item)
    if fhir_type == "HumanName" and "text" not in value:
        given = " ".join(g for g in value.get("given", []) if isinstance(g, str))
        family = value.get("family") if isinstance(value.get("family"), str) else ""
        if family and given:
            out.append(family + given)  # Chinese order, so name=张伟 matches family 张 + given 伟
            out.append(f"{given} {family}")
    return out


def extract(value: object, fhir_type: str | None) -> list[dict]:
    return [{"value": normalise(s), "exact": s[:MAX_LEN]} for s in _strings(value, fhir_type) if s]


def condition(t: Table, raw: str, modifier: str | None, param: str):
    raw = unescape(raw)
    if modifier is None:
        return t.c.value.like(escape_like(normalise(raw)) + "%", escape="\\")
    if modifier == "exact":
        return t.c.exact == raw
    if modifier == "contains":
        return t.c.value.like("%" + escape_like(normalise(raw)) + "%", escape="\\")
    raise incorrect(f"Modifier :{modifier} is not supported on string parameter {param}", param)


def sort_column(t: Table):
    return t.c.value
