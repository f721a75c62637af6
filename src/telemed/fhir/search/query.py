"""Parsing a FHIR search request into a plain query (R4 §3.1.1.1-§3.1.1.5); no SQL here.

Each occurrence of a parameter is ANDed; comma-separated values are ORed (``\\,`` escapes a comma).
Unknown parameters are reported and ignored (lenient, the default) or rejected with 400 when the
client sends ``Prefer: handling=strict`` (R4 §3.1.1.3.1), and always rejected for conditional
interactions, where ignoring a criterion would touch the wrong resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telemed.fhir.definitions import load
from telemed.fhir.search.registry import SearchParam, registry
from telemed.fhir.search.types._common import split_unescaped
from telemed.kernel.errors import incorrect

RESULT_PARAMS = {
    "_sort", "_count", "_total", "_summary", "_elements", "_include", "_revinclude",
    "_format", "_pretty", "_cursor", "_snapshot", "_offset", "_contained", "_containedType",
}  # fmt: skip
SUMMARY_MODES = {"true", "false", "text", "data", "count"}
TOTAL_MODES = {"none", "estimate", "accurate"}


@dataclass
class Filter:
    """One parameter occurrence: ``code[:modifier]=v1,v2`` (values ORed)."""

    resource_type: str
    code: str
    param: SearchParam | None  # None for _id, _lastUpdated and compartment filters
    modifier: str | None
    values: list[str]
    chain: list[Filter] = field(default_factory=list)  # subject.name=x: one filter per target type
    has: Has | None = None


@dataclass
class Has:
    """``_has:Observation:patient:code=x`` (R4 §3.1.1.5.6, reverse chaining)."""

    source_type: str
    reference_code: str
    inner: Filter


@dataclass
class Include:
    source_type: str
    code: str  # "*" for every reference parameter
    target_type: str | None
    iterate: bool


@dataclass
class Query:
    resource_type: str
    filters: list[Filter] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (code, descending)
    count: int = 50
    total: str | None = None
    summary: str | None = None
    elements: list[str] | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    cursor: str | None = None
    snapshot: str | None = None
    offset: int = 0
    ignored: list[str] = field(default_factory=list)
    compartment: tuple[str, str] | None = None  # ("Patient", id)
    # False for in-process callers that read only the first page (portal panels): a sorted
    # search then never writes a paging snapshot, so it stays a pure read.
    pageable: bool = True


def split_values(raw: str) -> list[str]:
    """Comma-separated alternatives; each stays escaped (the type modules unescape what they parse)."""
    return [v for v in split_unescaped(raw, ",") if v != ""]


def _int(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise incorrect(f"{name} must be a non-negative integer, got {raw!r}", name)
    return int(raw)


def _filter(rt: str, name: str, raw: str, strict: bool, ignored: list[str]) -> Filter | None:
    reg = registry()
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) != 4:
            raise incorrect(f"{name}: expected _has:Type:reference:parameter", name)
        _, source, ref_code, rest = parts
        if not load().is_resource_type(source):
            raise incorrect(f"{name}: unknown resource type {source!r}", name)
        ref = reg.get(source, ref_code)
        if ref is None or ref.type != "reference":
            raise incorrect(f"{name}: {source} has no reference parameter {ref_code!r}", name)
        inner = _filter(source, rest, raw, True, ignored)
        assert inner is not None
        return Filter(rt, "_has", None, None, [], has=Has(source, ref_code, inner))
    head, dot, tail = name.partition(".")
    code, _, modifier = head.partition(":")
    modifier = modifier or None
    if code in ("_id", "_lastUpdated"):
        return Filter(rt, code, None, modifier, split_values(raw))
    param = reg.get(rt, code)
    if param is None:
        if strict:
            raise incorrect(f"Unknown search parameter {code!r} for {rt}", name, "not-supported")
        ignored.append(name)
        return None
    if dot:
        if param.type != "reference":
            raise incorrect(f"{code} is not a reference parameter and cannot be chained", name)
        types = (modifier,) if modifier else param.targets
        inner_code = tail.partition(".")[0].partition(":")[0]
        usable = [t for t in types if inner_code in ("_id", "_lastUpdated") or reg.get(t, inner_code)]
        if not usable:
            raise incorrect(f"No target of {code} has a search parameter {inner_code!r}", name)
        chain = [f for t in usable if (f := _filter(t, tail, raw, True, ignored)) is not None]
        return Filter(rt, code, param, None, [], chain=chain)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise incorrect(f"{name} must be true or false", name)
        return Filter(rt, code, param, modifier, [raw])
    values = split_values(raw)
    if not values:
        raise incorrect(f"Search parameter {name} has no value", name)
    return Filter(rt, code, param, modifier, values)


def _includes(rt: str, raw: str, name: str, reverse: bool) -> Include:
    parts = raw.split(":")
    if raw == "*":
        return Include(rt, "*", None, name.endswith(":iterate"))
    if len(parts) not in (2, 3):
        raise incorrect(f"{name}={raw}: expected Type:parameter[:targetType]", name)
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not load().is_resource_type(source):
        raise incorrect(f"{name}: unknown resource type {source!r}", name)
    if code != "*":
        param = registry().get(source, code)
        if param is None or param.type != "reference":
            raise incorrect(f"{name}: {source} has no reference parameter {code!r}", name)
    iterate = name.endswith(":iterate") or name.endswith(":recurse")
    if not reverse and not iterate and source != rt:
        raise incorrect(f"{name}={raw}: the source type must be {rt} (or use :iterate)", name)
    return Include(source, code, target, iterate)


def parse(
    rt: str,
    params: list[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = 50,
    max_count: int = 1000,
    pageable: bool = True,
) -> Query:
    q = Query(rt, count=default_count, pageable=pageable)
    for name, raw in params:
        if name == "_sort":
            for key in raw.split(","):
                desc = key.startswith("-")
                code = key.lstrip("-")
                if code not in ("_id", "_lastUpdated") and registry().get(rt, code) is None:
                    raise incorrect(f"Cannot sort by unknown parameter {code!r}", "_sort")
                if code and registry().get(rt, code) and registry().get(rt, code).type == "composite":
                    raise incorrect(f"Cannot sort by composite parameter {code!r}", "_sort")
                q.sort.append((code, desc))
        elif name == "_count":
            q.count = min(_int(name, raw), max_count)
        elif name == "_offset":
            q.offset = _int(name, raw)
        elif name == "_total":
            if raw not in TOTAL_MODES:
                raise incorrect(f"_total must be one of {sorted(TOTAL_MODES)}", name)
            q.total = raw
        elif name == "_summary":
            if raw not in SUMMARY_MODES:
                raise incorrect(f"_summary must be one of {sorted(SUMMARY_MODES)}", name)
            q.summary = raw
        elif name == "_elements":
            q.elements = [e.strip() for e in raw.split(",") if e.strip()]
        elif name.startswith("_include"):
            q.includes.append(_includes(rt, raw, name, reverse=False))
        elif name.startswith("_revinclude"):
            q.revincludes.append(_includes(rt, raw, name, reverse=True))
        elif name == "_cursor":
            q.cursor = raw
        elif name == "_snapshot":
            q.snapshot = raw
        elif name in RESULT_PARAMS:
            continue
        else:
            f = _filter(rt, name, raw, strict, q.ignored)
            if f is not None:
                q.filters.append(f)
    return q
