"""Bundles that list resources: search results (R4 §3.1.1, ``searchset``) and history (R4 §3.1.0.9).

Links are absolute and repeat the request's own parameters, so a client follows ``next`` without
knowing how paging works. History pages by a ``_cursor`` (a position in the version log), so new
writes never shift or duplicate entries of later pages.
"""

from __future__ import annotations

from urllib.parse import urlencode

from telemed.fhir.rest.request import FhirRequest, FhirResponse, http_date
from telemed.fhir.search import criteria
from telemed.fhir.store.repository import Repository
from telemed.kernel.clock import fhir_instant, parse_fhir_datetime
from telemed.kernel.errors import incorrect

DEFAULT_COUNT = 50
MAX_COUNT = 1000


def _link(req: FhirRequest, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{req.base_url}/{path}" + (f"?{query}" if query else "")


def _count(req: FhirRequest) -> int:
    for name, value in req.params:
        if name == "_count":
            if not value.isdigit():
                raise incorrect(f"_count must be a non-negative integer, got {value!r}", "_count")
            return min(int(value), MAX_COUNT)
    return DEFAULT_COUNT


def search(repo: Repository, req: FhirRequest, rtype: str, path: str) -> FhirResponse:
    c = criteria.parse(req.params, MAX_COUNT)
    count = c.count if c.count is not None else DEFAULT_COUNT
    page, total = repo.search(rtype, c, count)
    kept = [(k, v) for k, v in req.params if k not in ("_offset", "_format", "_pretty")]
    links = [{"relation": "self", "url": _link(req, path, req.params)}]
    if not c.summary_count and c.offset + count < total:
        links.append({"relation": "next", "url": _link(req, path, kept + [("_offset", str(c.offset + count))])})
    if c.offset > 0:
        prev = max(0, c.offset - count)
        links.append({"relation": "previous", "url": _link(req, path, kept + [("_offset", str(prev))])})
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{req.base_url}/{s.resource['resourceType']}/{s.resource['id']}",
                "resource": s.resource,
                "search": {"mode": "match"},
            }
            for s in page
        ],
    }
    if not bundle["entry"]:
        del bundle["entry"]
    return FhirResponse(200, bundle, {}, "search-type")


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
