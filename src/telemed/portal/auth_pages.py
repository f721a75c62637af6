"""Signing in and out of the portal, and the account's two-factor authentication.

``/portal/login`` asks for the user name and password; when the account uses TOTP a second step
asks for the 6-digit code (or a recovery code), the password step being remembered for five
minutes by a signed challenge cookie (``identity.signin.mfa_challenge``), never by the password.
Every outcome is audited by ``identity.signin``, as for ``/api/auth/login``.

``/portal/account/security`` enrolls in TOTP (RFC 6238): the secret as text and as a QR code of
its ``otpauth://`` URI, confirmed by a first code, then the recovery codes, shown once. A user
whose role requires two-factor authentication and who has not set it up can do nothing else
until this is done (``session.current_user`` sends them here).
"""

from __future__ import annotations

from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from telemed.db.engine import unit_of_work
from telemed.demo.loader import DEMO_PASSWORD
from telemed.identity import mfa, signin, throttle
from telemed.identity.login import LOCK_FOR, SecondFactorRequired
from telemed.kernel.errors import Category, TelemedError
from telemed.portal import session
from telemed.portal.exceptions import PortalError
from telemed.portal.i18n import Gettext, gettext_for, safe_next
from telemed.portal.nav import register_nav
from telemed.portal.session import ENROLL_PATH, LOGIN_PATH, PortalUser
from telemed.portal.web import render

router = APIRouter()

CHALLENGE_COOKIE = "telemed_mfa"
DEMO_USER = "admin"  # the demo network's platform administrator, named on the login page in demo mode
NOTE = "portal"

register_nav("Account security", ENROLL_PATH, order=900)


def _services(request: Request):
    return request.app.state.services


def _address(request: Request) -> str | None:
    return throttle.request_address(request)


def _secure(request: Request) -> bool:
    return (_services(request).settings.base_url or "").startswith("https")


def _login_error(_: Gettext, exc: TelemedError) -> str:
    """identity's English refusal as a message in the user's language."""
    if isinstance(exc, throttle.LoginThrottled):
        minutes = max(1, -(-exc.retry_after // 60))
        return _("Too many failed sign-ins from your network. Try again in %(minutes)s minutes.", minutes=minutes)
    if exc.category is Category.FORBIDDEN:
        minutes = int(LOCK_FOR.total_seconds() // 60)
        return _("The account is locked after repeated failed sign-ins. Try again in %(minutes)s minutes.",
                 minutes=minutes)  # fmt: skip
    if exc.category is Category.UNAVAILABLE:
        return _("The service is unavailable; try again shortly")
    known = {
        "The two-factor code is not valid": _("The verification code is not valid"),
        signin.CHALLENGE_EXPIRED: _("The sign-in has expired; enter your password again"),
    }
    return known.get(exc.message, _("The user name or password is incorrect"))


def _form_status(exc: TelemedError) -> int:
    """The status of a login form shown again after a refusal: 200 for wrong credentials (a 401
    would need a WWW-Authenticate challenge, RFC 9110 §15.5.2, which a form login has none of)."""
    return 200 if exc.category is Category.UNAUTHENTICATED else exc.category.status


def _login_page(
    request: Request,
    *,
    step: str = "password",
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    username: str = "",
    next_url: str = "/portal/",
) -> Response:
    demo = _services(request).settings.demo
    return render(
        request, "login.html", status, step=step, error=error, notice=notice, username=username,
        next_url=next_url, demo_password=DEMO_PASSWORD if demo else None, demo_user=DEMO_USER,
    )  # fmt: skip


def _signed_in(request: Request, done: signin.SignedIn, next_url: str) -> Response:
    response = RedirectResponse(ENROLL_PATH if done.enrollment_only else next_url, 303)
    session.set_session_cookie(request, response, done.token)
    response.delete_cookie(CHALLENGE_COOKIE, path=LOGIN_PATH)
    return response


@router.get(LOGIN_PATH, include_in_schema=False)
def get_login(
    request: Request, next_: Annotated[str | None, Query(alias="next")] = None, signed_out: bool = False
) -> Response:
    next_url = safe_next(next_)
    user = session.optional_user(request)
    if user is not None:
        return RedirectResponse(ENROLL_PATH if user.enrollment_only else next_url, 303)
    _ = gettext_for(request)
    return _login_page(request, next_url=next_url, notice=_("You have signed out.") if signed_out else None)


@router.post(LOGIN_PATH, include_in_schema=False)
def post_login(
    request: Request,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next_: Annotated[str, Form(alias="next")] = "",
) -> Response:
    _ = gettext_for(request)
    next_url, username = safe_next(next_), username.strip()
    if not username or not password:
        error = _("Enter your user name and password")
        return _login_page(request, status=400, error=error, username=username, next_url=next_url)
    services = _services(request)
    try:
        done = signin.sign_in(services, username, password, None, address=_address(request), note=NOTE)
    except SecondFactorRequired:
        page = _login_page(request, step="code", username=username, next_url=next_url)
        challenge = signin.mfa_challenge(services.secret_key, username, services.clock.now())
        page.set_cookie(
            CHALLENGE_COOKIE, challenge, max_age=int(signin.CHALLENGE_TTL.total_seconds()), path=LOGIN_PATH,
            httponly=True, samesite="lax", secure=_secure(request),
        )  # fmt: skip
        return page
    except TelemedError as exc:
        status = _form_status(exc)
        page = _login_page(request, status=status, error=_login_error(_, exc), username=username, next_url=next_url)
        page.headers.update(exc.headers)  # Retry-After of a throttled address
        return page
    return _signed_in(request, done, next_url)


@router.get(LOGIN_PATH + "/code", include_in_schema=False)
def get_login_code() -> Response:
    """Where the language switch on the code step leads: the login page (the challenge cookie
    survives, but asking for the password again is simpler than keeping the step)."""
    return RedirectResponse(LOGIN_PATH, 303)


@router.post(LOGIN_PATH + "/code", include_in_schema=False)
def post_login_code(
    request: Request,
    code: Annotated[str, Form(max_length=32)] = "",
    next_: Annotated[str, Form(alias="next")] = "",
) -> Response:
    _ = gettext_for(request)
    next_url = safe_next(next_)
    services = _services(request)
    challenge = request.cookies.get(CHALLENGE_COOKIE, "")
    try:
        username = signin.verify_challenge(services.secret_key, challenge)
    except TelemedError as exc:
        return _login_page(request, status=_form_status(exc), error=_login_error(_, exc), next_url=next_url)
    code = code.strip().replace(" ", "")
    if not code:
        error = _("Enter the 6-digit code from your authenticator app")
        return _login_page(request, step="code", status=400, error=error, username=username, next_url=next_url)
    try:
        done = signin.sign_in_second_factor(services, challenge, code, address=_address(request), note=NOTE)
    except TelemedError as exc:
        step = "password" if exc.category in (Category.FORBIDDEN, Category.TOO_MANY_REQUESTS) else "code"
        page = _login_page(
            request, step=step, status=_form_status(exc), error=_login_error(_, exc), username=username,
            next_url=next_url,
        )  # fmt: skip
        page.headers.update(exc.headers)
        if step == "password":
            page.delete_cookie(CHALLENGE_COOKIE, path=LOGIN_PATH)
        return page
    return _signed_in(request, done, next_url)


@router.post("/portal/logout", include_in_schema=False)
def post_logout(request: Request, everywhere: Annotated[str, Form()] = "") -> Response:
    user = session.optional_user(request)
    if user is not None:
        signin.sign_out(_services(request), user.claims, address=_address(request), everywhere=everywhere == "1")
    response = RedirectResponse(LOGIN_PATH + "?signed_out=1", 303, headers={"Clear-Site-Data": '"cache"'})
    session.clear_session_cookie(response)
    return response


# --- two-factor enrollment ---------------------------------------------------------------------

EnrollingUser = Annotated[PortalUser, Depends(session.enrolling_user)]


def qr_svg(data: str) -> Markup:
    """An inline SVG QR code (segno; error correction M, as authenticator apps expect)."""
    svg = segno.make(data, error="m").svg_inline(scale=5, dark="#1f2933", light="#ffffff", border=2)
    return Markup(svg)  # segno's own markup; the data is encoded in path geometry, not text


def _security_page(
    request: Request,
    user: PortalUser,
    status: mfa.MfaStatus,
    *,
    http_status: int = 200,
    error: str | None = None,
    recovery_codes: list[str] | None = None,
) -> Response:
    pending = status.pending
    return render(
        request, "security.html", http_status, mfa=status, error=error, recovery_codes=recovery_codes,
        qr=qr_svg(pending.otpauth_uri) if pending else None,
        secret_groups=[pending.secret[i : i + 4] for i in range(0, len(pending.secret), 4)] if pending else [],
        enrollment_only=user.enrollment_only,
    )  # fmt: skip


def _status(request: Request, user: PortalUser) -> mfa.MfaStatus:
    with unit_of_work(_services(request).engine, write=False) as conn:
        return mfa.status(conn, user.username)


@router.get(ENROLL_PATH, include_in_schema=False)
def get_security(request: Request, user: EnrollingUser) -> Response:
    return _security_page(request, user, _status(request, user))


@router.post(ENROLL_PATH, include_in_schema=False)
def post_security(
    request: Request,
    user: EnrollingUser,
    action: Annotated[str, Form(max_length=16)] = "",
    code: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    services = _services(request)
    if action == "start":
        with unit_of_work(services.engine) as conn:
            if mfa.status(conn, user.username).enabled:
                raise PortalError(Category.CONFLICT, "Two-step verification is already on")
            mfa.begin(conn, user.username)
        return RedirectResponse(ENROLL_PATH, 303)
    if action != "confirm":
        raise PortalError(Category.INCORRECT, "Unknown action")
    _ = gettext_for(request)
    try:
        with unit_of_work(services.engine) as conn:
            codes = mfa.confirm(conn, user.username, code.strip().replace(" ", ""))
            signin.audit_account(conn, services.clock, user.username, "mfa-enrolled", "0", _address(request), NOTE)
    except TelemedError as exc:
        if exc.category is not Category.UNPROCESSABLE:
            raise
        error = _("The code does not match. Check that your phone's clock is correct and try again.")
        return _security_page(request, user, _status(request, user), http_status=422, error=error)
    # The session's token predates two-factor authentication (and may only allow enrolling): replace it.
    done = signin.after_enrollment(services, user.claims, address=_address(request))
    fresh = session.adopt(request, done.token, user.display_name)
    page = _security_page(request, fresh, _status(request, fresh), recovery_codes=codes)
    session.set_session_cookie(request, page, done.token)
    return page
