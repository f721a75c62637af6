"""Bundles that list resources: search results (R4 §3.1.1, ``searchset``) and history (R4 §3.1.0.9).

Links are absolute and repeat the request's own parameters, so a client follows ``next`` without
knowing how paging works. History pages by a ``_cursor`` (a position in the version log), so new
writes never shift or duplicate entries of later pages.
"""

from __future__ import annotations

from urllib.parse import urlencode

from telemed.fhir.rest import shaping
from telemed.fhir.rest.request import FhirRequest, FhirResponse, http_date
from telemed.fhir.search import query
from telemed.fhir.store import protect, searching
from telemed.fhir.store.repository import Repository
from telemed.kernel.clock import fhir_instant, parse_fhir_datetime
from telemed.kernel.errors import incorrect

DEFAULT_COUNT = 50
MAX_COUNT = 1000


def _link(req: FhirRequest, path: str, params: list[tuple[str, str]]) -> str:
    qs = urlencode(params)
    return (f"{req.base_url}/{path}" if path else req.base_url) + (f"?{qs}" if qs else "")


def _count(req: FhirRequest) -> int:
    for name, value in req.params:
        if name == "_count":
            if not value.isdigit():
                raise incorrect(f"_count must be a non-negative integer, got {value!r}", "_count")
            return min(int(value), MAX_COUNT)
    return DEFAULT_COUNT


def search(
    repo: Repository, req: FhirRequest, rtype: str, path: str, compartment: tuple[str, str] | None = None
) -> FhirResponse:
    strict = "handling=strict" in (req.header("prefer") or "")
    repo.before_search()
    q = query.parse(rtype, req.params, strict=strict, default_count=DEFAULT_COUNT, max_count=MAX_COUNT)
    q.compartment = compartment
    result = searching.search(repo, q, req.base_url)
    kept = [
        (k, v) for k, v in req.params if k not in ("_cursor", "_snapshot", "_offset", "_format", "_pretty", *q.ignored)
    ]
    used = [(k, v) for k, v in req.params if k not in q.ignored]  # R4: self shows only what was used
    links = [{"relation": "self", "url": _link(req, path, used)}]
    if result.next_params:
        links.append({"relation": "next", "url": _link(req, path, kept + result.next_params)})
    if q.snapshot and q.offset > 0:
        prev = [("_snapshot", q.snapshot), ("_offset", str(max(0, q.offset - q.count)))]
        links.append({"relation": "previous", "url": _link(req, path, kept + prev)})
    if q.cursor or q.snapshot and q.offset > 0:
        links.append({"relation": "first", "url": _link(req, path, kept)})
    entries = [_entry(req, s.resource, "match", q) for s in result.matches]
    entries += [_entry(req, s.resource, "include", q) for s in result.included]
    bundle: dict = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    warnings = [f"Unknown search parameter {name!r} was ignored" for name in q.ignored] + result.warnings
    if warnings:
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "warning", "code": "not-supported", "diagnostics": w} for w in warnings],
        }
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, bundle, {}, "search-type" if compartment is None else "search-compartment")


def system_search(repo: Repository, req: FhirRequest) -> FhirResponse:
    """Search across types (R4 §3.1.1.2): ``GET [base]?_type=A,B&...`` with parameters every listed
    type defines (``_id``, ``_lastUpdated``, ``_tag``, ``_profile``, ``_security``, ``_source``, or a
    parameter such as ``name`` that all of them share)."""
    defs = repo.validator.defs
    params = [(k, v) for k, v in req.params if k != "_type"]
    types = sorted(defs.resource_types)
    for name, value in req.params:
        if name == "_type":
            types = sorted({t.strip() for t in value.split(",") if t.strip()})
            unknown = [t for t in types if not defs.is_resource_type(t)]
            if unknown:
                raise incorrect(f"_type: unknown resource types {unknown}", "_type")
    strict = "handling=strict" in (req.header("prefer") or "")
    queries = [query.parse(rt, params, strict=True if len(types) > 1 else strict) for rt in types]
    count = queries[0].count if queries else DEFAULT_COUNT
    cursor = next((v for k, v in req.params if k == "_cursor"), None)
    page, next_cursor = searching.search_types(repo, queries, req.base_url, count, cursor)
    kept = [(k, v) for k, v in req.params if k not in ("_cursor", "_format", "_pretty")]
    links = [{"relation": "self", "url": _link(req, "", req.params)}]
    if next_cursor:
        links.append({"relation": "next", "url": _link(req, "", kept + [("_cursor", next_cursor)])})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if page:
        bundle["entry"] = [_entry(req, s.resource, "match", queries[0]) for s in page]
    return FhirResponse(200, bundle, {}, "search-system")


def _entry(req: FhirRequest, resource: dict, mode: str, q: query.Query) -> dict:
    shaped = shaping.elements(shaping.summary(protect.mask(resource), q.summary), q.elements)
    return {
        "fullUrl": f"{req.base_url}/{resource['resourceType']}/{resource['id']}",
        "resource": shaped,
        "search": {"mode": mode},
    }


def history(repo: Repository, req: FhirRequest, rtype: str | None, id_: str | None, path: str) -> FhirResponse:
    since = cursor = None
    for name, value in req.params:
        try:
            if name == "_since":
                since = parse_fhir_datetime(value)
            elif name == "_cursor":
                cursor = int(value)
        except ValueError:
            raise incorrect(f"Invalid {name} value {value!r}", name) from None
    count = _count(req)
    entries = repo.history(rtype, id_, since=since, before_seq=cursor, count=count)
    links = [{"relation": "self", "url": _link(req, path, req.params)}]
    if len(entries) == count and entries:
        kept = [(k, v) for k, v in req.params if k != "_cursor"]
        links.append({"relation": "next", "url": _link(req, path, kept + [("_cursor", str(entries[-1].seq))])})
    out = []
    for e in entries:
        url = f"{e.resource_type}/{e.id}"
        entry: dict = {"fullUrl": f"{req.base_url}/{url}"}
        if e.resource is not None:
            entry["resource"] = e.resource
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(e.method, "200 OK")
        entry["request"] = {"method": e.method, "url": e.resource_type if e.method == "POST" else url}
        entry["response"] = {
            "status": status,
            "etag": f'W/"{e.version_id}"',
            "lastModified": fhir_instant(e.last_updated),
        }
        out.append(entry)
    bundle = {"resourceType": "Bundle", "type": "history", "link": links}
    if out:
        bundle["entry"] = out
    interaction = "history-instance" if id_ else "history-type" if rtype else "history-system"
    headers = {"Last-Modified": http_date(entries[0].last_updated)} if entries else {}
    return FhirResponse(200, bundle, headers, interaction)
