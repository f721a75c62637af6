"""Turns a parsed search :class:`Query` into SQL over the index tables (SQLAlchemy Core).

Each filter is ``resource.id IN (SELECT resource_id FROM idx_<type> WHERE code = ... AND <value
condition>)``; the planner can then start from the most selective index. Chains nest a subquery
on the referenced type; ``_has`` nests one on the referring type.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from sqlalchemy import Boolean, and_, false, func, literal, not_, or_, select, true, union_all
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from telemed.db.schema import INDEX_TABLES
from telemed.db.schema import resource as t_resource
from telemed.fhir.definitions import load
from telemed.fhir.search.query import Filter, Query
from telemed.fhir.search.types import composite, date, number, quantity, reference, string, token, uri
from telemed.fhir.search.types._common import normalise, split_unescaped, unescape
from telemed.fhir.store import access, protect
from telemed.fhir.store.context import AccessContext


class InList(ColumnElement):
    """``column IN (subquery)``; on PostgreSQL ``column = ANY(ARRAY(subquery))``: the subquery is
    then computed once (an InitPlan) and its ids looked up in the index, instead of being joined
    in. A chain nests such sets (``subject:Patient.general-practitioner.name``), and joined in,
    a young table's missing statistics (one row assumed) turned them into nested loops over every
    row of each level: seconds for a hundred rows."""

    inherit_cache = True
    _traverse_internals = [  # part of the statement's cache key, and its parameters are found
        ("column", InternalTraversal.dp_clauseelement),
        ("subquery", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column, subquery):
        self.column, self.subquery = column, subquery
        self.type = Boolean()


@compiles(InList)
def _in_list(element, compiler, **kw):
    return compiler.process(element.column.in_(element.subquery), **kw)


@compiles(InList, "postgresql")
def _in_list_pg(element, compiler, **kw):
    column = compiler.process(element.column, **kw)
    return f"{column} = ANY(ARRAY({compiler.process(element.subquery, asfrom=False, **kw)}))"


CONDITIONS = {
    "string": string.condition,
    "token": token.condition,
    "date": date.condition,
    "number": number.condition,
    "quantity": quantity.condition,
    "uri": uri.condition,
}
SORT_COLUMNS = {
    "string": string.sort_column,
    "token": token.sort_column,
    "reference": reference.sort_column,
    "date": date.sort_column,
    "number": number.sort_column,
    "quantity": quantity.sort_column,
    "uri": uri.sort_column,
}


def _in_index(res, rt: str, table, code: str, cond: ColumnElement, probe: bool = False) -> ColumnElement:
    """``id IN (matching index rows)``; or, as a *probe*, a per-row lookup that the planner cannot
    turn into a hash of every matching row. Range conditions (``date=ge2025``) match much of a
    table: once an equality filter has picked a few rows, probing those is far cheaper."""
    if probe:
        sub = (
            select(literal(1))
            .where(table.c.resource_type == rt, table.c.resource_id == res.c.id, table.c.code == code, cond)
            .limit(1)
            .scalar_subquery()
        )
        return sub.is_not(None)
    sub = select(table.c.resource_id).where(table.c.resource_type == rt, table.c.code == code, cond)
    return res.c.id.in_(sub)


def is_selective(f: Filter) -> bool:
    """Equality on a token, reference or uri, a string prefix (an index range: migration 0013 on
    PostgreSQL), a chain, ``_has`` or ``_id``: usually few matches, found from an index."""
    if f.code == "_id" or f.has is not None or f.chain:
        return True
    if f.param is not None and f.param.type == "string":
        return f.modifier in (None, "exact")
    return f.param is not None and f.param.type in ("token", "reference", "uri") and f.modifier in (None, "identifier")


def _value_condition(f: Filter, table, value: str, base_url: str, cipher=None) -> ColumnElement:
    p = f.param
    if cipher is not None and f.resource_type in protect.PROTECTED_TYPES and f.code in protect.SENSITIVE_PARAMS:
        return _blind_condition(f, table, value, base_url, cipher)
    if p.type == "reference":
        return reference.condition(table, value, f.modifier, f.code, base_url, p.targets)
    if p.type == "composite":
        return composite.condition(table, value, f.modifier, f.code, p.components)
    return CONDITIONS[p.type](table, value, f.modifier, f.code)


def _blind_condition(f: Filter, table, value: str, base_url: str, cipher) -> ColumnElement:
    """Sensitive values are indexed only as blind indexes: match those exactly, or the clear ones."""
    clear = CONDITIONS[f.param.type](table, value, f.modifier, f.code)
    if f.param.type == "token" and f.modifier is None:
        code = unescape(split_unescaped(value, "|", 1)[-1])
        return or_(clear, table.c.value == cipher.blind(code))
    if f.param.type == "string" and f.modifier in (None, "exact"):
        return or_(clear, table.c.value == cipher.blind(normalise(unescape(value))))
    return clear


def filter_clause(res, f: Filter, base_url: str, cipher=None, probe: bool = False) -> ColumnElement:
    rt = f.resource_type
    if f.has is not None:
        h = f.has
        ref = INDEX_TABLES["reference"].alias()
        src = t_resource.alias()
        sources = select(src.c.id).where(
            src.c.resource_type == h.source_type, src.c.deleted.is_(False), filter_clause(src, h.inner, base_url)
        )
        sub = select(ref.c.target_id).where(
            ref.c.resource_type == h.source_type,
            ref.c.code == h.reference_code,
            ref.c.target_type == rt,
            ref.c.resource_id.in_(sources),
        )
        return res.c.id.in_(sub)
    if f.code == "_id":
        cond = res.c.id.in_(f.values)
        return not_(cond) if f.modifier == "not" else cond
    if f.code == "_lastUpdated":
        col = SimpleNamespace(c=SimpleNamespace(low=res.c.last_updated, high=res.c.last_updated))
        return or_(*[date.condition(col, v, f.modifier, "_lastUpdated") for v in f.values])
    p = f.param
    if f.chain:
        # One branch per target type, UNION ALL: an OR of per-type IN lists would be checked on
        # every reference row of the parameter, where each branch can start from its own index.
        branches = []
        for inner in f.chain:
            ref = INDEX_TABLES["reference"].alias()
            target = t_resource.alias()
            matches = select(target.c.id).where(
                target.c.resource_type == inner.resource_type,
                target.c.deleted.is_(False),
                filter_clause(target, inner, base_url),
            )
            branches.append(
                select(ref.c.resource_id).where(
                    ref.c.resource_type == rt,
                    ref.c.code == f.code,
                    ref.c.target_type == inner.resource_type,
                    InList(ref.c.target_id, matches),
                )
            )
        return res.c.id.in_(branches[0] if len(branches) == 1 else union_all(*branches))
    if f.modifier == "missing":
        table = INDEX_TABLES[p.type].alias()
        present = _in_index(res, rt, table, f.code, true())
        return not_(present) if f.values[0] == "true" else present
    if p.type == "reference" and f.modifier == "identifier":
        table = INDEX_TABLES["token"].alias()
        conds = [token.condition(table, v, None, f.code) for v in f.values]
        return _in_index(res, rt, table, f.code + ":identifier", or_(*conds))
    if p.type == "token" and f.modifier == "of-type":
        table = INDEX_TABLES["token"].alias()
        conds = [token.condition(table, v, "of-type", f.code) for v in f.values]
        return _in_index(res, rt, table, f.code + ":of-type", or_(*conds))
    table = INDEX_TABLES[p.type].alias()
    conds = [_value_condition(f, table, v, base_url, cipher) for v in f.values]
    found = _in_index(res, rt, table, f.code, or_(*conds) if conds else false(), probe)
    if p.type == "token" and f.modifier == "not":
        return not_(found)
    return found


def compartment_clause(res, rt: str, compartment: tuple[str, str]) -> ColumnElement:
    """Membership in a Patient compartment (R4 §3.1.1.3 / CompartmentDefinition patient)."""
    ctype, cid = compartment
    codes = load().patient_compartment.get(rt, [])
    clauses = []
    if rt == ctype:
        clauses.append(res.c.id == cid)
    codes = [c for c in codes if c != "{def}"]
    if codes:
        ref = INDEX_TABLES["reference"].alias()
        sub = select(ref.c.resource_id).where(
            ref.c.resource_type == rt, ref.c.code.in_(codes), ref.c.target_type == ctype, ref.c.target_id == cid
        )
        clauses.append(res.c.id.in_(sub))
    return or_(*clauses) if clauses else false()


def base_select(
    q: Query, base_url: str, res=None, ctx: AccessContext | None = None, now: datetime | None = None, cipher=None
):
    """The resource table (or ``res``) and the WHERE conditions of ``q``, limited to what ``ctx``
    may see (the access rules of :mod:`telemed.fhir.store.access`)."""
    res = res if res is not None else t_resource
    conds = [res.c.resource_type == q.resource_type, res.c.deleted.is_(False)]
    if ctx is not None:
        limit = access.visibility(res, q.resource_type, ctx, now)
        if limit is not None:
            conds.append(limit)
    selective = any(is_selective(f) for f in q.filters)
    conds += [filter_clause(res, f, base_url, cipher, probe=selective and not is_selective(f)) for f in q.filters]
    if q.compartment is not None:
        conds.append(compartment_clause(res, q.resource_type, q.compartment))
    return res, conds


def _sort_key(res, rt: str, code: str, desc: bool):
    """One ``_sort`` key as a correlated aggregate (a resource with several values sorts by its
    largest when descending, its smallest when ascending)."""
    from telemed.fhir.search.registry import registry

    if code == "_id":
        return res.c.id
    if code == "_lastUpdated":
        return res.c.last_updated
    p = registry().get(rt, code)
    table = INDEX_TABLES[p.type].alias()
    agg = func.max if desc else func.min
    return (
        select(agg(SORT_COLUMNS[p.type](table)))
        .where(table.c.resource_type == rt, table.c.resource_id == res.c.id, table.c.code == code)
        .scalar_subquery()
    )


def _ordered(col, desc: bool):
    return col.desc().nulls_last() if desc else col.asc().nulls_last()


def sort_columns(res, q: Query) -> list:
    out = [_ordered(_sort_key(res, q.resource_type, code, desc), desc) for code, desc in q.sort]
    out.append(res.c.id.asc())
    return out


def sorted_statements(res, conds: list, q: Query):
    """The statements of a sorted search (R4 §3.1.1.5.3): ``(valued, unvalued)``.

    When the first ``_sort`` key is a search parameter, ``valued`` JOINs its index rows and orders
    by the indexed value itself, so PostgreSQL can walk the index (backwards for a descending key)
    and stop after the page instead of computing an aggregate for every match; it returns
    ``(id, value)`` rows, a resource once per value: the caller keeps each id's first row, which
    is its largest value when descending and its smallest when ascending, as the aggregate would
    give. ``unvalued`` then lists the matches without a value for that key (sorted last). When the
    first key is ``_id`` or ``_lastUpdated``, ``valued`` is the whole ordered search and
    ``unvalued`` is None.
    """
    from telemed.fhir.search.registry import registry

    rt = q.resource_type
    (code, desc), rest = q.sort[0], q.sort[1:]
    tail = [_ordered(_sort_key(res, rt, c, d), d) for c, d in rest] + [res.c.id.asc()]
    if code in ("_id", "_lastUpdated"):
        return select(res.c.id).where(*conds).order_by(*sort_columns(res, q)), None
    p = registry().get(rt, code)
    table = INDEX_TABLES[p.type].alias()
    col = SORT_COLUMNS[p.type](table)
    on = and_(table.c.resource_type == rt, table.c.resource_id == res.c.id, table.c.code == code)
    valued = (
        select(res.c.id, col)
        .select_from(res.join(table, on))
        .where(*conds, col.is_not(None))
        .order_by(col.desc() if desc else col.asc(), *tail)
    )
    has_value = select(literal(1)).where(on, col.is_not(None)).exists()
    unvalued = select(res.c.id).where(*conds, not_(has_value)).order_by(*tail)
    return valued, unvalued
