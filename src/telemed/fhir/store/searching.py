"""Executing searches (R4 §3.1.1): matches, paging, totals and ``_include``/``_revinclude``.

Paging stays consistent while data changes (no duplicates, no gaps):
- without ``_sort``, results are ordered by id and pages continue after the last id seen
  (``_cursor``); writes never move a resource across the cursor;
- with ``_sort``, the first page stores the ordered ids of the first ``SNAPSHOT_FIRST`` matches
  (at least a page) and later pages read from that list (``_snapshot``), so re-sorting by changed
  values cannot shift them. Reading past it, the rest (up to ``SNAPSHOT_CAP`` in all) is ordered
  once, at that moment, leaving out the ids already listed, and stored too: no resource is
  returned twice, none that still matches is missed, and only the order across that boundary may
  reflect changes made in between. Computing the whole list on the first page would cost a
  walk over thousands of index rows for a page of 20 (a code alone, at a million Observations).

``Bundle.total`` (R4 §3.1.1.5.2 ``_total``, which leaves the default to the server): without
``_total`` it is given when known without counting (the whole result fits on the page, or the
sorted list is complete), never by a count of every match; ``_total=estimate`` counts up to
``COUNT_CAP`` (and omits the total beyond); ``_total=accurate`` counts exactly; ``_total=none``
omits it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, delete, func, insert, or_, select, update

from telemed.db.schema import INDEX_TABLES, search_snapshot
from telemed.db.schema import resource as t_resource
from telemed.fhir.search.query import Include, Query
from telemed.fhir.search.registry import registry
from telemed.fhir.store import access, search_sql
from telemed.fhir.store.repository import Repository, Stored
from telemed.kernel.errors import Category, TelemedError

SNAPSHOT_CAP = 2_000  # sorted results pageable through a snapshot; beyond it the search must narrow
SNAPSHOT_FIRST = 50  # sorted matches ordered and stored by the first page (or one page, if larger)
PARTIAL = -2  # search_snapshot.total of a list holding only the first page's part (-1: beyond the cap)
COUNT_CAP = 10_000
INCLUDE_DEPTH = 4
SNAPSHOT_TTL = timedelta(hours=1)


@dataclass
class SearchResult:
    matches: list[Stored]
    total: int | None
    next_params: list[tuple[str, str]] | None = None
    included: list[Stored] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _load(repo: Repository, rows) -> list[Stored]:
    return [Stored(repo._load(r.content, r.has_blobs), r.version_id, r.last_updated) for r in rows]


def _fetch_ordered(repo: Repository, rt: str, ids: list[str]) -> list[Stored]:
    """Resources by id in the given order, skipping deleted ones and those the caller may not see
    (so ``_include`` and snapshot pages never leak)."""
    if not ids:
        return []
    conds = [t_resource.c.resource_type == rt, t_resource.c.id.in_(ids), t_resource.c.deleted.is_(False)]
    limit = access.visibility(t_resource, rt, repo.context, repo.clock.now())
    if limit is not None:
        conds.append(limit)
    rows = repo.conn.execute(select(t_resource).where(*conds)).all()
    by_id = {r.id: r for r in rows}
    return _load(repo, [by_id[i] for i in ids if i in by_id])


def _count(repo: Repository, q: Query, base_url: str, cap: int | None) -> int:
    res, conds = search_sql.base_select(q, base_url, None, repo.context, repo.clock.now(), repo.cipher)
    inner = select(res.c.id).where(*conds)
    if cap is not None:
        inner = inner.limit(cap + 1)
    return repo.conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one()


def find_ids(repo: Repository, q: Query, base_url: str = "", limit: int | None = None) -> list[str]:
    repo.flush()
    repo._check_type(q.resource_type)
    repo.context.require(q.resource_type, "read")
    res, conds = search_sql.base_select(q, base_url, None, repo.context, repo.clock.now(), repo.cipher)
    stmt = select(res.c.id).where(*conds).order_by(res.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [r.id for r in repo.conn.execute(stmt)]


def search(repo: Repository, q: Query, base_url: str) -> SearchResult:
    repo.flush()
    repo._check_type(q.resource_type)
    repo.context.require(q.resource_type, "read")
    if repo.conn.dialect.name == "postgresql":
        # A page is a few index walks that stop early: parallel workers only add their start-up
        # (and overshoot the LIMIT) while other requests want the cores. For this transaction only.
        repo.conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
    if q.summary == "count":
        return SearchResult([], _count(repo, q, base_url, None))
    if q.sort:
        result = _sorted_page(repo, q, base_url)
    else:
        result = _keyset_page(repo, q, base_url)
    if q.total in ("estimate", "accurate") and result.total is None:
        cap = None if q.total == "accurate" else COUNT_CAP
        n = _count(repo, q, base_url, cap)
        result.total = n if cap is None or n <= cap else None
    elif q.total == "none":
        result.total = None
    if q.includes or q.revincludes:
        result.included = _includes(repo, q, result.matches)
    return result


def _keyset_page(repo: Repository, q: Query, base_url: str) -> SearchResult:
    res, conds = search_sql.base_select(q, base_url, None, repo.context, repo.clock.now(), repo.cipher)
    if q.cursor:
        conds.append(res.c.id > q.cursor)
    # The ids first, then the page's resources: the search itself then runs on indexes alone
    # (index-only scans), and only the rows of the page are read from the resource table.
    stmt = select(res.c.id).where(*conds).order_by(res.c.id).limit(q.count + 1)
    ids = [r.id for r in repo.conn.execute(stmt)] if q.count else []
    more = len(ids) > q.count
    page = _fetch_ordered(repo, q.resource_type, ids[: q.count])
    result = SearchResult(page, None)
    if more:
        result.next_params = [("_cursor", ids[q.count - 1])]
    elif not q.cursor and q.count and len(page) == len(ids):
        result.total = len(page)  # the whole result fits on this page: exact without counting
    return result


def _sorted_ids(repo: Repository, q: Query, base_url: str, limit: int) -> tuple[list[str], bool]:
    """The first ``limit`` ids of the sorted search, and whether more match."""
    res, conds = search_sql.base_select(q, base_url, None, repo.context, repo.clock.now(), repo.cipher)
    valued, unvalued = search_sql.sorted_statements(res, conds, q)
    if unvalued is None:
        ids = [r.id for r in repo.conn.execute(valued.limit(limit + 1))]
        return ids[:limit], len(ids) > limit
    fetch = limit + 1
    while True:  # a resource comes once per value of the key: its first row is its place
        rows = repo.conn.execute(valued.limit(fetch)).all()
        ids = list(dict.fromkeys(r[0] for r in rows))
        if len(ids) > limit or len(rows) < fetch:
            break
        fetch *= 2
    if len(ids) <= limit:
        ids += [r.id for r in repo.conn.execute(unvalued.limit(limit + 1 - len(ids)))]
    return ids[:limit], len(ids) > limit


def _sorted_page(repo: Repository, q: Query, base_url: str) -> SearchResult:
    partial = False
    if q.snapshot:
        snap = repo.conn.execute(select(search_snapshot).where(search_snapshot.c.id == q.snapshot)).first()
        if snap is None:
            raise TelemedError(Category.GONE, "This search page has expired; run the search again")
        ids, total, partial = list(snap.ids), (snap.total if snap.total >= 0 else None), snap.total == PARTIAL
        if partial and q.offset + q.count > len(ids):
            ids, total, partial = _complete_snapshot(repo, q, base_url, ids)
    else:
        first = q.count if not q.pageable else min(SNAPSHOT_CAP, max(SNAPSHOT_FIRST, q.count))
        ids, more = _sorted_ids(repo, q, base_url, first)
        partial = more and first < SNAPSHOT_CAP
        total = None if more else len(ids)
        if (len(ids) > q.count or more) and q.pageable:
            q.snapshot = _store_snapshot(repo, ids, PARTIAL if partial else total)
    page_ids = ids[q.offset : q.offset + q.count]
    result = SearchResult(_fetch_ordered(repo, q.resource_type, page_ids), total)
    if q.snapshot and (q.offset + q.count < len(ids) or partial):
        result.next_params = [("_snapshot", q.snapshot), ("_offset", str(q.offset + q.count))]
    if total is None and not partial and q.pageable:
        result.warnings.append(f"Sorted results are paged up to {SNAPSHOT_CAP}; narrow the search to see the rest")
    return result


def _complete_snapshot(
    repo: Repository, q: Query, base_url: str, listed: list[str]
) -> tuple[list[str], int | None, bool]:
    """Paging past the first page's part of a sorted list: order the rest now, without the ids
    already listed, and store the whole list (up to ``SNAPSHOT_CAP``)."""
    ids, more = _sorted_ids(repo, q, base_url, SNAPSHOT_CAP + len(listed))
    seen = set(listed)
    ids = listed + [i for i in ids if i not in seen]
    more = more or len(ids) > SNAPSHOT_CAP
    ids = ids[:SNAPSHOT_CAP]
    total = None if more else len(ids)
    repo.conn.execute(
        update(search_snapshot).where(search_snapshot.c.id == q.snapshot).values(ids=ids, total=-1 if more else total)
    )
    return ids, total, False


def _store_snapshot(repo: Repository, ids: list[str], total: int | None) -> str:
    now = repo.clock.now()
    sid = uuid.uuid4().hex
    repo.conn.execute(delete(search_snapshot).where(search_snapshot.c.created < now - SNAPSHOT_TTL))
    repo.conn.execute(
        insert(search_snapshot).values(id=sid, created=now, total=-1 if total is None else total, ids=ids)
    )
    return sid


def _reference_codes(source_type: str, code: str) -> list[str]:
    if code != "*":
        return [code]
    return [c for c, p in registry().params(source_type).items() if p.type == "reference"]


def _includes(repo: Repository, q: Query, matches: list[Stored]) -> list[Stored]:
    """``_include`` / ``_revinclude`` (R4 §3.1.1.5.4), iterating over included resources as asked."""
    ref = INDEX_TABLES["reference"]
    seen = {(s.resource["resourceType"], s.resource["id"]) for s in matches}
    frontier = list(seen)
    included: list[Stored] = []
    for depth in range(INCLUDE_DEPTH):
        wanted: set[tuple[str, str]] = set()
        for inc in q.includes:
            if depth > 0 and not inc.iterate:
                continue
            sources = [i for t, i in frontier if t == inc.source_type]
            if sources:
                wanted |= _forward(repo, ref, inc, sources)
        for inc in q.revincludes:
            if depth > 0 and not inc.iterate:
                continue
            wanted |= _reverse(repo, ref, inc, frontier)
        new = [key for key in wanted if key not in seen]
        if not new:
            break
        frontier = []
        by_type: dict[str, list[str]] = {}
        for t, i in new:
            by_type.setdefault(t, []).append(i)
        for t, ids in sorted(by_type.items()):
            if not repo.validator.defs.is_resource_type(t):
                continue
            for stored in _fetch_ordered(repo, t, sorted(ids)):
                key = (t, stored.resource["id"])
                seen.add(key)
                frontier.append(key)
                included.append(stored)
    return included


def _forward(repo: Repository, ref, inc: Include, source_ids: list[str]) -> set[tuple[str, str]]:
    conds = [
        ref.c.resource_type == inc.source_type,
        ref.c.resource_id.in_(source_ids),
        ref.c.code.in_(_reference_codes(inc.source_type, inc.code)),
        ref.c.target_id.is_not(None),
    ]
    if inc.target_type:
        conds.append(ref.c.target_type == inc.target_type)
    return {
        (r.target_type, r.target_id)
        for r in repo.conn.execute(select(ref.c.target_type, ref.c.target_id).where(*conds))
    }


def _reverse(repo: Repository, ref, inc: Include, targets: list[tuple[str, str]]) -> set[tuple[str, str]]:
    if not targets:
        return set()
    if inc.code == "*":
        codes = _reference_codes(inc.source_type, "*")
    else:
        codes = [inc.code]
    conds = [
        ref.c.resource_type == inc.source_type,
        ref.c.code.in_(codes),
        or_(
            *[
                and_(ref.c.target_type == t, ref.c.target_id.in_([i for tt, i in targets if tt == t]))
                for t in {t for t, _ in targets}
            ]
        ),
    ]
    return {(inc.source_type, r.resource_id) for r in repo.conn.execute(select(ref.c.resource_id).where(*conds))}


def search_types(
    repo: Repository, queries: list[Query], base_url: str, count: int, cursor: str | None
) -> tuple[list[Stored], str | None]:
    """One page over several resource types, ordered by (type, id); the cursor is ``Type/id``.

    Used by system-level search with ``_type`` (R4 §3.1.1.2) and by ``Patient/$everything``.
    """
    repo.flush()
    after_type, _, after_id = (cursor or "").partition("/")
    page: list[Stored] = []
    for q in sorted(queries, key=lambda q: q.resource_type):
        rt = q.resource_type
        if cursor and rt < after_type:
            continue
        repo.context.require(rt, "read")
        res, conds = search_sql.base_select(q, base_url, None, repo.context, repo.clock.now(), repo.cipher)
        if cursor and rt == after_type:
            conds.append(res.c.id > after_id)
        rows = repo.conn.execute(select(res).where(*conds).order_by(res.c.id).limit(count + 1 - len(page))).all()
        page.extend(_load(repo, rows))
        if len(page) > count:
            break
    more = len(page) > count
    page = page[:count]
    if more and page:
        last = page[-1].resource
        return page, f"{last['resourceType']}/{last['id']}"
    return page, None
