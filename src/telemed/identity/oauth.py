"""OAuth 2.0 for the FHIR API (SMART App Launch v2 style): authorize (code + PKCE S256), token
(authorization_code, client_credentials, refresh_token with rotation), introspection (RFC 7662),
revocation (RFC 7009); the discovery documents are in :mod:`telemed.identity.discovery`, the pages
in :mod:`telemed.identity.authorize_page`, the patient launch in :mod:`telemed.identity.launch`.

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
from telemed.fhir.store import audit
from telemed.identity import authorize_page as pages
from telemed.identity import discovery, launch, oidc, refresh, revocation, signin, throttle, tokens
from telemed.identity import login as login_service
from telemed.identity.accounts import get_account
from telemed.identity.authorize_page import NO_STORE
from telemed.identity.oauth_clients import (
    Client,
    OAuthError,
    authenticate_client,
    basic_credentials,
    context_scopes,
    get_client,
    grant_scopes,
    refresh_scope,
    register_client,
)
from telemed.kernel.clock import as_utc
from telemed.kernel.errors import Category, TelemedError

__all__ = ["router", "register_client", "OAuthError"]

router = APIRouter(tags=["oauth"])
router.include_router(discovery.router)

CODE_TTL = timedelta(seconds=60)
CSRF_COOKIE = "telemed_oauth_csrf"
CSRF_MAX_AGE = 900
MAX_FORM_BYTES = 64 * 1024


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
    address = throttle.request_address(request)
    signin.audit_account(conn, services.clock, user, interaction, outcome, address, note)


def _issue(services, client: Client, user: str, scopes: list[str], roles: list[str], **context) -> tuple[str, dict]:
    """Our access token with the RFC 9068 ``client_id`` claim added, so introspection and
    revocation know which client it was issued to (``issue_token`` keeps the claim shape)."""
    token = tokens.issue_token(
        services.token_keys, user, scopes, services.settings.token_ttl_seconds, services.clock.now(), roles,
        extra={"client_id": client.client_id}, **context,
    )  # fmt: skip
    return token, jwt.decode(token, options={"verify_signature": False})


def _token_response(services, token: str, claims: dict, extra: dict | None = None) -> JSONResponse:
    """RFC 6749 §5.1, with SMART's launch context (``patient``), a ``refresh_token`` and an
    OpenID Connect ``id_token`` when granted."""
    body = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": services.settings.token_ttl_seconds,
        "scope": claims["scope"],
    }
    if claims.get("patient"):
        body["patient"] = claims["patient"]
    body.update({k: v for k, v in (extra or {}).items() if v})
    return JSONResponse(body, headers=NO_STORE)


def _id_token(services, request: Request, client: Client, acct, scopes: list[str], nonce: str | None) -> str | None:
    return oidc.id_token(
        services.token_keys, acct, scopes, issuer=discovery.root(request), client_id=client.client_id,
        fhir_base=discovery.fhir_base(request), now=services.clock.now(),
        ttl_seconds=services.settings.token_ttl_seconds, nonce=nonce,
    )  # fmt: skip


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
    extra: dict = {}
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
            token, claims, who, extra = _authorization_code(services, request, client, fields)
        else:
            token, claims, who, extra = _refresh(services, request, client, fields)
    except OAuthError as exc:
        with unit_of_work(services.engine) as conn:
            _audit(conn, services, who[:64], "token-refused", "4", request, f"{exc.error}: {exc.description}")
        return _oauth_error(exc)
    return _token_response(services, token, claims, extra)


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


def _authorization_code(services, request: Request, client: Client, fields: dict) -> tuple[str, dict, str, dict]:
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
            organization=acct.organization_id, practitioner=acct.practitioner_id, patient=row.patient_id,
        )  # fmt: skip
        extra = {"id_token": _id_token(services, request, client, acct, list(row.scopes), row.nonce)}
        if refresh.wants_refresh(list(row.scopes)):
            extra["refresh_token"] = refresh.issue(
                conn, client.client_id, acct.username, list(row.scopes), now, claims, patient=row.patient_id
            )
        note = f"client {client.client_id}: {claims['scope']}"
        note += "; refresh token" if extra.get("refresh_token") else ""
        note += f"; patient {row.patient_id}" if row.patient_id else ""
        _audit(conn, services, acct.username, "token-issue", "0", request, note)
    return token, claims, acct.username, extra


def _refresh(services, request: Request, client: Client, fields: dict) -> tuple[str, dict, str, dict]:
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
                organization=acct.organization_id, practitioner=acct.practitioner_id, patient=grant.patient,
            )  # fmt: skip
            extra = {"id_token": _id_token(services, request, client, acct, scopes, None)}
            extra["refresh_token"] = refresh.issue(
                conn, client.client_id, acct.username, grant.scopes, now, claims, grant, patient=grant.patient
            )
            _audit(conn, services, acct.username, "token-issue", "0", request,
                   f"client {client.client_id}: refresh_token: {claims['scope']}")  # fmt: skip
    if refused is not None:
        if refused.reuse and refused.username:
            services.revocations.forget_user(refused.username)
        raise OAuthError("invalid_grant", refused.description)
    return token, claims, acct.username, extra


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
    nonce: str | None = None  # OpenID Connect, echoed in the id_token


_ECHOED = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
           "code_challenge_method", "aud", "lang", "nonce")  # fmt: skip


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
    if params.get("aud", "").rstrip("/") != discovery.fhir_base(request):
        raise OAuthError("invalid_request", f"aud must be this server's FHIR base URL {discovery.fhir_base(request)}")
    if len(params.get("state") or "") > 1024:
        raise OAuthError("invalid_request", "state is too long")
    if len(params.get("nonce") or "") > oidc.MAX_NONCE:
        raise OAuthError("invalid_request", "nonce is too long")
    requested = params.get("scope", "").split()
    scopes = grant_scopes(requested, client.scopes, "user") + grant_scopes(requested, client.scopes, "patient")
    if not scopes:
        raise OAuthError("invalid_scope", "None of the requested user/ or patient/ scopes is allowed for this client")
    scopes += context_scopes(requested, client.scopes) + refresh_scope(requested, client.scopes)
    echoed = {k: params[k] for k in _ECHOED if params.get(k) is not None}
    return _AuthRequest(
        client, redirect_uri, params.get("state"), params["code_challenge"], scopes, echoed, params.get("nonce") or None
    )


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


def _login_page(lang: str, req: _AuthRequest, csrf: str, error: str | None = None, status: int = 200,
                headers: dict[str, str] | None = None) -> HTMLResponse:  # fmt: skip
    return pages.login_page(lang, req.client.name, req.scopes, req.params, csrf, error, status, headers)


@router.get("/oauth/authorize")
def get_authorize(request: Request) -> Response:
    services = _services(request)
    params = dict(request.query_params)
    lang = pages.lang(params)
    try:
        with unit_of_work(services.engine, write=False) as conn:
            req = _authorization_request(conn, request, params)
    except _PageError as exc:
        return pages.error_page(lang, str(exc), 400)
    except OAuthError as exc:
        return _redirect_error(params["redirect_uri"], params.get("state"), exc.error, exc.description)
    nonce = f"{int(time.time())}.{secrets.token_urlsafe(24)}"
    page = _login_page(lang, req, _csrf_token(services.secret_key, nonce))
    page.set_cookie(
        CSRF_COOKIE, nonce, max_age=CSRF_MAX_AGE, path="/oauth/authorize", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return page


@router.post("/oauth/authorize")
def post_authorize(request: Request, form: FormBody) -> Response:
    services = _services(request)
    fields = form.values
    lang = pages.lang(fields)
    nonce = request.cookies.get(CSRF_COOKIE)
    if form.problem or not _csrf_ok(services.secret_key, nonce, fields.get("csrf_token")):
        return pages.error_page(lang, pages.TEXT[lang]["expired"], 403)
    try:
        with unit_of_work(services.engine, write=False) as conn:
            req = _authorization_request(conn, request, fields)
    except _PageError as exc:
        return pages.error_page(lang, str(exc), 400)
    except OAuthError as exc:
        return _redirect_error(fields["redirect_uri"], fields.get("state"), exc.error, exc.description)
    if fields.get("launch_proof"):
        return _choose_patient(services, request, req, fields, lang)
    username = fields.get("username", "")[:64]
    note = f"oauth client {req.client.client_id}"
    address = throttle.request_address(request)
    now = services.clock.now()
    code = patient = None
    try:
        signin.check_throttle(services, username, address, note)
        with unit_of_work(services.engine) as conn:
            result = login_service.login(
                conn, username, fields.get("password", "")[:256], fields.get("code") or None, now,
                services.settings.demo,
            )  # fmt: skip
            if result.scopes == [login_service.ENROLL_SCOPE]:
                raise TelemedError(Category.FORBIDDEN, "Two-factor enrollment is required first")
            patient = result.patient  # a patient-role account's own record: always its context
            if patient is None and launch.needs_patient(req.scopes):
                if "patient" in result.roles:
                    raise OAuthError("access_denied", "No patient record is linked to this account")
            else:
                code = _new_code(conn, now, req, result.username, patient)
            _audit(conn, services, result.username, "login", "0", request, note)
    except OAuthError as exc:
        return _redirect_error(req.redirect_uri, req.state, exc.error, exc.description)
    except TelemedError as exc:
        if not isinstance(exc, throttle.LoginThrottled):
            with unit_of_work(services.engine) as conn:
                if exc.category is Category.UNAUTHENTICATED:
                    login_service.record_failure(conn, username, now)
                _audit(conn, services, username or "anonymous", "login-failed", "4", request, f"{note}: {exc.message}")
            if signin.counts_as_failure(exc):
                throttle.for_services(services).failed(address, now)
        message = pages.login_message(lang, exc)
        status = exc.category.status
        return _login_page(lang, req, fields["csrf_token"], message, status, exc.headers)
    if code is None:  # a launch with a patient context: the user picks the patient
        proof = launch.proof(services.secret_key, result.username, req.client.client_id, req.code_challenge, now)
        return _picker(services, request, req, fields, lang, proof, result.username)
    return _code_redirect(req, code)


def _new_code(conn, now, req: _AuthRequest, username: str, patient: str | None) -> str:
    code = secrets.token_urlsafe(32)
    conn.execute(delete(t_code).where(t_code.c.expires < now))
    conn.execute(
        insert(t_code).values(
            code_hash=hashlib.sha256(code.encode()).hexdigest(), client_id=req.client.client_id,
            redirect_uri=req.redirect_uri, code_challenge=req.code_challenge, username=username,
            scopes=req.scopes, expires=now + CODE_TTL, patient_id=patient, nonce=req.nonce,
        )
    )  # fmt: skip
    return code


def _code_redirect(req: _AuthRequest, code: str) -> Response:
    location = _with_query(req.redirect_uri, {"code": code, "state": req.state})
    response = RedirectResponse(location, 303, headers=NO_STORE)
    response.delete_cookie(CSRF_COOKIE, path="/oauth/authorize")
    return response


def _picker(services, request: Request, req: _AuthRequest, fields: dict, lang: str, proof: str, username: str,
            error: str | None = None, status: int = 200) -> Response:  # fmt: skip
    """The patient picker of a standalone launch: the patients the user's own rules let them see."""
    name = fields.get("patient_name", "").strip()[:64]
    with unit_of_work(services.engine) as conn:
        acct = get_account(conn, username)
        repo = services.repository(conn, launch.user_context(acct))
        patients = launch.visible_patients(repo, name or None)
        _audit(conn, services, username, "launch-list", "0", request,
               f"oauth client {req.client.client_id}: {len(patients)} patients listed")  # fmt: skip
    return pages.picker_page(lang, req.client.name, req.params, fields["csrf_token"], proof, patients, name, error,
                             status)  # fmt: skip


def _choose_patient(services, request: Request, req: _AuthRequest, fields: dict, lang: str) -> Response:
    """The picker's answer: a search (shown again) or a patient, checked against the user's rules."""
    proof = fields["launch_proof"]
    try:
        username = launch.verify_proof(services.secret_key, proof, req.client.client_id, req.code_challenge)
    except TelemedError:
        return pages.error_page(lang, pages.TEXT[lang]["expired"], 403)
    if fields.get("action") != "choose":
        return _picker(services, request, req, fields, lang, proof, username)
    chosen = (fields.get("patient_id") or "").strip() or fields.get("patient", "")
    now = services.clock.now()
    with unit_of_work(services.engine) as conn:
        acct = get_account(conn, username)
        if acct is None or not acct.active:
            return pages.error_page(lang, pages.TEXT[lang]["expired"], 403)
        if launch.may_open(services.repository(conn, launch.user_context(acct)), chosen):
            code = _new_code(conn, now, req, username, chosen)
            rec = audit.AuditRecord("launch", "0", entity=f"account/{username}", patient=chosen,
                                    description=f"oauth client {req.client.client_id}: patient context",
                                    address=throttle.request_address(request))  # fmt: skip
            audit.record(conn, launch.user_context(acct), rec, services.clock)
        else:
            code = None
    if code is None:
        error = pages.TEXT[lang]["pick_unknown"]
        return _picker(services, request, req, fields, lang, proof, username, error, 404)
    return _code_redirect(req, code)


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
    # RFC 7662 fields, the platform's claims and SMART's launch context (patient).
    keys = ("sub", "scope", "exp", "iat", "iss", "aud", "jti", "client_id", "roles", "org", "practitioner", "patient")
    for key in keys:
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
