"""Instance and type interactions (R4 §3.1.0.2-§3.1.0.8), including the conditional ones."""

from __future__ import annotations

from urllib.parse import parse_qsl

from telemed.fhir.rest.outcome import information
from telemed.fhir.rest.request import FhirRequest, FhirResponse, stored_response
from telemed.fhir.search import query
from telemed.fhir.store import protect, searching
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError, incorrect


def matching_ids(
    repo: Repository, rtype: str, params: list[tuple[str, str]], what: str, base_url: str = ""
) -> list[str]:
    """Ids matching conditional criteria (strict: an unknown parameter is an error, never ignored);
    at most two are fetched, since more than one is an error anyway (R4 §3.1.0.7.1, §3.1.0.4.3)."""
    repo.before_search()
    q = query.parse(rtype, params, strict=True)
    if not q.filters:
        raise incorrect(f"A conditional {what} needs search criteria")
    return searching.find_ids(repo, q, base_url, limit=2)


def _single_match(
    repo: Repository, rtype: str, params: list[tuple[str, str]], what: str, base_url: str = ""
) -> list[str]:
    ids = matching_ids(repo, rtype, params, what, base_url)
    if len(ids) > 1:
        raise TelemedError(
            Category.PRECONDITION_FAILED, f"The criteria of the conditional {what} match more than one {rtype}"
        )
    return ids


def read(repo: Repository, req: FhirRequest, rtype: str, id_: str) -> FhirResponse:
    stored = repo.read(rtype, id_)
    if_none_match = req.header("if-none-match")
    if if_none_match and if_none_match.strip() == stored.etag:
        return FhirResponse(304, None, {"ETag": stored.etag}, "read")
    resp = stored_response(stored, 200, "read", req.base_url)
    return reveal_or_mask(repo, resp)


def reveal_or_mask(repo: Repository, resp: FhirResponse) -> FhirResponse:
    """ID numbers, phones and addresses: in full for roles that need them (noted for the audit),
    masked for everyone else."""
    if resp.resource is None or not protect.has_sensitive(resp.resource):
        return resp
    if repo.context.reveal:
        resp.note = "identifiers revealed"
    else:
        resp.resource = protect.mask(resp.resource)
    return resp


def vread(repo: Repository, req: FhirRequest, rtype: str, id_: str, vid: str) -> FhirResponse:
    return reveal_or_mask(repo, stored_response(repo.vread(rtype, id_, vid), 200, "vread", req.base_url))


def create(repo: Repository, req: FhirRequest, rtype: str) -> FhirResponse:
    condition = req.header("if-none-exist")
    if condition:
        ids = _single_match(
            repo, rtype, parse_qsl(condition.lstrip("?"), keep_blank_values=True), "create", req.base_url
        )
        if ids:
            resp = stored_response(repo.read(rtype, ids[0]), 200, "create", req.base_url, location=True)
            return resp
    stored = repo.create(rtype, req.body, assigned_id=req.assigned_id)
    return stored_response(stored, 201, "create", req.base_url, location=True)


def update(repo: Repository, req: FhirRequest, rtype: str, id_: str) -> FhirResponse:
    stored = repo.update(rtype, id_, req.body, if_match=req.header("if-match"))
    status = 201 if stored.created else 200
    return stored_response(stored, status, "update", req.base_url, location=stored.created)


def conditional_update(repo: Repository, req: FhirRequest, rtype: str) -> FhirResponse:
    ids = _single_match(repo, rtype, req.params, "update", req.base_url)
    body = req.body
    if ids:
        if isinstance(body, dict) and body.get("id") not in (None, ids[0]):
            raise incorrect(f"The id in the body does not match the resource the criteria found ({ids[0]})")
        if isinstance(body, dict) and "id" not in body:
            body = {**body, "id": ids[0]}
        req = FhirRequest(req.method, req.path, [], req.headers, body, req.base_url)
        return update(repo, req, rtype, ids[0])
    if isinstance(body, dict) and body.get("id"):
        req = FhirRequest(req.method, req.path, [], req.headers, body, req.base_url)
        return update(repo, req, rtype, body["id"])
    stored = repo.create(rtype, body, assigned_id=req.assigned_id)
    return stored_response(stored, 201, "update", req.base_url, location=True)


def patch(repo: Repository, req: FhirRequest, rtype: str, id_: str) -> FhirResponse:
    stored = repo.patch(rtype, id_, req.body, if_match=req.header("if-match"))
    return stored_response(stored, 200, "patch", req.base_url)


def conditional_patch(repo: Repository, req: FhirRequest, rtype: str) -> FhirResponse:
    ids = _single_match(repo, rtype, req.params, "patch", req.base_url)
    if not ids:
        raise TelemedError(Category.NOT_FOUND, f"No {rtype} matches the criteria of the conditional patch")
    return patch(repo, req, rtype, ids[0])


def delete(repo: Repository, req: FhirRequest, rtype: str, id_: str) -> FhirResponse:
    version = repo.delete(rtype, id_, if_match=req.header("if-match"))
    headers = {"ETag": f'W/"{version}"'} if version else {}
    message = f"Deleted {rtype}/{id_}" if version else f"{rtype}/{id_} did not exist or was already deleted"
    return FhirResponse(200, information(message), headers, "delete")


def conditional_delete(repo: Repository, req: FhirRequest, rtype: str) -> FhirResponse:
    ids = _single_match(repo, rtype, req.params, "delete", req.base_url)
    if not ids:
        return FhirResponse(200, information(f"No {rtype} matched; nothing was deleted"), {}, "delete")
    return delete(repo, req, rtype, ids[0])
