"""The audit trail of the portal: who opened or changed what, through the web pages.

The FHIR API audits each interaction in its own transaction (telemed.fhir.http); the portal's pages
reach the store through a repository directly, so they record their own AuditEvents here:

- a state change records one event *inside* its unit of work (audited if and only if it happened);
- a page that shows clinical data records one ``read`` event per request, written after the reads
  and before the page is sent: if the audit cannot be written, the page is not shown.

The event names the page (method and path), the user, institution and address, and the patient
when the page is about one (a case page), so an auditor can search by patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from sqlalchemy import Connection

from telemed.db.engine import unit_of_work
from telemed.fhir.store import audit
from telemed.fhir.store.repository import Repository
from telemed.portal.session import PortalUser

_PATIENT = "telemed_audit_patient"
_DONE = "telemed_audit_read_done"


def address(request: Request) -> str | None:
    return request.client.host if request.client else None


def about_patient(request: Request, patient: str | None) -> None:
    """Name the patient this request's page is about (recorded in its AuditEvent)."""
    if patient:
        setattr(request.state, _PATIENT, patient)


def _record(conn: Connection, request: Request, user: PortalUser, interaction: str) -> None:
    services = request.app.state.services
    rec = audit.AuditRecord(
        interaction,
        "0",
        entity=f"portal {request.method} {request.url.path}"[:200],
        patient=getattr(request.state, _PATIENT, None),
        description=f"portal {request.method} {request.url.path}"[:200],
        address=address(request),
    )
    audit.record(conn, user.context, rec, services.clock)


def record_change(conn: Connection, request: Request, user: PortalUser) -> None:
    """Audit a state change in the transaction that makes it."""
    _record(conn, request, user, "update")


def record_read(request: Request, user: PortalUser) -> None:
    """Audit this request's reads (once per request, in a short transaction of its own)."""
    if getattr(request.state, _DONE, False):
        return
    with unit_of_work(request.app.state.services.engine) as conn:
        _record(conn, request, user, "read")
    setattr(request.state, _DONE, True)


@contextmanager
def repository(request: Request, user: PortalUser, write: bool = False, audited: bool = True) -> Iterator[Repository]:
    """The user's repository on a unit of work that commits when the block ends without error,
    audited as above: a write block records its event in its own transaction, a read block once
    per request after the reads. ``audited=False`` only for checks that show nothing (e.g. whether
    a live event concerns the user)."""
    services = request.app.state.services
    with unit_of_work(services.engine, write=write) as conn:
        yield services.repository(conn, user.context)
        if write and audited:
            record_change(conn, request, user)
    if not write and audited:
        record_read(request, user)
