"""Logging in (no HTTP here): password, lockout after repeated failures, TOTP or a recovery code.

Clinical roles must use two-factor authentication outside demo mode; a user of such a role who
has not enrolled yet gets a token that can only enroll (scope ``mfa/enroll``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, update

from telemed.db.schema import account as t_account
from telemed.identity import passwords, totp
from telemed.identity.accounts import get_account
from telemed.identity.policy import clinical_mode
from telemed.kernel.clock import as_utc
from telemed.kernel.errors import Category, TelemedError

LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
ENROLL_SCOPE = "mfa/enroll"
_DUMMY_HASH = passwords.hash_password("not-a-real-password-Xy1!")


@dataclass
class LoginResult:
    username: str
    roles: list[str]
    organization: str | None
    practitioner: str | None
    scopes: list[str]
    mfa_used: bool
    patient: str | None = None  # a patient-role account's own Patient (its token's patient context)


def _fail(message: str = "Invalid user name or password") -> TelemedError:
    return TelemedError(Category.UNAUTHENTICATED, message)


class AccountLocked(TelemedError):
    """The account is locked after repeated failed logins (``LOCK_AFTER`` in a row)."""

    def __init__(self) -> None:
        super().__init__(Category.FORBIDDEN, "The account is locked after repeated failed logins; try again later")


class SecondFactorRequired(TelemedError):
    """The password was right and the account uses TOTP, but no code came with it. Not a failed
    attempt: a two-step login (the portal) asks for the code next, see :func:`second_factor`."""

    def __init__(self) -> None:
        super().__init__(Category.UNAUTHENTICATED, "A two-factor code is required")


def mfa_required(roles: list[str], demo: bool) -> bool:
    return not demo and clinical_mode(roles) in ("scoped", "all", "self")


def _usable_account(conn: Connection, username: str, now: datetime, password: str | None):
    acct = get_account(conn, username)
    if acct is None or not acct.active:
        if password is not None:
            passwords.verify_password(_DUMMY_HASH, password)  # same time as a real check: no user enumeration
        raise _fail()
    if acct.locked_until is not None and as_utc(acct.locked_until) > now:
        raise AccountLocked()
    return acct


def _check_code(acct, code: str) -> list[str] | None:
    """The recovery-code hashes left after a valid TOTP or recovery code, else None."""
    if totp.verify(acct.totp_secret, code):
        return acct.recovery_codes
    return totp.use_recovery_code(acct.recovery_codes, code)


def login(conn: Connection, username: str, password: str, code: str | None, now: datetime, demo: bool) -> LoginResult:
    acct = _usable_account(conn, username, now, password)
    ok = passwords.verify_password(acct.password_hash, password)
    mfa_used = False
    recovery_left = acct.recovery_codes
    if ok and acct.totp_enabled:
        if not code:
            raise SecondFactorRequired()
        recovery_left = _check_code(acct, code)
        ok = mfa_used = recovery_left is not None
    if not ok:
        raise _fail()
    return _succeed(conn, acct, password, recovery_left, demo, mfa_used)


def second_factor(conn: Connection, username: str, code: str, now: datetime, demo: bool) -> LoginResult:
    """The second step of a two-step login: ``username`` passed the password step moments ago
    (the caller holds proof of that, e.g. a signed challenge) and now sends its TOTP or recovery code."""
    acct = _usable_account(conn, username, now, None)
    recovery_left = _check_code(acct, code) if acct.totp_enabled and code else None
    if recovery_left is None:
        raise _fail("The two-factor code is not valid")
    return _succeed(conn, acct, None, recovery_left, demo, True)


def _succeed(conn: Connection, acct, password: str | None, recovery_left, demo: bool, mfa_used: bool) -> LoginResult:
    values = {"failed_logins": 0, "locked_until": None, "recovery_codes": recovery_left}
    if password is not None and passwords.needs_rehash(acct.password_hash):
        values["password_hash"] = passwords.hash_password(password)
    conn.execute(update(t_account).where(t_account.c.username == acct.username).values(**values))
    return result_for(acct, demo, mfa_used)


def result_for(acct, demo: bool, mfa_used: bool) -> LoginResult:
    """What a login of ``acct`` (an account row) yields: a full token, or one that can only
    enroll in two-factor authentication when the roles require it and it is not set up."""
    roles = list(acct.roles)
    scopes = ["user/*.*"]
    if mfa_required(roles, demo) and not acct.totp_enabled:
        scopes = [ENROLL_SCOPE]
    patient = own_patient(acct)
    return LoginResult(acct.username, roles, acct.organization_id, acct.practitioner_id, scopes, mfa_used, patient)


def own_patient(acct) -> str | None:
    """The Patient a patient-role account is linked to (``account.patient_id``), else None."""
    return acct.patient_id if "patient" in (acct.roles or []) else None


def record_failure(conn: Connection, username: str, now: datetime) -> None:
    """Count a failed login (in a transaction of its own: the login's was rolled back); lock the
    account for ``LOCK_FOR`` after ``LOCK_AFTER`` failures in a row."""
    acct = get_account(conn, username)
    if acct is None:
        return
    failures = (acct.failed_logins or 0) + 1
    values: dict = {"failed_logins": failures}
    if failures >= LOCK_AFTER:
        values = {"failed_logins": 0, "locked_until": now + LOCK_FOR}
    conn.execute(update(t_account).where(t_account.c.username == username).values(**values))


def set_password(conn: Connection, username: str, new_password: str, now: datetime) -> None:
    acct = get_account(conn, username)
    if acct is None:
        raise TelemedError(Category.NOT_FOUND, f"No account {username!r}")
    history = list(acct.password_history or [])
    if acct.password_hash:
        history.append(acct.password_hash)
    problems = passwords.policy_problems(
        new_password, username, history + ([acct.password_hash] if acct.password_hash else [])
    )
    if problems:
        raise TelemedError(Category.UNPROCESSABLE, "The password is not acceptable: " + "; ".join(problems))
    conn.execute(
        update(t_account)
        .where(t_account.c.username == username)
        .values(
            password_hash=passwords.hash_password(new_password),
            password_history=history[-passwords.HISTORY :],
            password_changed=now,
        )
    )
