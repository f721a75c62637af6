"""Signed clinical reports: digital signatures, printable PDFs and public verification.

Shared by the domains that sign reports (teleconsultation, ECG, pathology). Public API: the names
in ``__all__``.
"""

from telemed.reports.api import router as verification_router
from telemed.reports.issue import CONSULT_NOTE, SignedReport, current_documents, issue_signed_report, verification_url
from telemed.reports.pdf import (
    Figure,
    Opinion,
    PatientInfo,
    ReportDocument,
    RequestInfo,
    SignerInfo,
    render_html,
    render_pdf,
)
from telemed.reports.provenance import build_provenance, signature_jws, signed_target
from telemed.reports.signing import LocalKeySigner, Signature, Signer, VerifiedSignature, canonical_bytes
from telemed.reports.verify import DocumentVerification, FileCheck, check_file, verify_document

__all__ = [
    "CONSULT_NOTE",
    "DocumentVerification",
    "FileCheck",
    "Figure",
    "LocalKeySigner",
    "Opinion",
    "PatientInfo",
    "ReportDocument",
    "RequestInfo",
    "Signature",
    "SignedReport",
    "Signer",
    "SignerInfo",
    "VerifiedSignature",
    "build_provenance",
    "canonical_bytes",
    "check_file",
    "current_documents",
    "issue_signed_report",
    "render_html",
    "render_pdf",
    "signature_jws",
    "signed_target",
    "verification_router",
    "verification_url",
    "verify_document",
]
