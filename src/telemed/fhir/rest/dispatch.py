"""Routes one FHIR interaction to its handler (R4 §3.1.0 summary table). No web framework here."""

from __future__ import annotations

from telemed.fhir.rest import audit_events, bundles, interactions, listing
from telemed.fhir.rest.capability import capability_statement
from telemed.fhir.rest.operations import everything, export, reindex
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError


def _not_allowed(req: FhirRequest, allowed: str) -> TelemedError:
    return TelemedError(
        Category.METHOD_NOT_ALLOWED,
        f"{req.method} is not supported on /{req.path} (allowed: {allowed})",
        headers={"Allow": allowed},
    )


def _known_type(repo: Repository, rtype: str) -> str:
    if not repo.validator.defs.is_resource_type(rtype):
        raise TelemedError(
            Category.NOT_FOUND, f"Unknown resource type {rtype!r} (FHIR R4 resource types are case-sensitive)"
        )
    return rtype


def dispatch(repo: Repository, req: FhirRequest) -> FhirResponse:
    parts = [p for p in req.path.split("/") if p] if req.path else []
    m = req.method
    if not parts:
        if m == "POST":
            return bundles.process(dispatch, repo, req)
        if m == "GET":
            return listing.system_search(repo, req)
        raise _not_allowed(req, "GET, POST")
    if parts == ["_search"]:
        if m == "POST":
            return listing.system_search(repo, req)
        raise _not_allowed(req, "POST")
    head = parts[0]
    if head == "metadata" and len(parts) == 1:
        if m in ("GET", "HEAD"):
            return FhirResponse(200, capability_statement(req.base_url), {}, "capabilities")
        raise _not_allowed(req, "GET")
    if head == "_history" and len(parts) == 1:
        if m == "GET":
            return listing.history(repo, req, None, None, "_history")
        raise _not_allowed(req, "GET")
    if parts[-1] == "$export" and (len(parts) == 1 or parts[0] == "Patient" or (len(parts) == 3 and head == "Group")):
        if m in ("GET", "POST") and len(parts) in (1, 2, 3):
            level = "system" if len(parts) == 1 else head.lower()
            return export.kick_off(repo, req, level, parts[1] if len(parts) == 3 else None)
        raise _not_allowed(req, "GET, POST")
    if parts[-1] == "$reindex" and len(parts) <= 3:
        if m != "POST":
            raise _not_allowed(req, "POST")
        if len(parts) == 3:
            return reindex.reindex_instance(repo, req, _known_type(repo, head), parts[1])
        return reindex.reindex_types(repo, req, _known_type(repo, head) if len(parts) == 2 else None)
    if head == "$job-status" and len(parts) == 2 and m == "GET":
        return reindex.job_status(repo, req, parts[1])
    if head == "$export-poll-status" and len(parts) == 2:
        if m == "GET":
            return export.status(repo, req, parts[1])
        if m == "DELETE":
            return export.cancel(repo, req, parts[1])
        raise _not_allowed(req, "GET, DELETE")
    if head == "$export-file" and len(parts) == 3 and m == "GET":
        return export.file(repo, req, parts[1], parts[2])
    if head == "Patient" and len(parts) == 3 and parts[2] == "$everything":
        if m in ("GET", "POST"):
            return everything.patient_everything(repo, req, parts[1])
        raise _not_allowed(req, "GET, POST")
    if head.startswith("$") or (len(parts) > 1 and parts[-1].startswith("$")):
        raise TelemedError(Category.NOT_IMPLEMENTED, f"The operation {parts[-1]!r} is not supported")
    if head == "AuditEvent" and len(parts) <= 2:
        if m != "GET":
            raise _not_allowed(req, "GET")
        return audit_events.read(repo, req, parts[1]) if len(parts) == 2 else audit_events.search(repo, req)
    rtype = _known_type(repo, head)
    if len(parts) == 1:
        if m == "GET":
            return listing.search(repo, req, rtype, rtype)
        if m == "POST":
            return interactions.create(repo, req, rtype)
        if m == "PUT":
            return interactions.conditional_update(repo, req, rtype)
        if m == "PATCH":
            return interactions.conditional_patch(repo, req, rtype)
        if m == "DELETE":
            return interactions.conditional_delete(repo, req, rtype)
        raise _not_allowed(req, "GET, POST, PUT, PATCH, DELETE")
    second = parts[1]
    if len(parts) == 2 and second == "_search":
        if m == "POST":
            return listing.search(repo, req, rtype, rtype)
        raise _not_allowed(req, "POST")
    if len(parts) == 2 and second == "_history":
        if m == "GET":
            return listing.history(repo, req, rtype, None, f"{rtype}/_history")
        raise _not_allowed(req, "GET")
    if len(parts) == 2:
        if m in ("GET", "HEAD"):
            return interactions.read(repo, req, rtype, second)
        if m == "PUT":
            return interactions.update(repo, req, rtype, second)
        if m == "PATCH":
            return interactions.patch(repo, req, rtype, second)
        if m == "DELETE":
            return interactions.delete(repo, req, rtype, second)
        raise _not_allowed(req, "GET, PUT, PATCH, DELETE")
    if len(parts) == 3 and parts[2] == "_history":
        if m == "GET":
            return listing.history(repo, req, rtype, second, f"{rtype}/{second}/_history")
        raise _not_allowed(req, "GET")
    if len(parts) == 3 and repo.validator.defs.is_resource_type(parts[2]):
        # Compartment search (R4 §3.1.1.3): only the Patient compartment is defined here.
        if rtype != "Patient":
            raise TelemedError(Category.NOT_FOUND, f"Compartment searches are supported for Patient, not {rtype}")
        if m == "GET":
            return listing.search(repo, req, parts[2], req.path, compartment=("Patient", second))
        raise _not_allowed(req, "GET")
    if len(parts) == 4 and parts[2] == "_history":
        if m in ("GET", "HEAD"):
            return interactions.vread(repo, req, rtype, second, parts[3])
        raise _not_allowed(req, "GET")
    raise TelemedError(Category.NOT_FOUND, f"No FHIR interaction is defined for /{req.path}")
