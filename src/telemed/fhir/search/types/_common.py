"""Helpers shared by the parameter-type modules: string normalisation, prefixes, numbers."""

from __future__ import annotations

import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from telemed.kernel.errors import incorrect

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MAX_LEN = 255


@lru_cache(maxsize=8192)  # displays, names and units repeat across resources
def normalise(text: str) -> str:
    """Case- and accent-insensitive form (R4 §3.1.1.4.7): NFKD, combining marks removed, casefolded.
    CJK characters are unchanged, so ``name=张`` matches 张伟."""
    if text.isascii():  # NFKD leaves ASCII as it is, and casefold() is lower() there
        return text.lower()[:MAX_LEN]
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()[:MAX_LEN]


def split_prefix(raw: str, param: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and (raw[2].isdigit() or raw[2] == "-"):
        return raw[:2], raw[2:]
    if raw[:2].isalpha() and len(raw) > 2 and raw[:2] not in PREFIXES and (raw[2].isdigit() or raw[2] == "-"):
        raise incorrect(f"Unknown prefix {raw[:2]!r} in {param}={raw}", param)
    return "eq", raw


def parse_decimal(raw: str, param: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise incorrect(f"{param}: {raw!r} is not a number", param) from None
    if not value.is_finite():
        raise incorrect(f"{param}: {raw!r} is not a finite number", param)
    return value


def precision_range(value: Decimal) -> tuple[float, float]:
    """The implicit range of a search number (R4 §3.1.1.4.2): 100 means [99.5, 100.5)."""
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1)  # type: ignore[arg-type]
    return float(value - half), float(value + half)


def escape_like(text: str) -> str:
    """Escape LIKE wildcards; conditions use ``escape="\\"``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def unescape(value: str) -> str:
    """Undo R4 §3.1.1.4.2 search escapes: ``\\,`` ``\\$`` ``\\|`` and ``\\\\``."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in ",$|\\":
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def split_unescaped(value: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` where it is not escaped by a backslash (parts stay escaped)."""
    if "\\" not in value:  # nothing escaped (nearly always): str.split, not a loop per character
        return value.split(sep, maxsplit)
    parts, current, i = [], [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if c == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts
