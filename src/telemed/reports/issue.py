"""Issuing a signed report: sign the stored report version, record it, print it, file the PDF.

One use case for every domain that signs reports (teleconsultation, ECG, pathology), without
HTTP. Everything is written through the caller's Repository, so it happens in the caller's unit
of work: the Provenance, the DocumentReference and the superseded predecessor are committed
together with the workflow step that asked for them, or not at all.

FHIR R4 resources written (R4 §3.3.1 "Documents" is the bundle form; here the signed rendering is
filed as a DocumentReference, R4 §6.9, as IHE MHD does):

- ``Provenance`` (:mod:`telemed.reports.provenance`) holding the JWS over the report version;
- ``DocumentReference``: ``status`` current, ``docStatus`` final (amended for an amendment), the
  PDF as ``content[0].attachment`` with ``hash`` = base64 SHA-1 (R4 Attachment.hash),
  ``context.related`` = the signed report version and its Provenance;
- for an amendment, the previous DocumentReference becomes ``superseded`` and the new one
  ``relatesTo`` it with code ``replaces``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from telemed.fhir.search import query
from telemed.fhir.store import searching
from telemed.fhir.store.repository import Repository, Stored
from telemed.identity import get_account
from telemed.kernel.clock import fhir_instant
from telemed.kernel.errors import Category, TelemedError, incorrect
from telemed.reports.pdf import ReportDocument, SignerInfo, render_pdf
from telemed.reports.provenance import build_provenance, versioned_reference
from telemed.reports.signing import Signer, canonical_bytes

CONSULT_NOTE = {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]}
# Only finished reports are signed: a signature attests content that will not change any more.
SIGNABLE = {
    "DiagnosticReport": {"final", "amended", "corrected", "appended"},
    "Composition": {"final", "amended"},
}


@dataclass(frozen=True)
class SignedReport:
    provenance: dict
    document_reference: dict
    pdf: bytes
    document: ReportDocument  # as printed: with document id, verification URL and signature details


def verification_url(base_url: str, document_id: str) -> str:
    return f"{base_url.rstrip('/')}/verify/{document_id}"


def _practitioner_ref(practitioner: str) -> str:
    return practitioner if practitioner.startswith("Practitioner/") else f"Practitioner/{practitioner}"


def _signed_version(repo: Repository, report: Stored | dict) -> Stored:
    """The stored report version to sign; it must be the current version and match what the caller has."""
    resource = report.resource if isinstance(report, Stored) else report
    rtype, rid = resource.get("resourceType"), resource.get("id")
    version = (resource.get("meta") or {}).get("versionId")
    if rtype not in SIGNABLE:
        raise incorrect(f"Only {' and '.join(SIGNABLE)} resources are signed as reports, not {rtype!r}")
    if not rid or not version:
        raise incorrect("The report must be stored first (it needs an id and meta.versionId)")
    current = repo.read(rtype, rid)
    if str(current.version_id) != str(version):
        raise TelemedError(
            Category.CONFLICT,
            f"{rtype}/{rid} changed since version {version} (now {current.version_id}); re-read it and sign again",
        )
    if canonical_bytes(current.resource) != canonical_bytes(resource):
        raise TelemedError(Category.CONFLICT, f"The report differs from the stored {rtype}/{rid}/_history/{version}")
    if current.resource.get("status") not in SIGNABLE[rtype]:
        raise TelemedError(
            Category.UNPROCESSABLE,
            f"{rtype}/{rid} has status {current.resource.get('status')!r}; only a finished report is signed "
            f"({', '.join(sorted(SIGNABLE[rtype]))})",
        )
    if not isinstance(current.resource.get("subject"), dict):
        raise TelemedError(Category.UNPROCESSABLE, f"{rtype}/{rid} has no subject: whose report is it?")
    return current


def _check_signer(repo: Repository, username: str, practitioner_ref: str) -> str:
    """The account signs only as its own Practitioner; returns its display name."""
    account = get_account(repo.conn, username)
    if account is None or not account.active:
        raise TelemedError(Category.FORBIDDEN, f"No active account {username!r} to sign with")
    if account.practitioner_id and f"Practitioner/{account.practitioner_id}" != practitioner_ref:
        raise TelemedError(Category.FORBIDDEN, f"Account {username!r} cannot sign as {practitioner_ref}")
    return account.display_name


def current_documents(repo: Repository, report_type: str, report_id: str) -> list[Stored]:
    """The current (not superseded) DocumentReferences filed for any version of a report."""
    q = query.parse("DocumentReference", [("related", f"{report_type}/{report_id}"), ("status", "current")])
    return [repo.read("DocumentReference", i) for i in searching.find_ids(repo, q)]


def _related_report(docref: dict) -> str | None:
    for related in (docref.get("context") or {}).get("related") or []:
        ref = related.get("reference") or ""
        if "/_history/" in ref and not ref.startswith("Provenance/"):
            return ref
    return None


def _with_signature(signers: tuple[SignerInfo, ...], name: str, signed_at: datetime, kid: str) -> tuple:
    """Completes the signer entries still waiting for this signature (``key_id`` None)."""
    if not any(s.key_id is None for s in signers):
        return (*signers, SignerInfo(name, signed_at=signed_at, key_id=kid))
    return tuple(replace(s, signed_at=signed_at, key_id=kid) if s.key_id is None else s for s in signers)


def issue_signed_report(
    repo: Repository,
    signer: Signer,
    *,
    report: Stored | dict,
    document: ReportDocument,
    author_practitioner: str,
    username: str,
    now: datetime,
    base_url: str,
    amendment_reason: str | None = None,
    doc_type: dict = CONSULT_NOTE,
) -> SignedReport:
    """Sign a stored DiagnosticReport or Composition and file its PDF rendering.

    ``report`` is the current stored version (a :class:`Stored` or its resource with ``id`` and
    ``meta.versionId``); what is signed is :func:`canonical_bytes` of that version. ``document``
    is what to print: entries of ``document.signers`` with ``key_id`` None are this signature
    (the signer is added when there is none). ``author_practitioner`` is ``Practitioner/<id>``
    (or the id) of the account ``username``. The verification URL printed on the PDF is
    ``{base_url}/verify/{DocumentReference id}``.

    A report that already has a current signed document is only signed again as an amendment
    (``amendment_reason``): the earlier document is then superseded.
    """
    stored = _signed_version(repo, report)
    rtype, rid = stored.resource["resourceType"], stored.resource["id"]
    author = _practitioner_ref(author_practitioner)
    account_name = _check_signer(repo, username, author)

    previous = current_documents(repo, rtype, rid)
    signed_refs = {_related_report(p.resource) for p in previous}
    if versioned_reference(stored.resource) in signed_refs:
        raise TelemedError(
            Category.CONFLICT, f"{versioned_reference(stored.resource)} is already signed; amend the report first"
        )
    if previous and amendment_reason is None:
        raise TelemedError(
            Category.CONFLICT, f"{rtype}/{rid} already has a signed document; an amendment needs its reason"
        )
    if amendment_reason is not None and not amendment_reason.strip():
        raise incorrect("The amendment reason must not be empty")

    # The id is chosen before the PDF exists, so the PDF can print its own verification address.
    doc_id = repo.ids()
    signature = signer.sign(repo.conn, username, canonical_bytes(stored.resource), now)
    signers = _with_signature(document.signers, account_name, signature.signed_at, signature.kid)
    me = next(s for s in signers if s.key_id == signature.kid)

    provenance = repo.create(
        "Provenance",
        build_provenance(
            stored.resource,
            signature,
            author,
            recorded=now,
            signer_name=me.name,
            signer_title=me.title,
            signer_institution=me.institution,
            amendment_reason=amendment_reason,
            revision_of=_related_report(previous[0].resource) if previous else None,
        ),
    ).resource

    printed = replace(
        document,
        signers=signers,
        verification_url=verification_url(base_url, doc_id),
        document_id=doc_id,
        issued=now,
        amendment_note=document.amendment_note or amendment_reason,
    )
    pdf = render_pdf(printed)

    author_ref = {"reference": author, "display": me.name}
    docref: dict = {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "status": "current",
        "docStatus": "amended" if amendment_reason is not None else "final",
        "type": doc_type,
        "subject": stored.resource["subject"],
        "date": fhir_instant(now),
        "author": [author_ref],
        "authenticator": author_ref,
        "custodian": {"display": document.institution},
        "description": document.title,
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "language": printed.locale,
                    "data": base64.b64encode(pdf).decode(),
                    "size": len(pdf),
                    # SHA-1 because R4 Attachment.hash says so; the verification page shows SHA-256.
                    "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode(),
                    "title": document.title,
                    "creation": fhir_instant(now),
                }
            }
        ],
        "context": {
            "related": [
                {"reference": versioned_reference(stored.resource)},
                {"reference": f"Provenance/{provenance['id']}"},
            ]
        },
    }
    if previous:
        docref["relatesTo"] = [
            {"code": "replaces", "target": {"reference": f"DocumentReference/{p.resource['id']}"}} for p in previous
        ]
    filed = repo.update("DocumentReference", doc_id, docref).resource
    for old in previous:
        repo.update(
            "DocumentReference",
            old.resource["id"],
            {**old.resource, "status": "superseded"},
            if_match=f'W/"{old.version_id}"',
        )
    return SignedReport(provenance, filed, pdf, printed)
