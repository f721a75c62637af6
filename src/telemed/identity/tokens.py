"""Bearer access tokens: JWTs (RFC 7519) signed with the server key (HS256).

Scopes follow SMART on FHIR's ``user/Type.read|write|*`` shape, so the OAuth2 flows of the identity
issue can issue the same tokens.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import jwt

from telemed.fhir.store.context import AccessContext

ISSUER = "telemed"
AUDIENCE = "telemed-fhir"
ALGORITHM = "HS256"


class TokenError(Exception):
    """The token is missing, malformed, expired or not signed by us."""


def issue_token(secret: str, user: str, scopes: list[str], ttl_seconds: int, now: datetime, roles: list[str]) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user,
        "scope": " ".join(scopes),
        "roles": roles,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def context_from_token(secret: str, token: str) -> AccessContext:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("The access token has expired") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"The access token is invalid ({exc})") from None
    scopes = frozenset(str(claims.get("scope", "")).split()) or frozenset({"user/*.*"})
    return AccessContext(user=claims["sub"], scopes=scopes, roles=frozenset(claims.get("roles", [])))
