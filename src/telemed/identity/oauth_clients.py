"""OAuth 2.0 clients (no HTTP here): the registry, client authentication and SMART scope grants.

A *confidential* client has an Argon2-hashed secret (client_secret_basic or client_secret_post);
a *public* client (a browser or mobile app) has none and must use the authorization code grant
with PKCE. A system client (``client_credentials``) acts with its own roles and hospital.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from sqlalchemy import Connection, insert, select

from telemed.db.schema import oauth_client as t_client
from telemed.identity import passwords
from telemed.identity.refresh import SCOPES as REFRESH_SCOPES

LAUNCH_PATIENT = "launch/patient"
# Scopes that ask for context rather than data: OpenID Connect identity (telemed.identity.oidc) and
# the SMART standalone patient launch (telemed.identity.launch).
CONTEXT_SCOPES = ("openid", "fhirUser", "profile", LAUNCH_PATIENT)

_DUMMY_HASH = passwords.hash_password("not-a-real-client-secret-Zq9!")
GRANT_TYPES = ("authorization_code", "client_credentials")

# SMART scopes: ``system|user|patient/<Type|*>.<v1 read|write|* or v2 c r u d s>``, plus
# ``offline_access`` and ``online_access`` (a refresh token with the authorization code grant), and
# the context scopes above. Query-qualified v2 scopes (``?category=...``) are not granted. A
# ``patient/`` scope binds the token to one patient (the launch's patient context).
_SCOPE = re.compile(r"^(system|user|patient)/([A-Z][A-Za-z]{1,63}|\*)\.(read|write|\*|[cruds]{1,5})$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 §5.2 / §4.1.2.1)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    public: bool
    redirect_uris: list[str]
    grant_types: list[str]
    scopes: list[str]
    roles: list[str]
    organization_id: str | None


def register_client(
    conn: Connection,
    name: str,
    *,
    grant_types: list[str] | tuple[str, ...] = ("client_credentials",),
    scopes: list[str] | tuple[str, ...] = (),
    roles: list[str] | tuple[str, ...] = (),
    redirect_uris: list[str] | tuple[str, ...] = (),
    organization_id: str | None = None,
    public: bool = False,
    client_id: str | None = None,
    now: datetime | None = None,
) -> tuple[str, str | None]:
    """Register a client; returns ``(client_id, secret)`` (the secret is shown once; None when public)."""
    unknown = [g for g in grant_types if g not in GRANT_TYPES]
    if unknown:
        raise ValueError(f"Unsupported grant types: {unknown}")
    if public and "client_credentials" in grant_types:
        raise ValueError("A public client cannot use client_credentials")
    if "authorization_code" in grant_types and not redirect_uris:
        raise ValueError("The authorization code grant needs at least one redirect URI")
    bad = [s for s in scopes if not _SCOPE.match(s) and s not in REFRESH_SCOPES and s not in CONTEXT_SCOPES]
    if bad:
        raise ValueError(f"Unsupported scopes: {bad}")
    client_id = client_id or "c-" + secrets.token_hex(10)
    secret = None if public else secrets.token_urlsafe(32)
    conn.execute(
        insert(t_client).values(
            client_id=client_id,
            name=name,
            secret_hash=passwords.hash_password(secret) if secret else None,
            redirect_uris=list(redirect_uris),
            grant_types=list(grant_types),
            scopes=list(scopes),
            roles=list(roles),
            organization_id=organization_id,
            active=True,
            created=now or datetime.now(UTC),
        )
    )
    return client_id, secret


def get_client(conn: Connection, client_id: str) -> Client | None:
    row = conn.execute(select(t_client).where(t_client.c.client_id == client_id[:64])).first()
    if row is None or not row.active:
        return None
    return Client(
        row.client_id, row.name, row.secret_hash is None, list(row.redirect_uris), list(row.grant_types),
        list(row.scopes), list(row.roles), row.organization_id,
    )  # fmt: skip


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "Malformed Basic credentials", 401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "Malformed Basic credentials", 401)
    return unquote_plus(client_id), unquote_plus(secret)  # RFC 6749 §2.3.1: form-encoded first


def authenticate_client(conn: Connection, authorization: str, form: dict[str, str], *, allow_public: bool) -> Client:
    """The client making a request, by client_secret_basic, client_secret_post or (when
    ``allow_public``) a bare ``client_id`` of a public client. Raises ``invalid_client`` (401)."""
    basic = basic_credentials(authorization)
    if basic and "client_secret" in form:
        raise OAuthError("invalid_request", "Use one client authentication method, not two")
    if basic:
        client_id, secret = basic
        if form.get("client_id") not in (None, client_id):
            raise OAuthError("invalid_client", "client_id does not match the Basic credentials", 401)
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
    if not client_id:
        raise OAuthError("invalid_client", "Client authentication is required", 401)
    client = get_client(conn, client_id)
    if client is not None and client.public:
        if secret is None and allow_public:
            return client
        raise OAuthError("invalid_client", "Client authentication failed", 401)
    stored = None
    if client is not None:
        stored = conn.execute(select(t_client.c.secret_hash).where(t_client.c.client_id == client_id)).scalar()
    # Verify even for unknown clients so the response time does not reveal which ids exist.
    ok = passwords.verify_password(stored or _DUMMY_HASH, secret or "")
    if client is None or not ok:
        raise OAuthError("invalid_client", "Client authentication failed", 401)
    return client


def _parse(scope: str) -> tuple[str, str, frozenset[str]] | None:
    m = _SCOPE.match(scope)
    if not m:
        return None
    context, rtype, access = m.groups()
    return context, rtype, frozenset(_V1.get(access, access))


def covers(allowed: str, requested: str) -> bool:
    """Whether the ``allowed`` scope includes everything ``requested`` asks for."""
    a, r = _parse(allowed), _parse(requested)
    return bool(a and r and a[0] == r[0] and a[1] in ("*", r[1]) and r[2] <= a[2])


def grant_scopes(requested: list[str], allowed: list[str], context: str) -> list[str]:
    """The requested scopes (of ``context``: ``system``, ``user`` or ``patient``) that the client may have;
    others are left out (RFC 6749 §3.3: the server may grant less than asked; the response's
    ``scope`` says what was granted). No request means every allowed scope of the context."""
    allowed = [s for s in allowed if s.startswith(context + "/")]
    if not requested:
        return allowed
    wanted = [s for s in dict.fromkeys(requested) if s.startswith(context + "/")]
    return [s for s in wanted if any(covers(a, s) for a in allowed)]


def refresh_scope(requested: list[str], allowed: list[str]) -> list[str]:
    """``offline_access`` or ``online_access`` when requested and allowed for the client (offline
    wins when both are asked for): the token response then carries a refresh token."""
    granted = [s for s in REFRESH_SCOPES if s in requested and s in allowed]
    return granted[:1]


def context_scopes(requested: list[str], allowed: list[str]) -> list[str]:
    """The requested ``openid``, ``fhirUser``, ``profile`` and ``launch/patient`` the client may have
    (``fhirUser`` and ``profile`` only with ``openid``: they are claims of the ID token)."""
    granted = [s for s in CONTEXT_SCOPES if s in requested and s in allowed]
    if "openid" not in granted:
        granted = [s for s in granted if s == LAUNCH_PATIENT]
    return granted
