"""Bearer access tokens: JWTs (RFC 7519) signed with the server key (HS256).

Scopes follow SMART on FHIR's ``user/Type.read|write|*`` shape, so the OAuth2 flows of the identity
issue can issue the same tokens.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import jwt

from telemed.fhir.store.context import AccessContext
from telemed.identity.policy import clinical_mode, may_reveal

ISSUER = "telemed"
AUDIENCE = "telemed-fhir"
# A portal session for someone without an account of their own (an external expert invited to one
# consultation): only the portal accepts this audience, so such a token is no bearer token for
# /fhir or /api. The claim ``consultation`` names the one consultation the session may open.
GUEST_AUDIENCE = "telemed-portal-guest"
GUEST_CONSULTATION_CLAIM = "consultation"
ALGORITHM = "HS256"


class TokenError(Exception):
    """The token is missing, malformed, expired or not signed by us."""


def issue_token(
    secret: str,
    user: str,
    scopes: list[str],
    ttl_seconds: int,
    now: datetime,
    roles: list[str],
    *,
    organization: str | None = None,
    practitioner: str | None = None,
    patient: str | None = None,
    audience: str = AUDIENCE,
    extra: dict | None = None,
) -> str:
    """A signed access token; the caller's institution and Practitioner travel in it so each
    request can be checked without a database lookup. ``audience`` and ``extra`` claims are for
    tokens that are not platform access tokens (:data:`GUEST_AUDIENCE`)."""
    claims = {
        **(extra or {}),
        "iss": ISSUER,
        "aud": audience,
        "sub": user,
        "scope": " ".join(scopes),
        "roles": roles,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    for key, value in (("org", organization), ("practitioner", practitioner), ("patient", patient)):
        if value:
            claims[key] = value
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode(secret: str, token: str, audience: str | tuple[str, ...] = AUDIENCE) -> dict:
    """The verified claims of a token (signature, issuer, audience, expiry); raises TokenError.

    Only platform access tokens by default: a guest session token (another audience) is refused."""
    try:
        return jwt.decode(
            token, secret, algorithms=[ALGORITHM], audience=audience, issuer=ISSUER, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("The access token has expired") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"The access token is invalid ({exc})") from None


def context_from_token(secret: str, token: str) -> AccessContext:
    return context_from_claims(decode(secret, token))


def context_from_claims(claims: dict) -> AccessContext:
    scopes = frozenset(str(claims.get("scope", "")).split()) or frozenset({"user/*.*"})
    roles = frozenset(claims.get("roles", []))
    return AccessContext(
        user=claims["sub"],
        scopes=scopes,
        roles=roles,
        organization=claims.get("org"),
        practitioner=claims.get("practitioner"),
        patient=claims.get("patient"),
        clinical=clinical_mode(roles),
        reveal=may_reveal(roles),
    )
