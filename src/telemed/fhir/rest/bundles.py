"""Batch and transaction Bundles (R4 §3.1.0.11).

``transaction``: all entries succeed or none does (the caller's unit of work rolls back on the
first error). Entries run in the spec's order (DELETE, POST, PUT/PATCH, GET/HEAD, §3.1.0.11.2);
``urn:uuid:``/``urn:oid:`` fullUrls get their ids before anything is written, so references
between new resources are rewritten in one pass, and conditional references (``Patient?identifier=``)
are resolved to the single match.

``batch``: each entry runs in its own savepoint and gets its own status; one failure does not
affect the others.

Every entry goes back through :func:`telemed.fhir.rest.dispatch.dispatch`.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from telemed.fhir.rest.interactions import matching_ids
from telemed.fhir.rest.outcome import operation_outcome
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, Issue, TelemedError, incorrect

Dispatch = Callable[[Repository, FhirRequest], FhirResponse]
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
REASONS = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified"}


def _entry_request(entry: dict, index: int, base_url: str) -> FhirRequest:
    request = entry.get("request")
    if not isinstance(request, dict) or "method" not in request or "url" not in request:
        raise incorrect(f"Bundle.entry[{index}].request needs a method and a url", f"Bundle.entry[{index}].request")
    method = str(request["method"]).upper()
    if method not in ORDER:
        raise incorrect(f"Unsupported method {method!r}", f"Bundle.entry[{index}].request.method")
    url = str(request["url"])
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    parts = urlsplit(url)
    headers = {}
    for key, header in (("ifMatch", "if-match"), ("ifNoneExist", "if-none-exist"), ("ifNoneMatch", "if-none-match")):
        if key in request:
            headers[header] = str(request[key])
    return FhirRequest(
        method=method,
        path=parts.path.strip("/"),
        params=parse_qsl(parts.query, keep_blank_values=True),
        headers=headers,
        body=entry.get("resource"),
        base_url=base_url,
    )


def _response_entry(resp: FhirResponse, prefer_minimal: bool) -> dict:
    entry: dict = {}
    response: dict = {"status": f"{resp.status} {REASONS.get(resp.status, '')}".strip()}
    if "Location" in resp.headers:
        response["location"] = resp.headers["Location"]
    if "ETag" in resp.headers:
        response["etag"] = resp.headers["ETag"]
    r = resp.resource
    if r is not None and "meta" in r and "lastUpdated" in r["meta"]:
        response["lastModified"] = r["meta"]["lastUpdated"]
    if r is not None and r.get("resourceType") == "OperationOutcome":
        response["outcome"] = r
    elif r is not None and not prefer_minimal:
        entry["resource"] = r
        if "id" in r:
            entry["fullUrl"] = resp.headers.get("Location", "").split("/_history/")[0] or None
            if not entry["fullUrl"]:
                del entry["fullUrl"]
    entry["response"] = response
    return entry


def _error_entry(error: TelemedError) -> dict:
    status = error.category.status
    return {"response": {"status": str(status), "outcome": operation_outcome(error)}}


def _rewrite(node: object, mapping: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {k: _rewrite(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    if isinstance(node, str) and node in mapping:
        return mapping[node]
    return node


def _resolve_conditional_references(repo: Repository, node: object, expr: str) -> object:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and "?" in v and not v.startswith(("http", "urn:")):
                rtype, _, query = v.partition("?")
                ids = matching_ids(repo, rtype, parse_qsl(query, keep_blank_values=True), "reference", req_base(repo))
                if len(ids) != 1:
                    raise TelemedError(
                        Category.PRECONDITION_FAILED,
                        f"The conditional reference {v!r} matches {len(ids)} resources (exactly one is required)",
                        [Issue(f"Conditional reference matches {len(ids)}", "not-found", f"{expr}.reference")],
                    )
                out[k] = f"{rtype}/{ids[0]}"
            else:
                out[k] = _resolve_conditional_references(repo, v, expr)
        return out
    if isinstance(node, list):
        return [_resolve_conditional_references(repo, v, expr) for v in node]
    return node


def req_base(repo: Repository) -> str:
    return repo.base_url or ""


def _allocate_ids(repo: Repository, requests: list[FhirRequest], entries: list[dict]) -> dict[str, str]:
    """Map each ``urn:`` fullUrl to the ``Type/id`` its entry will have, before anything is written."""
    mapping: dict[str, str] = {}
    for i, (req, entry) in enumerate(zip(requests, entries, strict=True)):
        full_url = entry.get("fullUrl")
        if req.method == "POST":
            rtype = req.path
            condition = req.header("if-none-exist")
            existing = []
            if condition:
                existing = matching_ids(
                    repo, rtype, parse_qsl(condition.lstrip("?"), keep_blank_values=True), "create", req_base(repo)
                )
                if len(existing) > 1:
                    raise TelemedError(
                        Category.PRECONDITION_FAILED,
                        f"Bundle.entry[{i}]: ifNoneExist matches more than one {rtype}",
                    )
            if not existing:
                req.assigned_id = repo.ids()
            target = f"{rtype}/{existing[0] if existing else req.assigned_id}"
        elif req.method == "PUT" and req.params:
            rtype = req.path
            ids = matching_ids(repo, rtype, req.params, "update", req_base(repo))
            if len(ids) > 1:
                raise TelemedError(Category.PRECONDITION_FAILED, f"Bundle.entry[{i}]: criteria match more than one")
            if ids:
                target = f"{rtype}/{ids[0]}"
            else:
                req.assigned_id = repo.ids()
                target = f"{rtype}/{req.assigned_id}"
        elif req.method == "PUT":
            target = req.path
        else:
            continue
        if isinstance(full_url, str) and full_url.startswith(("urn:uuid:", "urn:oid:")):
            mapping[full_url] = target
    return mapping


def process(dispatch: Dispatch, repo: Repository, req: FhirRequest) -> FhirResponse:
    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise incorrect("POST to the base URL expects a Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise incorrect(f"Bundle.type must be 'batch' or 'transaction', not {kind!r}", "Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise incorrect("Bundle.entry must be an array", "Bundle.entry")
    prefer_minimal = "return=minimal" in (req.header("prefer") or "")
    if kind == "batch":
        return _batch(dispatch, repo, req, entries, prefer_minimal)
    return _transaction(dispatch, repo, req, entries, prefer_minimal)


def _batch(dispatch: Dispatch, repo: Repository, req: FhirRequest, entries: list, minimal: bool) -> FhirResponse:
    out = []
    for i, entry in enumerate(entries):
        try:
            with repo.conn.begin_nested():
                sub = _entry_request(entry if isinstance(entry, dict) else {}, i, req.base_url)
                if sub.path == "" and sub.method == "POST":
                    raise incorrect("A batch entry cannot itself be a Bundle submission", f"Bundle.entry[{i}]")
                out.append(_response_entry(dispatch(repo, sub), minimal))
        except TelemedError as exc:
            out.append(_error_entry(exc))
    return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": out}, {}, "batch")


def _transaction(dispatch: Dispatch, repo: Repository, req: FhirRequest, entries: list, minimal: bool) -> FhirResponse:
    requests = []
    seen_full_urls = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise incorrect(f"Bundle.entry[{i}] must be an object", f"Bundle.entry[{i}]")
        sub = _entry_request(entry, i, req.base_url)
        if sub.path == "":
            raise incorrect("A transaction entry cannot itself be a Bundle submission", f"Bundle.entry[{i}]")
        full_url = entry.get("fullUrl")
        if full_url:
            if full_url in seen_full_urls:
                raise incorrect(f"Duplicate fullUrl {full_url!r}", f"Bundle.entry[{i}].fullUrl")
            seen_full_urls.add(full_url)
        requests.append(sub)
    mapping = _allocate_ids(repo, requests, entries)
    for i, sub in enumerate(requests):
        if sub.body is not None:
            sub.body = _resolve_conditional_references(repo, _rewrite(sub.body, mapping), f"Bundle.entry[{i}].resource")
    results: list[dict | None] = [None] * len(requests)
    repo.buffer_inserts()
    for i in sorted(range(len(requests)), key=lambda k: ORDER[requests[k].method]):
        try:
            resp = dispatch(repo, requests[i])
        except TelemedError as exc:
            # Name the failing entry; the whole transaction is rolled back by the unit of work.
            exc.message = f"Transaction failed at Bundle.entry[{i}]: {exc.message}"
            for issue in exc.issues:
                issue.message = f"Bundle.entry[{i}]: {issue.message}"
                if issue.expression and not issue.expression.startswith("Bundle"):
                    _, dot, rest = issue.expression.partition(".")
                    issue.expression = f"Bundle.entry[{i}].resource" + (f".{rest}" if dot else "")
            raise
        if resp.status >= 400:
            raise TelemedError(Category.UNPROCESSABLE, f"Transaction failed at Bundle.entry[{i}]")
        results[i] = _response_entry(resp, minimal)
    repo.stop_buffering()
    return FhirResponse(
        200, {"resourceType": "Bundle", "type": "transaction-response", "entry": results}, {}, "transaction"
    )
