"""Enrolling in two-factor authentication (TOTP, RFC 6238), no HTTP here: a new secret for the
authenticator app, confirmed by a first code, which switches TOTP on and yields one-time recovery
codes (shown once; only their hashes are kept)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, update

from telemed.db.schema import account as t_account
from telemed.identity import totp
from telemed.identity.accounts import get_account
from telemed.kernel.errors import Category, TelemedError


@dataclass(frozen=True)
class Enrollment:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class MfaStatus:
    enabled: bool
    pending: Enrollment | None  # a secret handed out but not confirmed yet
    recovery_codes_left: int


def status(conn: Connection, username: str) -> MfaStatus:
    acct = get_account(conn, username)
    if acct is None:
        raise TelemedError(Category.NOT_FOUND, f"No account {username!r}")
    pending = None
    if not acct.totp_enabled and acct.totp_secret:
        pending = Enrollment(acct.totp_secret, totp.provisioning_uri(acct.totp_secret, username))
    return MfaStatus(bool(acct.totp_enabled), pending, len(acct.recovery_codes or []))


def begin(conn: Connection, username: str) -> Enrollment:
    """A new secret, stored unconfirmed (TOTP stays off until :func:`confirm`)."""
    secret = totp.new_secret()
    conn.execute(
        update(t_account).where(t_account.c.username == username).values(totp_secret=secret, totp_enabled=False)
    )
    return Enrollment(secret, totp.provisioning_uri(secret, username))


def confirm(conn: Connection, username: str, code: str) -> list[str]:
    """Switch TOTP on once ``code`` matches the stored secret; returns the recovery codes."""
    acct = get_account(conn, username)
    if acct is None or not totp.verify(acct.totp_secret, code):
        raise TelemedError(Category.UNPROCESSABLE, "The code does not match; check the authenticator's clock")
    codes, hashes = totp.new_recovery_codes()
    conn.execute(
        update(t_account).where(t_account.c.username == username).values(totp_enabled=True, recovery_codes=hashes)
    )
    return codes
