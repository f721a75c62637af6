"""FHIR Bulk Data Access ``$export`` (placeholder until implemented)."""

from __future__ import annotations

from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError


def _todo() -> TelemedError:
    return TelemedError(Category.NOT_IMPLEMENTED, "$export is not implemented yet")


def kick_off(repo: Repository, req: FhirRequest, level: str, group_id: str | None) -> FhirResponse:
    raise _todo()


def status(repo: Repository, req: FhirRequest, job_id: str) -> FhirResponse:
    raise _todo()


def cancel(repo: Repository, req: FhirRequest, job_id: str) -> FhirResponse:
    raise _todo()


def file(repo: Repository, req: FhirRequest, job_id: str, name: str) -> FhirResponse:
    raise _todo()
