"""Two-factor authentication: TOTP (RFC 6238) with one-time recovery codes."""

from __future__ import annotations

import hashlib
import secrets

import pyotp

ISSUER = "Telemed"
RECOVERY_CODES = 10


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app scans (as a QR code in the portal)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def verify(secret: str | None, code: str) -> bool:
    return bool(secret) and pyotp.TOTP(secret).verify(code.strip(), valid_window=1)


def new_recovery_codes() -> tuple[list[str], list[str]]:
    """(codes to show once, their hashes to store)."""
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    return codes, [_digest(c) for c in codes]


def use_recovery_code(stored: list[str] | None, code: str) -> list[str] | None:
    """The remaining hashes after using ``code``, or None if it is not a valid unused code."""
    digest = _digest(code.strip().lower())
    if not stored or digest not in stored:
        return None
    return [h for h in stored if h != digest]


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
