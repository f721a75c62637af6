"""Parsing of the search parameters the store supports today into plain criteria (no SQL here).

Supported: ``_id`` (comma = OR), ``identifier`` as ``[system]|[value]`` (R4 §3.1.1.4.9), and the
result parameters ``_count``, ``_offset``, ``_total``, ``_summary=count``. Anything else is rejected
with a clear 400 rather than silently ignored, because an ignored criterion in a conditional
update or delete would touch the wrong resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telemed.kernel.errors import incorrect

RESULT_PARAMS = {"_count", "_offset", "_total", "_summary", "_format", "_pretty"}


@dataclass(frozen=True)
class Token:
    system: str | None  # None: any system; "": no system
    value: str | None  # None: any value


@dataclass
class Criteria:
    ids: list[str] | None = None
    identifiers: list[list[Token]] = field(default_factory=list)  # AND of ORs
    count: int | None = None
    offset: int = 0
    summary_count: bool = False

    @property
    def is_empty(self) -> bool:
        return self.ids is None and not self.identifiers


def parse_token(raw: str) -> Token:
    if "|" in raw:
        system, _, value = raw.partition("|")
        return Token(system=system, value=value or None)
    return Token(system=None, value=raw)


def parse(params: list[tuple[str, str]], max_count: int = 1000) -> Criteria:
    c = Criteria()
    for name, value in params:
        if name == "_id":
            ids = [v for v in value.split(",") if v]
            c.ids = ids if c.ids is None else [i for i in c.ids if i in ids]
        elif name == "identifier":
            c.identifiers.append([parse_token(v) for v in value.split(",") if v])
        elif name == "_count":
            if not value.isdigit():
                raise incorrect(f"_count must be a non-negative integer, got {value!r}", "_count")
            c.count = min(int(value), max_count)
        elif name == "_offset":
            if not value.isdigit():
                raise incorrect(f"_offset must be a non-negative integer, got {value!r}", "_offset")
            c.offset = int(value)
        elif name == "_summary":
            c.summary_count = value == "count"
        elif name in RESULT_PARAMS:
            continue
        else:
            raise incorrect(
                f"Search parameter {name!r} is not supported yet (supported: _id, identifier, _count, _offset)",
                name,
                "not-supported",
            )
    return c
