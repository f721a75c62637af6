"""``/api/auth``: log in (password + TOTP), log out, log out everywhere, change password, enroll TOTP.

Thin routes: parse -> identity service -> response. Every outcome is audited (login, failed
login, logout, token issue) in the transaction of the change it records.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from telemed.db.engine import unit_of_work
from telemed.identity import login as login_service
from telemed.identity import mfa, signin, throttle, tokens
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
        claims = tokens.decode(services.token_keys, token.strip())
    except tokens.TokenError as exc:
        raise TelemedError(Category.UNAUTHENTICATED, str(exc)) from None
    if not services.revocations.is_valid(claims):
        raise TelemedError(Category.UNAUTHENTICATED, "The access token was revoked")
    return claims


Claims = Annotated[dict, Depends(_claims)]


def _address(request: Request) -> str | None:
    return throttle.request_address(request)


def _audit(conn, services, user: str, interaction: str, outcome: str, request: Request, note: str | None = None):
    signin.audit_account(conn, services.clock, user, interaction, outcome, _address(request), note)


@router.post("/login", responses={429: {"description": "Too many failed sign-ins from this address (Retry-After)"}})
def post_login(body: LoginBody, request: Request) -> dict:
    services = _services(request)
    done = signin.sign_in(services, body.username, body.password, body.code, address=_address(request))
    return {
        "access_token": done.token,
        "token_type": "Bearer",
        "expires_in": services.settings.token_ttl_seconds,
        "scope": " ".join(done.result.scopes),
        "mfa_enrollment_required": done.enrollment_only,
    }


@router.post("/logout", status_code=204)
def post_logout(claims: Claims, request: Request) -> None:
    signin.sign_out(_services(request), claims, address=_address(request))


@router.post("/logout-all", status_code=204)
def post_logout_all(claims: Claims, request: Request) -> None:
    signin.sign_out(_services(request), claims, address=_address(request), everywhere=True)


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
    with unit_of_work(services.engine) as conn:
        enrollment = mfa.begin(conn, claims["sub"])
    return {"secret": enrollment.secret, "otpauth_uri": enrollment.otpauth_uri}


@router.post("/totp/confirm")
def post_totp_confirm(body: CodeBody, claims: Claims, request: Request) -> dict:
    """Finish enrollment with a first code; returns the one-time recovery codes (shown once)."""
    services = _services(request)
    with unit_of_work(services.engine) as conn:
        codes = mfa.confirm(conn, claims["sub"], body.code)
        _audit(conn, services, claims["sub"], "mfa-enrolled", "0", request)
    return {"recovery_codes": codes}
