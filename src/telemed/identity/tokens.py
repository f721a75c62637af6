"""Bearer access tokens: JWTs (RFC 7519, RFC 9068 shape) signed RS256 with the platform's key ring.

The header names the signing key (``kid``); the public keys are published at
``/.well-known/jwks.json`` (:mod:`telemed.identity.keys`), so resource servers and SMART apps can
verify a token without any shared secret, and keys rotate without invalidating issued tokens.
Scopes follow SMART on FHIR's ``user/Type.read|write|*`` shape; the OAuth 2.0 flows, the login API,
the portal session and ``telemed token create`` all issue tokens here.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import jwt

from telemed.fhir.store.context import AccessContext
from telemed.identity.keys import ALGORITHM, TokenKeys
from telemed.identity.policy import clinical_mode, may_reveal

ISSUER = "telemed"
AUDIENCE = "telemed-fhir"
# A portal session for someone without an account of their own (an external expert invited to one
# consultation): only the portal accepts this audience, so such a token is no bearer token for
# /fhir or /api. The claim ``consultation`` names the one consultation the session may open.
GUEST_AUDIENCE = "telemed-portal-guest"
GUEST_CONSULTATION_CLAIM = "consultation"
__all__ = ["ALGORITHM", "TokenError", "issue_token", "decode", "context_from_token", "context_from_claims"]


class TokenError(Exception):
    """The token is missing, malformed, expired or not signed by us."""


def _keys(keys: TokenKeys) -> TokenKeys:
    if not isinstance(keys, TokenKeys):  # the former HS256 API took the server secret here
        raise TypeError("Access tokens are signed with the key ring: pass services.token_keys, not a secret")
    return keys


def issue_token(
    keys: TokenKeys,
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
    return sign_claims(keys, claims, ttl_seconds)


def sign_claims(keys: TokenKeys, claims: dict, ttl_seconds: int | None = None) -> str:
    """``claims`` as a JWT signed with the active key (``kid`` in the header)."""
    kid, private = _keys(keys).signing_key(ttl_seconds)
    return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": kid})


def decode(keys: TokenKeys, token: str, audience: str | tuple[str, ...] = AUDIENCE) -> dict:
    """The verified claims of a token (signature by a published key, issuer, audience, expiry);
    raises TokenError.

    Only platform access tokens by default: a guest session token (another audience) is refused."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError(f"The access token is invalid ({exc})") from None
    kid = header.get("kid")
    # The algorithm is ours, never the token's: only RS256 with a key of our ring verifies.
    if header.get("alg") != ALGORITHM or not isinstance(kid, str):
        raise TokenError("The access token is invalid (not signed with a platform key)")
    public = _keys(keys).verification_key(kid[:128])
    if public is None:
        raise TokenError("The access token is invalid (unknown or withdrawn signing key)")
    try:
        return jwt.decode(
            token, public, algorithms=[ALGORITHM], audience=audience, issuer=ISSUER, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("The access token has expired") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"The access token is invalid ({exc})") from None


def context_from_token(keys: TokenKeys, token: str) -> AccessContext:
    return context_from_claims(decode(keys, token))


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
