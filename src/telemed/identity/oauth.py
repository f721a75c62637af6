"""OAuth 2.0 for the FHIR API (SMART App Launch v2 style): authorize (code + PKCE S256), token
(authorization_code, client_credentials, refresh_token with rotation), introspection (RFC 7662),
revocation (RFC 7009), ``/.well-known/smart-configuration`` and the JWK Set that verifies our
access tokens (``/.well-known/jwks.json``).

The access tokens are the platform's own (:func:`telemed.identity.tokens.issue_token`) plus an
RFC 9068 ``client_id`` claim. Authlib supplies the PKCE pieces (verifier/challenge grammar and
S256); the endpoints themselves are plain FastAPI routes, because Authlib's server classes want
their own request/grant/token models while ours already exist (login, tokens, revocation, audit).

Request bodies are ``application/x-www-form-urlencoded`` only (RFC 6749), parsed with
``urllib.parse`` rather than adding python-multipart for FastAPI's ``Form``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
from authlib.oauth2.rfc7636.challenge import (
    CODE_CHALLENGE_PATTERN,
    CODE_VERIFIER_PATTERN,
    create_s256_code_challenge,
)
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import delete, insert, select

from telemed.db.engine import unit_of_work
from telemed.db.schema import oauth_code as t_code
from telemed.identity import login as login_service
from telemed.identity import refresh, revocation, signin, tokens
from telemed.identity.accounts import get_account
from telemed.identity.oauth_clients import (
    Client,
    OAuthError,
    authenticate_client,
    basic_credentials,
    get_client,
    grant_scopes,
    refresh_scope,
    register_client,
)
from telemed.kernel.clock import as_utc
from telemed.kernel.errors import Category, TelemedError

__all__ = ["router", "register_client", "OAuthError"]

router = APIRouter(tags=["oauth"])

CODE_TTL = timedelta(seconds=60)
CSRF_COOKIE = "telemed_oauth_csrf"
CSRF_MAX_AGE = 900
MAX_FORM_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _services(request: Request):
    return request.app.state.services


# --- request parsing -------------------------------------------------------------------------


@dataclass
class _Form:
    values: dict[str, str]
    problem: str | None = None

    def fields(self) -> dict[str, str]:
        if self.problem:
            raise OAuthError("invalid_request", self.problem)
        return self.values


async def _read_form(request: Request) -> _Form:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return _Form({}, "The body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _Form({}, "The request body is too large")
    values: dict[str, str] = {}
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return _Form({}, "The body is not valid form data")
    for key, value in pairs:
        if key in values:  # RFC 6749 §3.1: parameters must not repeat
            return _Form({}, f"Parameter {key!r} is repeated")
        values[key] = value
    return _Form(values)


FormBody = Annotated[_Form, Depends(_read_form)]


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="telemed"'
    return JSONResponse({"error": exc.error, "error_description": exc.description}, exc.status, headers=headers)


def _audit(conn, services, user: str, interaction: str, outcome: str, request: Request, note: str | None = None):
    address = request.client.host if request.client else None
    signin.audit_account(conn, services.clock, user, interaction, outcome, address, note)


def _fhir_base(request: Request) -> str:
    configured = _services(request).settings.base_url
    return (configured or str(request.base_url).rstrip("/") + "/fhir").rstrip("/")


def _root(request: Request) -> str:
    base = _fhir_base(request)
    return base[: -len("/fhir")] if base.endswith("/fhir") else str(request.base_url).rstrip("/")


def _issue(services, client: Client, user: str, scopes: list[str], roles: list[str], **context) -> tuple[str, dict]:
    """Our access token with the RFC 9068 ``client_id`` claim added, so introspection and
    revocation know which client it was issued to (``issue_token`` keeps the claim shape)."""
    token = tokens.issue_token(
        services.token_keys, user, scopes, services.settings.token_ttl_seconds, services.clock.now(), roles,
        extra={"client_id": client.client_id}, **context,
    )  # fmt: skip
    return token, jwt.decode(token, options={"verify_signature": False})


def _token_response(services, token: str, claims: dict, refresh_token: str | None = None) -> JSONResponse:
    body = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": services.settings.token_ttl_seconds,
        "scope": claims["scope"],
    }
    if refresh_token:
        body["refresh_token"] = refresh_token
    return JSONResponse(body, headers=NO_STORE)


def _claimed_client_id(request: Request, fields: dict[str, str]) -> str | None:
    """The client id a request claims (not yet authenticated), for the audit of a refusal."""
    try:
        basic = basic_credentials(request.headers.get("authorization", ""))
    except OAuthError:
        basic = None
    return basic[0] if basic else fields.get("client_id")


# --- token endpoint --------------------------------------------------------------------------


@router.post("/oauth/token")
def post_token(request: Request, form: FormBody) -> Response:
    services = _services(request)
    who = "anonymous"
    refresh_token = None
    try:
        fields = form.fields()
        claimed = _claimed_client_id(request, fields)
        who = f"client:{claimed}" if claimed else who
        with unit_of_work(services.engine, write=False) as conn:
            client = authenticate_client(
                conn, request.headers.get("authorization", ""), fields,
                allow_public=fields.get("grant_type") in ("authorization_code", "refresh_token"),
            )  # fmt: skip
        who = f"client:{client.client_id}"
        grant = fields.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant not in ("client_credentials", "authorization_code", "refresh_token"):
            raise OAuthError("unsupported_grant_type", f"Unsupported grant_type {grant!r}")
        # Refresh tokens come only from the authorization code grant.
        if (grant if grant != "refresh_token" else "authorization_code") not in client.grant_types:
            raise OAuthError("unauthorized_client", f"The client may not use the {grant} grant")
        if grant == "client_credentials":
            token, claims = _client_credentials(services, request, client, fields)
        elif grant == "authorization_code":
            token, claims, who, refresh_token = _authorization_code(services, request, client, fields)
        else:
            token, claims, who, refresh_token = _refresh(services, request, client, fields)
    except OAuthError as exc:
        with unit_of_work(services.engine) as conn:
            _audit(conn, services, who[:64], "token-refused", "4", request, f"{exc.error}: {exc.description}")
        return _oauth_error(exc)
    return _token_response(services, token, claims, refresh_token)


def _client_credentials(services, request: Request, client: Client, fields: dict) -> tuple[str, dict]:
    requested = fields.get("scope", "").split()
    scopes = grant_scopes(requested, client.scopes, "system")
    if not scopes:
        raise OAuthError("invalid_scope", "None of the requested scopes is allowed for this client")
    user = f"client:{client.client_id}"
    with unit_of_work(services.engine) as conn:
        token, claims = _issue(services, client, user, scopes, client.roles, organization=client.organization_id)
        _audit(conn, services, user, "token-issue", "0", request, f"client_credentials: {claims['scope']}")
    return token, claims


def _consume_code(services, code: str) -> object | None:
    """The code's row, deleted in its own committed transaction: a code is used at most once,
    even when the exchange then fails (a concurrent second exchange deletes nothing)."""
    digest = hashlib.sha256(code.encode()).hexdigest()
    with unit_of_work(services.engine) as conn:
        row = conn.execute(select(t_code).where(t_code.c.code_hash == digest)).first()
        if row is None or conn.execute(delete(t_code).where(t_code.c.code_hash == digest)).rowcount != 1:
            return None
    return row


def _authorization_code(
    services, request: Request, client: Client, fields: dict
) -> tuple[str, dict, str, str | None]:
    code, verifier = fields.get("code", ""), fields.get("code_verifier", "")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    if not verifier:
        raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
    row = _consume_code(services, code[:256])
    if row is None:
        raise OAuthError("invalid_grant", "The authorization code is invalid, expired or already used")
    now = services.clock.now()
    if row.client_id != client.client_id:
        raise OAuthError("invalid_grant", "The authorization code was issued to another client")
    if as_utc(row.expires) <= now:
        raise OAuthError("invalid_grant", "The authorization code has expired")
    if fields.get("redirect_uri") != row.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    if not CODE_VERIFIER_PATTERN.match(verifier) or not hmac.compare_digest(
        create_s256_code_challenge(verifier), row.code_challenge
    ):
        raise OAuthError("invalid_grant", "The code_verifier does not match the code_challenge")
    with unit_of_work(services.engine) as conn:
        acct = get_account(conn, row.username)
        if acct is None or not acct.active:
            raise OAuthError("invalid_grant", "The user's account is no longer active")
        token, claims = _issue(
            services, client, acct.username, list(row.scopes), list(acct.roles),
            organization=acct.organization_id, practitioner=acct.practitioner_id,
        )  # fmt: skip
        refresh_token = None
        if refresh.wants_refresh(list(row.scopes)):
            refresh_token = refresh.issue(conn, client.client_id, acct.username, list(row.scopes), now, claims)
        note = f"client {client.client_id}: {claims['scope']}" + ("; refresh token" if refresh_token else "")
        _audit(conn, services, acct.username, "token-issue", "0", request, note)
    return token, claims, acct.username, refresh_token


def _refresh(services, request: Request, client: Client, fields: dict) -> tuple[str, dict, str, str]:
    """grant_type=refresh_token: the next access and refresh token of the family (the used one is
    spent). A reused token revokes its family, audited, and is refused."""
    presented = fields.get("refresh_token")
    if not presented:
        raise OAuthError("invalid_request", "refresh_token is required")
    now = services.clock.now()
    refused = None
    with unit_of_work(services.engine) as conn:
        try:
            grant = refresh.redeem(conn, presented, client.client_id, now)
        except refresh.RefreshRefused as exc:
            refused = exc
            if exc.reuse:  # committed with the family's revocation
                note = f"client {client.client_id}: a used refresh token was presented again; its family is revoked"
                _audit(conn, services, exc.username or "anonymous", "token-reuse", "8", request, note)
        else:
            acct = get_account(conn, grant.username)
            if acct is None or not acct.active:
                raise OAuthError("invalid_grant", "The user's account is no longer active")
            scopes = grant.scopes
            if fields.get("scope"):  # RFC 6749 §6: a subset of what was granted
                asked = list(dict.fromkeys(fields["scope"].split()))
                if any(s not in grant.scopes for s in asked):
                    raise OAuthError("invalid_scope", "The scope asks for more than was granted")
                scopes = asked
            token, claims = _issue(
                services, client, acct.username, scopes, list(acct.roles),
                organization=acct.organization_id, practitioner=acct.practitioner_id,
            )  # fmt: skip
            next_token = refresh.issue(conn, client.client_id, acct.username, grant.scopes, now, claims, grant)
            _audit(conn, services, acct.username, "token-issue", "0", request,
                   f"client {client.client_id}: refresh_token: {claims['scope']}")  # fmt: skip
    if refused is not None:
        if refused.reuse and refused.username:
            services.revocations.forget_user(refused.username)
        raise OAuthError("invalid_grant", refused.description)
    return token, claims, acct.username, next_token


# --- authorize endpoint (login page) ---------------------------------------------------------


class _PageError(Exception):
    """The request cannot be trusted to redirect (unknown client, unregistered redirect_uri)."""


@dataclass
class _AuthRequest:
    client: Client
    redirect_uri: str
    state: str | None
    code_challenge: str
    scopes: list[str]
    params: dict[str, str]  # echoed into the login form


_ECHOED = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
           "code_challenge_method", "aud", "lang")  # fmt: skip


def _with_query(uri: str, params: dict[str, str | None]) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redirect_error(req_uri: str, state: str | None, error: str, description: str) -> RedirectResponse:
    location = _with_query(req_uri, {"error": error, "error_description": description, "state": state})
    return RedirectResponse(location, 303, headers=NO_STORE)


def _authorization_request(conn, request: Request, params: dict[str, str]) -> _AuthRequest:
    """Validate an authorization request. Raises ``_PageError`` while the redirect URI is not
    trusted yet, then ``OAuthError`` (to be sent to the client's redirect URI)."""
    client = get_client(conn, params.get("client_id", ""))
    if client is None or "authorization_code" not in client.grant_types:
        raise _PageError("unknown client")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:  # exact match (RFC 9700 §4.1.3)
        raise _PageError("redirect_uri is not registered for this client")
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "Only response_type=code is supported")
    if params.get("code_challenge_method") != "S256" or not CODE_CHALLENGE_PATTERN.match(
        params.get("code_challenge", "")
    ):
        raise OAuthError("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256")
    if params.get("aud", "").rstrip("/") != _fhir_base(request):
        raise OAuthError("invalid_request", f"aud must be this server's FHIR base URL {_fhir_base(request)}")
    if len(params.get("state") or "") > 1024:
        raise OAuthError("invalid_request", "state is too long")
    requested = params.get("scope", "").split()
    scopes = grant_scopes(requested, client.scopes, "user")
    if not scopes:
        raise OAuthError("invalid_scope", "None of the requested user/ scopes is allowed for this client")
    scopes += refresh_scope(requested, client.scopes)
    echoed = {k: params[k] for k in _ECHOED if params.get(k) is not None}
    return _AuthRequest(client, redirect_uri, params.get("state"), params["code_challenge"], scopes, echoed)


_TEXT = {
    "zh": {
        "title": "登录", "intro": "应用 {app} 请求访问您的数据：", "username": "用户名", "password": "密码",
        "code": "动态验证码", "code_hint": "已启用两步验证时填写", "submit": "登录",
        "bad_request": "无效的授权请求", "expired": "页面已过期，请返回应用重新登录。",
        "failed": "用户名、密码或验证码错误", "code_required": "请输入动态验证码",
        "locked": "账户因多次登录失败已被锁定，请稍后再试",
        "enroll": "请先在平台内完成两步验证设置，再授权第三方应用",
    },
    "en": {
        "title": "Sign in", "intro": "The application {app} asks to access your data:", "username": "User name",
        "password": "Password", "code": "Verification code", "code_hint": "if two-factor authentication is on",
        "submit": "Sign in", "bad_request": "Invalid authorization request",
        "expired": "This page has expired; go back to the application and sign in again.",
        "failed": "Invalid user name, password or code", "code_required": "A verification code is required",
        "locked": "The account is locked after repeated failed logins; try again later",
        "enroll": "Set up two-factor authentication in the platform before authorizing applications",
    },
}  # fmt: skip


def _lang(params: dict[str, str]) -> str:
    return "en" if params.get("lang") == "en" else "zh"


def _page(lang: str, body: str, status: int = 200) -> HTMLResponse:
    t = _TEXT[lang]
    doc = (
        f'<!DOCTYPE html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{t["title"]}</title>'
        "<style>body{font-family:sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}"
        "label{display:block;margin-top:1rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
        "button{margin-top:1.5rem;padding:.5rem 2rem}.error{color:#b00020}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(doc, status, headers=PAGE_HEADERS)


def _error_page(lang: str, message: str, status: int) -> HTMLResponse:
    t = _TEXT[lang]
    return _page(lang, f'<h1>{t["bad_request"]}</h1><p class="error">{html.escape(message)}</p>', status)


def _login_page(lang: str, req: _AuthRequest, csrf: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    t = _TEXT[lang]
    e = html.escape
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in req.params.items())
    scopes = "".join(f"<li><code>{e(s)}</code></li>" for s in req.scopes)
    problem = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = (
        f"<h1>{t['title']}</h1><p>{e(t['intro'].format(app=req.client.name))}</p><ul>{scopes}</ul>{problem}"
        f'<form method="post" action="/oauth/authorize">{hidden}'
        f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
        f'<label for="username">{t["username"]}</label>'
        '<input id="username" name="username" autocomplete="username" maxlength="64" required autofocus>'
        f'<label for="password">{t["password"]}</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" maxlength="256" required>'
        f'<label for="code">{t["code"]} <small>({t["code_hint"]})</small></label>'
        '<input id="code" name="code" autocomplete="one-time-code" inputmode="numeric" maxlength="32">'
        f'<button type="submit">{t["submit"]}</button></form>'
    )
    return _page(lang, body, status)


def _csrf_token(secret: str, nonce: str) -> str:
    """The form's token: an HMAC of the cookie's nonce, so the pair cannot be forged without the key."""
    return hmac.new(secret.encode(), b"oauth-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


def _csrf_ok(secret: str, nonce: str | None, token: str | None) -> bool:
    if not nonce or not token:
        return False
    issued, _, _ = nonce.partition(".")
    if not issued.isdigit() or time.time() - int(issued) > CSRF_MAX_AGE:
        return False
    return hmac.compare_digest(_csrf_token(secret, nonce), token)


@router.get("/oauth/authorize")
def get_authorize(request: Request) -> Response:
    services = _services(request)
    params = dict(request.query_params)
    lang = _lang(params)
    try:
        with unit_of_work(services.engine, write=False) as conn:
            req = _authorization_request(conn, request, params)
    except _PageError as exc:
        return _error_page(lang, str(exc), 400)
    except OAuthError as exc:
        return _redirect_error(params["redirect_uri"], params.get("state"), exc.error, exc.description)
    nonce = f"{int(time.time())}.{secrets.token_urlsafe(24)}"
    page = _login_page(lang, req, _csrf_token(services.secret_key, nonce))
    page.set_cookie(
        CSRF_COOKIE, nonce, max_age=CSRF_MAX_AGE, path="/oauth/authorize", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return page


def _login_message(lang: str, exc: TelemedError) -> str:
    t = _TEXT[lang]
    if exc.category is Category.FORBIDDEN:
        return t["locked"]
    return t["code_required"] if "two-factor code" in exc.message else t["failed"]


@router.post("/oauth/authorize")
def post_authorize(request: Request, form: FormBody) -> Response:
    services = _services(request)
    fields = form.values
    lang = _lang(fields)
    nonce = request.cookies.get(CSRF_COOKIE)
    if form.problem or not _csrf_ok(services.secret_key, nonce, fields.get("csrf_token")):
        return _error_page(lang, _TEXT[lang]["expired"], 403)
    try:
        with unit_of_work(services.engine, write=False) as conn:
            req = _authorization_request(conn, request, fields)
    except _PageError as exc:
        return _error_page(lang, str(exc), 400)
    except OAuthError as exc:
        return _redirect_error(fields["redirect_uri"], fields.get("state"), exc.error, exc.description)
    username = fields.get("username", "")[:64]
    note = f"oauth client {req.client.client_id}"
    now = services.clock.now()
    code = secrets.token_urlsafe(32)
    try:
        with unit_of_work(services.engine) as conn:
            result = login_service.login(
                conn, username, fields.get("password", "")[:256], fields.get("code") or None, now,
                services.settings.demo,
            )  # fmt: skip
            if result.scopes == [login_service.ENROLL_SCOPE]:
                raise TelemedError(Category.FORBIDDEN, "Two-factor enrollment is required first")
            conn.execute(delete(t_code).where(t_code.c.expires < now))
            conn.execute(
                insert(t_code).values(
                    code_hash=hashlib.sha256(code.encode()).hexdigest(), client_id=req.client.client_id,
                    redirect_uri=req.redirect_uri, code_challenge=req.code_challenge, username=result.username,
                    scopes=req.scopes, expires=now + CODE_TTL,
                )
            )  # fmt: skip
            _audit(conn, services, result.username, "login", "0", request, note)
    except TelemedError as exc:
        enroll = exc.message.startswith("Two-factor enrollment")
        with unit_of_work(services.engine) as conn:
            if exc.category is Category.UNAUTHENTICATED:
                login_service.record_failure(conn, username, now)
            _audit(conn, services, username or "anonymous", "login-failed", "4", request, f"{note}: {exc.message}")
        message = _TEXT[lang]["enroll"] if enroll else _login_message(lang, exc)
        return _login_page(lang, req, fields["csrf_token"], message, exc.category.status)
    location = _with_query(req.redirect_uri, {"code": code, "state": req.state})
    response = RedirectResponse(location, 303, headers=NO_STORE)
    response.delete_cookie(CSRF_COOKIE, path="/oauth/authorize")
    return response


# --- introspection and revocation ------------------------------------------------------------


@router.post("/oauth/introspect")
def post_introspect(request: Request, form: FormBody) -> Response:
    services = _services(request)
    try:
        fields = form.fields()
        with unit_of_work(services.engine, write=False) as conn:
            caller = authenticate_client(conn, request.headers.get("authorization", ""), fields, allow_public=False)
        token = fields.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
    except OAuthError as exc:
        return _oauth_error(exc)
    try:
        claims = tokens.decode(services.token_keys, token)
    except tokens.TokenError:
        # Perhaps a refresh token: only the client it was issued to learns about it.
        with unit_of_work(services.engine, write=False) as conn:
            info = refresh.introspect(conn, token, services.clock.now())
        if info is None or info["client_id"] != caller.client_id:
            return JSONResponse({"active": False}, headers=NO_STORE)
        return JSONResponse(info, headers=NO_STORE)
    if not services.revocations.is_valid(claims):
        return JSONResponse({"active": False}, headers=NO_STORE)
    body = {"active": True, "token_type": "Bearer"}
    for key in ("sub", "scope", "exp", "iat", "iss", "aud", "jti", "client_id", "roles", "org", "practitioner"):
        if claims.get(key) is not None:
            body[key] = claims[key]
    if not claims["sub"].startswith("client:"):
        body["username"] = claims["sub"]
    return JSONResponse(body, headers=NO_STORE)


@router.post("/oauth/revoke")
def post_revoke(request: Request, form: FormBody) -> Response:
    services = _services(request)
    try:
        fields = form.fields()
        with unit_of_work(services.engine, write=False) as conn:
            client = authenticate_client(conn, request.headers.get("authorization", ""), fields, allow_public=True)
        token = fields.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        try:
            claims = tokens.decode(services.token_keys, token)
        except tokens.TokenError:
            _revoke_refresh(services, request, client, token)
            return Response(status_code=200, headers=NO_STORE)  # RFC 7009 §2.2: invalid tokens are fine
        if claims.get("client_id") != client.client_id:
            raise OAuthError("unauthorized_client", "The token was not issued to this client")
    except OAuthError as exc:
        return _oauth_error(exc)
    with unit_of_work(services.engine) as conn:
        revocation.revoke(conn, claims, services.clock.now())
        _audit(conn, services, claims["sub"][:64], "token-revoke", "0", request, f"by client {client.client_id}")
    services.revocations.forget(claims)
    return Response(status_code=200, headers=NO_STORE)


def _revoke_refresh(services, request: Request, client: Client, token: str) -> None:
    """RFC 7009 for a refresh token of ``client``: its family (and their access tokens) end."""
    with unit_of_work(services.engine) as conn:
        username = refresh.revoke(conn, token, client.client_id, services.clock.now())
        if username:
            note = f"refresh token, by client {client.client_id}"
            _audit(conn, services, username, "token-revoke", "0", request, note)
    if username:
        services.revocations.forget_user(username)


# --- discovery -------------------------------------------------------------------------------


def smart_configuration(request: Request) -> JSONResponse:
    root = _root(request)
    body = {
        "authorization_endpoint": f"{root}/oauth/authorize",
        "token_endpoint": f"{root}/oauth/token",
        "introspection_endpoint": f"{root}/oauth/introspect",
        "revocation_endpoint": f"{root}/oauth/revoke",
        "jwks_uri": f"{root}/.well-known/jwks.json",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": [
            "user/*.cruds", "user/*.rs", "system/*.cruds", "system/*.rs", "offline_access", "online_access",
        ],
        # No launch context (patient/encounter) and no OpenID Connect (ID tokens) yet.
        "capabilities": [
            "launch-standalone", "client-public", "client-confidential-symmetric",
            "permission-user", "permission-v1", "permission-v2", "permission-offline", "permission-online",
        ],
    }  # fmt: skip
    return JSONResponse(body, headers={"Cache-Control": "max-age=3600"})


def jwks(request: Request) -> JSONResponse:
    """The public keys that verify our access tokens (RFC 7517 JWK Set), retired ones included
    until the last token they signed has expired."""
    return JSONResponse(_services(request).token_keys.jwks(), headers={"Cache-Control": "max-age=300"})


router.add_api_route("/.well-known/jwks.json", jwks, methods=["GET"], tags=["oauth"])

# SMART serves it under the FHIR base URL; the root copy is for generic OAuth discovery clients.
router.add_api_route("/.well-known/smart-configuration", smart_configuration, methods=["GET"], tags=["oauth"])
router.add_api_route("/fhir/.well-known/smart-configuration", smart_configuration, methods=["GET"], tags=["oauth"])
