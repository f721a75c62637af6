"""Signing in and out over any transport (the JSON API, the portal's forms): the login, the access
token it yields, and the audit of every outcome.

An outcome is audited in the transaction of the change it records (a successful login, a logout);
a refusal is recorded in a transaction of its own, because the login's was rolled back. A
two-step login (the portal) passes the password step with :func:`sign_in`, gets
:class:`~telemed.identity.login.SecondFactorRequired`, keeps a signed :func:`mfa_challenge` and
finishes with :func:`sign_in_second_factor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import jwt
from sqlalchemy import Connection, Engine

from telemed.db.engine import unit_of_work
from telemed.fhir.store import audit
from telemed.fhir.store.context import AccessContext
from telemed.identity import login as login_service
from telemed.identity import revocation, throttle, tokens
from telemed.identity.accounts import get_account
from telemed.identity.keys import TokenKeys
from telemed.identity.login import LoginResult, SecondFactorRequired
from telemed.identity.revocation import Revocations
from telemed.kernel.clock import Clock
from telemed.kernel.errors import Category, TelemedError

CHALLENGE_TTL = timedelta(minutes=5)
CHALLENGE_ALGORITHM = "HS256"  # made and checked by this server only: a MAC under its secret
CHALLENGE_AUDIENCE = "telemed-mfa-challenge"  # never accepted where an access token is expected
CHALLENGE_EXPIRED = "The sign-in has expired; enter the password again"


class _Settings(Protocol):
    token_ttl_seconds: int
    demo: bool


class SignInServices(Protocol):
    """What signing in needs of :class:`telemed.app.Services` (identity does not import the app)."""

    engine: Engine
    clock: Clock
    secret_key: str
    token_keys: TokenKeys
    settings: _Settings
    revocations: Revocations | None


@dataclass
class SignedIn:
    result: LoginResult
    token: str
    claims: dict

    @property
    def enrollment_only(self) -> bool:
        """The token can do nothing but enroll in two-factor authentication."""
        return self.result.scopes == [login_service.ENROLL_SCOPE]


def audit_account(
    conn: Connection, clock: Clock, user: str, interaction: str, outcome: str, address: str | None, note: str | None
) -> None:
    """An AuditEvent about ``user``'s account (login, logout, enrollment ...), in ``conn``'s transaction."""
    rec = audit.AuditRecord(interaction, outcome, entity=f"account/{user}", description=note, address=address)
    audit.record(conn, AccessContext(user=user, clinical="none"), rec, clock)


def issue(services: SignInServices, result: LoginResult) -> tuple[str, dict]:
    """An access token for a login result (the claims /api/auth/login and the portal share)."""
    token = tokens.issue_token(
        services.token_keys, result.username, result.scopes, services.settings.token_ttl_seconds,
        services.clock.now(), result.roles, organization=result.organization, practitioner=result.practitioner,
        patient=result.patient,
    )  # fmt: skip
    # Our own fresh token: read back without checks (an injected clock may be far from the wall clock).
    return token, jwt.decode(token, options={"verify_signature": False})


def _signed_in(services: SignInServices, conn: Connection, result: LoginResult, address, note) -> SignedIn:
    token, claims = issue(services, result)
    parts = [p for p in (note, "two-factor" if result.mfa_used else None) if p]
    audit_account(conn, services.clock, result.username, "login", "0", address, "; ".join(parts) or None)
    return SignedIn(result, token, claims)


def counts_as_failure(exc: TelemedError) -> bool:
    """Whether a refusal counts towards the address's throttle: wrong credentials and attempts on a
    locked account; a missing second factor after a right password is not a guess."""
    if isinstance(exc, (SecondFactorRequired, throttle.LoginThrottled)):
        return False
    return exc.category is Category.UNAUTHENTICATED or isinstance(exc, login_service.AccountLocked)


def check_throttle(services: SignInServices, username: str, address: str | None, note: str | None) -> None:
    """Refuse (429, audited) a sign-in from an address that failed too often (telemed.identity.throttle)."""
    wait = throttle.for_services(services).wait(address, services.clock.now())
    if wait:
        exc = throttle.LoginThrottled(wait)
        with unit_of_work(services.engine) as conn:
            detail = f"{note}: {exc.message}" if note else exc.message
            audit_account(conn, services.clock, username[:64] or "anonymous", "login-failed", "4", address, detail)
        raise exc


def _refused(services: SignInServices, username: str, exc: TelemedError, now: datetime, address, note) -> None:
    with unit_of_work(services.engine) as conn:
        # A missing second factor after a right password is not a guess: it does not count towards lockout.
        if exc.category is Category.UNAUTHENTICATED and not isinstance(exc, SecondFactorRequired):
            login_service.record_failure(conn, username, now)
        detail = f"{note}: {exc.message}" if note else exc.message
        audit_account(conn, services.clock, username[:64] or "anonymous", "login-failed", "4", address, detail)
    if counts_as_failure(exc):
        throttle.for_services(services).failed(address, now)


def sign_in(
    services: SignInServices,
    username: str,
    password: str,
    code: str | None,
    *,
    address: str | None,
    note: str | None = None,
) -> SignedIn:
    """Check the password (and the TOTP or recovery code when the account has one) and issue a
    token. Raises TelemedError: UNAUTHENTICATED (wrong credentials; ``SecondFactorRequired``
    when only the code is missing), FORBIDDEN (locked) or TOO_MANY_REQUESTS (the address failed
    too often: :class:`~telemed.identity.throttle.LoginThrottled`)."""
    check_throttle(services, username, address, note)
    now = services.clock.now()
    try:
        with unit_of_work(services.engine) as conn:
            result = login_service.login(conn, username, password, code, now, services.settings.demo)
            return _signed_in(services, conn, result, address, note)
    except TelemedError as exc:
        _refused(services, username, exc, now, address, note)
        raise


def sign_in_second_factor(
    services: SignInServices, challenge: str, code: str, *, address: str | None, note: str | None = None
) -> SignedIn:
    """Finish a two-step login: ``challenge`` (from :func:`mfa_challenge`) proves the password
    step; ``code`` is a TOTP or recovery code. A wrong code counts towards lockout."""
    username = verify_challenge(services.secret_key, challenge)
    check_throttle(services, username, address, note)
    now = services.clock.now()
    try:
        with unit_of_work(services.engine) as conn:
            result = login_service.second_factor(conn, username, code, now, services.settings.demo)
            return _signed_in(services, conn, result, address, note)
    except TelemedError as exc:
        _refused(services, username, exc, now, address, note)
        raise


def reissue(services: SignInServices, claims: dict, result: LoginResult, *, address: str | None, note: str) -> SignedIn:
    """Replace a token by a new one for ``result`` (e.g. after enrolling in two-factor
    authentication, the enrollment-only token becomes a full one); the old one is revoked."""
    with unit_of_work(services.engine) as conn:
        revocation.revoke(conn, claims, services.clock.now())
        token, new_claims = issue(services, result)
        audit_account(conn, services.clock, result.username, "token-issue", "0", address, note)
    if services.revocations is not None:
        services.revocations.forget(claims)
    return SignedIn(result, token, new_claims)


def after_enrollment(services: SignInServices, claims: dict, *, address: str | None) -> SignedIn:
    """Replace a token issued before two-factor enrollment (possibly enrollment-only) by a full one."""
    with unit_of_work(services.engine, write=False) as conn:
        acct = get_account(conn, claims["sub"])
    if acct is None or not acct.active or not acct.totp_enabled:
        raise TelemedError(Category.CONFLICT, "Two-factor authentication is not enabled")
    result = login_service.result_for(acct, services.settings.demo, mfa_used=True)
    return reissue(services, claims, result, address=address, note="two-factor enrollment")


def sign_out(services: SignInServices, claims: dict, *, address: str | None, everywhere: bool = False) -> None:
    """Revoke this token (or, ``everywhere``, every token the user holds) and audit it."""
    with unit_of_work(services.engine) as conn:
        if everywhere:
            revocation.revoke_all(conn, claims["sub"], services.clock.now())
        else:
            revocation.revoke(conn, claims, services.clock.now())
        audit_account(conn, services.clock, claims["sub"], "logout-all" if everywhere else "logout", "0", address, None)
    if services.revocations is not None:
        if everywhere:
            services.revocations.forget_user(claims["sub"])
        else:
            services.revocations.forget(claims)


def mfa_challenge(secret: str, username: str, now: datetime) -> str:
    """A short-lived signed statement "``username`` passed the password step", kept by the client
    between the two steps of a login (never usable as an access token: another audience)."""
    claims = {"sub": username, "aud": CHALLENGE_AUDIENCE, "iat": int(now.timestamp()),
              "exp": int((now + CHALLENGE_TTL).timestamp())}  # fmt: skip
    return jwt.encode(claims, secret, algorithm=CHALLENGE_ALGORITHM)


def verify_challenge(secret: str, challenge: str) -> str:
    """The user name of a valid challenge; raises UNAUTHENTICATED when it is expired or forged."""
    try:
        claims = jwt.decode(
            challenge, secret, algorithms=[CHALLENGE_ALGORITHM], audience=CHALLENGE_AUDIENCE,
            options={"require": ["exp", "sub"]},
        )  # fmt: skip
    except jwt.PyJWTError:
        raise TelemedError(Category.UNAUTHENTICATED, CHALLENGE_EXPIRED) from None
    return claims["sub"]
