"""Signed clinical reports: digital signatures, printable PDFs and public verification.

Shared by the domains that sign reports (teleconsultation, ECG, pathology). Public API: the names
in ``__all__``.
"""

from telemed.reports.signing import LocalKeySigner, Signature, Signer, VerifiedSignature, canonical_bytes

__all__ = ["LocalKeySigner", "Signature", "Signer", "VerifiedSignature", "canonical_bytes"]
