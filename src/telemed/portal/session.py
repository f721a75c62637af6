"""The portal's session and its CSRF protection.

The session is the platform's own access token (``telemed.identity.tokens``, the claims of
``/api/auth/login``) in an HttpOnly, SameSite=Lax cookie, so the portal and the APIs share one
notion of "logged in", one expiry and one revocation list (logout, "log out everywhere").

CSRF (OWASP's synchronizer token, stateless form): the token is HMAC-SHA256(secret key, jti) of
the session, so it needs no storage and dies with the session. Before login the form token is
tied the same way to a random pre-session cookie. Every POST/PUT/PATCH/DELETE under ``/portal``
carries it in the ``csrf_token`` form field or the ``X-CSRF-Token`` header; ``install`` adds
:func:`require_csrf` to every portal router, so a page module cannot forget it.

A *guest* session (an external expert signed in by an invitation link and code, see
telemed.consultation.invitation) holds a token of another audience (``tokens.GUEST_AUDIENCE``,
which the FHIR API and /api refuse) bound to one consultation: it opens that case page and its
sub-paths, uploads for its attachments and signing out; anything else is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.responses import Response

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import tokens
from telemed.identity.accounts import get_account
from telemed.identity.keys import TokenKeys
from telemed.identity.login import ENROLL_SCOPE
from telemed.kernel.errors import Category, TelemedError
from telemed.portal.exceptions import PortalError, PortalRedirect

log = logging.getLogger("telemed.portal")

SESSION_COOKIE = "telemed_session"
PRE_SESSION_COOKIE = "telemed_presession"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_PATH = "/portal"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
LOGIN_PATH = "/portal/login"
ENROLL_PATH = "/portal/account/security"
# What a user whose token only allows enrolling in two-factor authentication may still open.
ENROLLMENT_PATHS = frozenset({ENROLL_PATH, "/portal/logout"})
# What a guest may open besides its consultation (the language switch needs no session at all).
# Uploads belong to the user who began them and become records only when attached to the case.
GUEST_PATHS = frozenset({"/portal/logout", "/portal/uploads"})
GUEST_PREFIXES = ("/portal/uploads/",)


@dataclass(frozen=True)
class PortalUser:
    username: str
    display_name: str
    roles: frozenset[str]
    organization: str | None
    practitioner: str | None
    context: AccessContext  # build a Repository with it: ``services.repository(conn, user.context)``
    claims: dict = field(repr=False)
    csrf_token: str = field(repr=False)
    consultation: str | None = None  # a guest session: the one consultation it may open

    @property
    def guest(self) -> bool:
        """Signed in by an invitation, for one consultation only (no account of their own)."""
        return self.consultation is not None

    @property
    def enrollment_only(self) -> bool:
        """The session may only enroll in two-factor authentication (scope ``mfa/enroll``)."""
        return set(self.context.scopes) == {ENROLL_SCOPE}

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))


_UNKNOWN = object()


def _services(request: Request):
    return request.app.state.services


def csrf_for_session(secret: str, jti: str) -> str:
    return hmac.new(secret.encode(), jti.encode(), hashlib.sha256).hexdigest()


def _csrf_for_presession(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), b"pre-session:" + nonce.encode(), hashlib.sha256).hexdigest()


def _is_guest(claims: dict) -> bool:
    aud = claims.get("aud")
    return tokens.GUEST_AUDIENCE in ([aud] if isinstance(aud, str) else (aud or []))


def decode_session(keys: TokenKeys, token: str) -> dict:
    """The claims of a session cookie's token: a platform access token, or a guest token that
    names its consultation; raises TokenError otherwise."""
    claims = tokens.decode(keys, token, audience=(tokens.AUDIENCE, tokens.GUEST_AUDIENCE))
    if _is_guest(claims) and not claims.get(tokens.GUEST_CONSULTATION_CLAIM):
        raise tokens.TokenError("A guest session must name its consultation")
    return claims


def _resolve(request: Request) -> PortalUser | None:
    """The signed-in user of the session cookie, or None (no cookie, bad or expired token,
    revoked, account gone). Raises UNAVAILABLE when the database cannot say."""
    known = getattr(request.state, "portal_user", _UNKNOWN)
    if known is not _UNKNOWN:
        return known
    request.state.portal_user = None
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    services = _services(request)
    try:
        claims = decode_session(services.token_keys, token)
    except tokens.TokenError:
        return None
    try:
        if not services.revocations.is_valid(claims):
            return None
        with unit_of_work(services.engine, write=False) as conn:
            acct = get_account(conn, claims["sub"])
    except OperationalError:
        raise PortalError(Category.UNAVAILABLE, "The service is unavailable; try again shortly") from None
    if acct is None or not acct.active:
        return None
    user = _user(services.secret_key, claims, acct.display_name)
    request.state.portal_user = user
    return user


def _user(secret: str, claims: dict, display_name: str | None) -> PortalUser:
    context = tokens.context_from_claims(claims)
    return PortalUser(
        username=claims["sub"],
        display_name=display_name or claims["sub"],
        roles=context.roles,
        organization=context.organization,
        practitioner=context.practitioner,
        context=context,
        claims=claims,
        csrf_token=csrf_for_session(secret, claims.get("jti", "")),
        consultation=claims[tokens.GUEST_CONSULTATION_CLAIM] if _is_guest(claims) else None,
    )


def optional_user(request: Request) -> PortalUser | None:
    """The signed-in user or None, never raising (for the header of error and login pages)."""
    try:
        return _resolve(request)
    except (TelemedError, SQLAlchemyError):
        log.warning("could not resolve the portal session", exc_info=True)
        return None


# What scripts ask for (JSON, events, and the viewer's DICOMweb: application/dicom+json, multipart/related).
SCRIPT_TYPES = ("application/json", "+json", "text/event-stream", "multipart/related", "application/dicom")


def wants_html(request: Request) -> bool:
    """A browser navigation (or a client that did not say): not a script asking for JSON or events."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept or not any(k in accept for k in SCRIPT_TYPES)


def login_redirect(request: Request) -> PortalRedirect | TelemedError:
    """Where an anonymous request goes: browsers to the login page (coming back afterwards),
    scripts (``Accept: application/json`` or an event stream) get a 401."""
    if not wants_html(request):
        return PortalError(Category.UNAUTHENTICATED, "Please sign in")
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return PortalRedirect(f"{LOGIN_PATH}?{urlencode({'next': path})}")


def enrolling_user(request: Request) -> PortalUser:
    """The signed-in user, including one who may only enroll in two-factor authentication. A
    guest gets this far only on the paths of its consultation (see :func:`guest_may_open`)."""
    user = _resolve(request)
    if user is None:
        raise login_redirect(request)
    if user.guest and not guest_may_open(user, request.url.path):
        if request.url.path.startswith("/portal/consultations"):
            raise PortalError(Category.NOT_FOUND, "This page does not exist")  # another case: as if none
        raise PortalError(Category.FORBIDDEN, "This page is not available with an invitation link")
    return user


def guest_may_open(user: PortalUser, path: str) -> bool:
    """Whether a guest session may open ``path``: its consultation's page and sub-paths
    (attachments, opinion, signing, messages, report), uploads and signing out."""
    if "/../" in path or path.endswith("/.."):
        return False
    case = f"/portal/consultations/{user.consultation}"
    return path == case or path.startswith(case + "/") or path in GUEST_PATHS or path.startswith(GUEST_PREFIXES)


def current_user(request: Request) -> PortalUser:
    """Dependency of every portal page: the signed-in user. Anonymous browsers are sent to the
    login page (303), a session that must first enroll in two-factor authentication to the
    enrollment page."""
    user = enrolling_user(request)
    if user.enrollment_only and request.url.path not in ENROLLMENT_PATHS:
        raise PortalRedirect(ENROLL_PATH)
    return user


CurrentUser = Annotated[PortalUser, Depends(current_user)]


def require_roles(*roles: str):
    """A dependency: the signed-in user when they hold one of ``roles``, else a 403 page."""

    def dependency(user: CurrentUser) -> PortalUser:
        if not user.has_role(*roles):
            raise PortalError(Category.FORBIDDEN, "This page is not available to your role")
        return user

    return dependency


# --- CSRF --------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The token forms of this request's page must send back (session-bound when signed in).
    Anonymous pages get a pre-session nonce; :func:`set_pre_session_cookie` stores it."""
    user = optional_user(request)
    if user is not None:
        return user.csrf_token
    nonce = request.cookies.get(PRE_SESSION_COOKIE) or getattr(request.state, "pre_session_nonce", None)
    if not nonce:
        nonce = secrets.token_urlsafe(24)
        request.state.pre_session_nonce = nonce
    return _csrf_for_presession(_services(request).secret_key, nonce)


def set_pre_session_cookie(request: Request, response: Response) -> None:
    nonce = getattr(request.state, "pre_session_nonce", None)
    if nonce and request.cookies.get(PRE_SESSION_COOKIE) != nonce:
        response.set_cookie(
            PRE_SESSION_COOKIE, nonce, path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(request)
        )


def _expected_tokens(request: Request) -> list[str]:
    services = _services(request)
    secret = services.secret_key
    expected = []
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        try:
            expected.append(csrf_for_session(secret, decode_session(services.token_keys, session).get("jti", "")))
        except tokens.TokenError:
            pass
    nonce = request.cookies.get(PRE_SESSION_COOKIE)
    if nonce:
        expected.append(_csrf_for_presession(secret, nonce))
    return expected


async def require_csrf(request: Request) -> None:
    """Dependency: refuse (403) a state-changing request without this session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    ctype = request.headers.get("content-type", "")
    if not sent and ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not any(hmac.compare_digest(sent, token) for token in _expected_tokens(request)):
        raise PortalError(Category.FORBIDDEN, "The form has expired or did not come from this site; reload the page")


# --- the session cookie ------------------------------------------------------------------------


def _secure(request: Request) -> bool:
    return (_services(request).settings.base_url or "").startswith("https")


def adopt(request: Request, token: str, display_name: str) -> PortalUser:
    """Treat ``token`` (just issued) as this request's session: the page rendered next shows the
    new user and CSRF token. The response must still get :func:`set_session_cookie`."""
    services = _services(request)
    user = _user(services.secret_key, decode_session(services.token_keys, token), display_name)
    request.state.portal_user = user
    return user


def set_session_cookie(request: Request, response: Response, token: str, max_age: int | None = None) -> None:
    """``max_age``: the token's lifetime when shorter than a normal session's (a guest session)."""
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age or _services(request).settings.token_ttl_seconds, path=COOKIE_PATH,
        httponly=True, samesite="lax", secure=_secure(request),
    )  # fmt: skip


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
