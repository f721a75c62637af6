"""``/api/auth``: log in (password + TOTP), log out, log out everywhere, change password, enroll TOTP.

Thin routes: parse -> identity service -> response. Every outcome is audited (login, failed
login, logout, token issue) in the transaction of the change it records.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import account as t_account
from telemed.fhir.store import audit
from telemed.fhir.store.context import AccessContext
from telemed.identity import login as login_service
from telemed.identity import revocation, tokens, totp
from telemed.identity.accounts import get_account
from telemed.kernel.errors import Category, TelemedError

router = APIRouter(prefix="/api/auth", tags=["authentication"])


class LoginBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    code: str | None = Field(default=None, max_length=32, description="TOTP code or a recovery code")


class PasswordBody(BaseModel):
    old_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


class CodeBody(BaseModel):
    code: str = Field(max_length=32)


def _services(request: Request):
    return request.app.state.services


def _claims(request: Request) -> dict:
    services = _services(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise TelemedError(Category.UNAUTHENTICATED, "A bearer access token is required")
    try:
        claims = tokens.decode(services.secret_key, token.strip())
    except tokens.TokenError as exc:
        raise TelemedError(Category.UNAUTHENTICATED, str(exc)) from None
    if not services.revocations.is_valid(claims):
        raise TelemedError(Category.UNAUTHENTICATED, "The access token was revoked")
    return claims


Claims = Annotated[dict, Depends(_claims)]


def _audit(conn, services, user: str, interaction: str, outcome: str, request: Request, note: str | None = None):
    rec = audit.AuditRecord(interaction, outcome, entity=f"account/{user}", description=note)
    rec.address = request.client.host if request.client else None
    audit.record(conn, AccessContext(user=user, clinical="none"), rec, services.clock)


@router.post("/login")
def post_login(body: LoginBody, request: Request) -> dict:
    services = _services(request)
    now = services.clock.now()
    try:
        with unit_of_work(services.engine) as conn:
            result = login_service.login(conn, body.username, body.password, body.code, now, services.settings.demo)
            ttl = services.settings.token_ttl_seconds
            token = tokens.issue_token(
                services.secret_key, result.username, result.scopes, ttl, now, result.roles,
                organization=result.organization, practitioner=result.practitioner,
            )  # fmt: skip
            _audit(conn, services, result.username, "login", "0", request, "two-factor" if result.mfa_used else None)
    except TelemedError as exc:
        with unit_of_work(services.engine) as conn:
            if exc.category is Category.UNAUTHENTICATED:
                login_service.record_failure(conn, body.username, now)
            _audit(conn, services, body.username[:64], "login-failed", "4", request, exc.message)
        raise
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": services.settings.token_ttl_seconds,
        "scope": " ".join(result.scopes),
        "mfa_enrollment_required": result.scopes == [login_service.ENROLL_SCOPE],
    }


@router.post("/logout", status_code=204)
def post_logout(claims: Claims, request: Request) -> None:
    services = _services(request)
    with unit_of_work(services.engine) as conn:
        revocation.revoke(conn, claims, services.clock.now())
        _audit(conn, services, claims["sub"], "logout", "0", request)
    services.revocations.forget(claims)


@router.post("/logout-all", status_code=204)
def post_logout_all(claims: Claims, request: Request) -> None:
    services = _services(request)
    with unit_of_work(services.engine) as conn:
        revocation.revoke_all(conn, claims["sub"], services.clock.now())
        _audit(conn, services, claims["sub"], "logout-all", "0", request)
    services.revocations.forget(claims)


@router.post("/password", status_code=204)
def post_password(body: PasswordBody, claims: Claims, request: Request) -> None:
    services = _services(request)
    with unit_of_work(services.engine) as conn:
        acct = get_account(conn, claims["sub"])
        if acct is None or not login_service.passwords.verify_password(acct.password_hash, body.old_password):
            raise TelemedError(Category.UNAUTHENTICATED, "The current password is wrong")
        login_service.set_password(conn, claims["sub"], body.new_password, services.clock.now())
        _audit(conn, services, claims["sub"], "password-change", "0", request)


@router.post("/totp/setup")
def post_totp_setup(claims: Claims, request: Request) -> dict:
    """Start enrollment: a new secret (shown once, as text and as an otpauth:// URI for a QR code)."""
    services = _services(request)
    secret = totp.new_secret()
    with unit_of_work(services.engine) as conn:
        conn.execute(
            update(t_account)
            .where(t_account.c.username == claims["sub"])
            .values(totp_secret=secret, totp_enabled=False)
        )
    return {"secret": secret, "otpauth_uri": totp.provisioning_uri(secret, claims["sub"])}


@router.post("/totp/confirm")
def post_totp_confirm(body: CodeBody, claims: Claims, request: Request) -> dict:
    """Finish enrollment with a first code; returns the one-time recovery codes (shown once)."""
    services = _services(request)
    with unit_of_work(services.engine) as conn:
        acct = get_account(conn, claims["sub"])
        if acct is None or not totp.verify(acct.totp_secret, body.code):
            raise TelemedError(Category.UNPROCESSABLE, "The code does not match; check the authenticator's clock")
        codes, hashes = totp.new_recovery_codes()
        conn.execute(
            update(t_account)
            .where(t_account.c.username == claims["sub"])
            .values(totp_enabled=True, recovery_codes=hashes)
        )
        _audit(conn, services, claims["sub"], "mfa-enrolled", "0", request)
    return {"recovery_codes": codes}
