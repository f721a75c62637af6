"""Framework-free request and response of one FHIR interaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime

from telemed.fhir.store.repository import Stored
from telemed.kernel.clock import as_utc


@dataclass
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, e.g. "Patient/1/_history/2"
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: object | None = None
    base_url: str = ""
    assigned_id: str | None = None  # set by transactions that pre-allocate ids

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class FhirResponse:
    status: int
    resource: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    interaction: str = "unknown"
    raw: bytes | None = None  # a non-FHIR body (bulk export files), sent with headers["Content-Type"]
    note: str | None = None  # recorded on the request's AuditEvent (e.g. identifiers revealed)


def http_date(dt: datetime) -> str:
    return format_datetime(as_utc(dt), usegmt=True)


def stored_response(
    stored: Stored, status: int, interaction: str, base_url: str, location: bool = False
) -> FhirResponse:
    r = stored.resource
    headers = {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}
    if location:
        headers["Location"] = f"{base_url}/{r['resourceType']}/{r['id']}/_history/{stored.version_id}"
    return FhirResponse(status, r, headers, interaction)
