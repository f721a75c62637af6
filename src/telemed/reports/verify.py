"""Public verification of an issued report: is this document what the institution signed?

Answers what a QR code scanned from a paper copy needs, and nothing about the patient: the
issuer, the report title, who signed it and when, and the SHA-256 of the issued PDF. The answer
is recomputed on every request: the signature in the Provenance is verified again against the
signed report version (R4 §6.3 Provenance.signature), and the stored PDF against the SHA-1 in
its Attachment.hash, so an altered row is reported as not authentic rather than trusted.

Only DocumentReferences filed by :func:`telemed.reports.issue_signed_report` (the ones that
relate to a Provenance) are known here; any other id is "not found", like an unknown one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from telemed.fhir.search import query
from telemed.fhir.store import searching
from telemed.fhir.store.repository import Repository
from telemed.identity import get_account
from telemed.kernel.errors import Category, TelemedError
from telemed.reports.provenance import signature_jws, signed_target
from telemed.reports.signing import Signer, canonical_bytes

# Why a document is not authentic (machine-readable, also in the JSON answer).
SIGNATURE_INVALID = "signature-invalid"
SIGNER_MISMATCH = "signer-mismatch"
FILE_ALTERED = "file-altered"
REPORT_MISSING = "signed-report-missing"


@dataclass(frozen=True)
class SignerView:
    name: str | None
    title: str | None
    institution: str | None
    signed_at: datetime | None
    key_id: str | None


@dataclass(frozen=True)
class DocumentVerification:
    document_id: str
    authentic: bool
    status: str  # DocumentReference.status: current | superseded | entered-in-error
    title: str | None
    institution: str | None
    signers: tuple[SignerView, ...]
    sha256: str
    size: int
    issued: str | None
    replaced_by: str | None = None  # the DocumentReference id of the amended version
    problems: tuple[str, ...] = ()
    patient_id: str | None = None  # for the audit trail only: never shown, never in as_json

    def __repr__(self) -> str:  # keeps the patient id out of logs and tracebacks
        return f"DocumentVerification({self.document_id!r}, authentic={self.authentic}, status={self.status!r})"

    def as_json(self) -> dict:
        return {
            "document": self.document_id,
            "authentic": self.authentic,
            "status": self.status,
            "title": self.title,
            "institution": self.institution,
            "signers": [
                {
                    "name": s.name,
                    "title": s.title,
                    "institution": s.institution,
                    "signedAt": s.signed_at.isoformat().replace("+00:00", "Z") if s.signed_at else None,
                    "keyId": s.key_id,
                }
                for s in self.signers
            ],
            "sha256": self.sha256,
            "size": self.size,
            "issued": self.issued,
            "replacedBy": self.replaced_by,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class FileCheck:
    matches: bool
    sha256: str  # of the uploaded file
    issued_sha256: str


def _unknown(doc_id: str) -> TelemedError:
    return TelemedError(Category.NOT_FOUND, f"No issued report {doc_id!r}")


def _issued(repo: Repository, doc_id: str) -> tuple[dict, str, bytes]:
    """The DocumentReference, the reference of its Provenance, and the issued PDF."""
    try:
        docref = repo.read("DocumentReference", doc_id).resource
    except TelemedError as exc:
        if exc.category in (Category.NOT_FOUND, Category.GONE, Category.INCORRECT):
            raise _unknown(doc_id) from None
        raise
    related = [r.get("reference") or "" for r in (docref.get("context") or {}).get("related") or []]
    provenance = next((r for r in related if r.startswith("Provenance/")), None)
    content = docref.get("content") or []
    attachment = ((content[0] or {}).get("attachment") or {}) if content else {}
    if provenance is None or attachment.get("contentType") != "application/pdf" or not attachment.get("data"):
        raise _unknown(doc_id)
    try:
        pdf = base64.b64decode(attachment["data"], validate=True)
    except binascii.Error:
        raise _unknown(doc_id) from None
    return docref, provenance, pdf


def issued_pdf(repo: Repository, doc_id: str) -> bytes:
    return _issued(repo, doc_id)[2]


def _replacement(repo: Repository, doc_id: str) -> str | None:
    q = query.parse("DocumentReference", [("relatesto", f"DocumentReference/{doc_id}")])
    ids = searching.find_ids(repo, q, limit=1)
    return ids[0] if ids else None


def verify_document(repo: Repository, signer: Signer, doc_id: str) -> DocumentVerification:
    """Re-verifies an issued report; raises a NOT_FOUND TelemedError for an unknown id.

    ``repo`` must be able to read the document (the public endpoint uses the system context).
    """
    docref, provenance_ref, pdf = _issued(repo, doc_id)
    attachment = docref["content"][0]["attachment"]
    problems: list[str] = []
    expected_sha1 = attachment.get("hash") or ""
    actual_sha1 = base64.b64encode(hashlib.sha1(pdf).digest()).decode()
    if not hmac.compare_digest(expected_sha1, actual_sha1):
        problems.append(FILE_ALTERED)

    try:
        provenance = repo.read("Provenance", provenance_ref.split("/", 1)[1]).resource
    except TelemedError:
        provenance = {}
    jws, target = signature_jws(provenance), signed_target(provenance)
    parts = (target or "").split("/")
    verified = None
    if jws is None or len(parts) < 4:
        problems.append(SIGNATURE_INVALID)
    else:
        rtype, rid, version = parts[-4], parts[-3], parts[-1]
        try:
            report = repo.vread(rtype, rid, version).resource
        except TelemedError:
            problems.append(REPORT_MISSING)
        else:
            verified = signer.verify(repo.conn, jws, canonical_bytes(report))
            if not verified.valid:
                problems.append(SIGNATURE_INVALID)
            elif not _signed_as(repo, verified.username, provenance):
                problems.append(SIGNER_MISMATCH)

    agents = provenance.get("agent") or [{}]
    signers = tuple(
        SignerView(
            name=(agent.get("who") or {}).get("display"),
            title=((agent.get("role") or [{}])[0]).get("text"),
            institution=(agent.get("onBehalfOf") or {}).get("display"),
            signed_at=verified.signed_at if verified else None,
            key_id=verified.kid if verified else None,
        )
        for agent in agents[:1]
    )
    status = docref.get("status", "current")
    return DocumentVerification(
        document_id=doc_id,
        authentic=not problems,
        status=status,
        title=attachment.get("title") or docref.get("description"),
        institution=(docref.get("custodian") or {}).get("display"),
        signers=signers,
        sha256=hashlib.sha256(pdf).hexdigest(),
        size=len(pdf),
        issued=docref.get("date"),
        replaced_by=_replacement(repo, doc_id) if status == "superseded" else None,
        problems=tuple(problems),
        patient_id=_patient_id(docref),
    )


def _patient_id(docref: dict) -> str | None:
    ref = (docref.get("subject") or {}).get("reference") or ""
    return ref.split("/", 1)[1] if ref.startswith("Patient/") else None


def _signed_as(repo: Repository, username: str | None, provenance: dict) -> bool:
    """The key's owner is the Practitioner the Provenance names (when the account is linked to one)."""
    who = ((provenance.get("signature") or [{}])[0].get("who") or {}).get("reference") or ""
    account = get_account(repo.conn, username) if username else None
    if account is None:
        return False
    return not account.practitioner_id or who == f"Practitioner/{account.practitioner_id}"


def check_file(repo: Repository, doc_id: str, data: bytes) -> FileCheck:
    """Whether ``data`` is byte for byte the PDF that was issued as ``doc_id``."""
    issued = hashlib.sha256(issued_pdf(repo, doc_id)).hexdigest()
    uploaded = hashlib.sha256(data).hexdigest()
    return FileCheck(hmac.compare_digest(issued, uploaded), uploaded, issued)
