"""OpenID Connect on the authorization code grant (OpenID Connect Core 1.0 §3.1, SMART App Launch
v2 "Scopes for requesting identity data"): the ``id_token`` and ``/.well-known/openid-configuration``
(OpenID Connect Discovery 1.0 §3).

An app granted ``openid`` gets an ID token with the access token: a JWT signed RS256 with the
platform's key ring (``kid`` in the header, verifiable with ``/.well-known/jwks.json``), for the
client (``aud`` = client_id), carrying the ``nonce`` of the authorization request. ``fhirUser``
adds the URL of the user's FHIR record (their Practitioner, or a patient's own Patient);
``profile`` adds ``name`` and ``preferred_username``. The issuer is the platform's root URL, where
the discovery document is served.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from telemed.identity import tokens
from telemed.identity.keys import ALGORITHM, TokenKeys
from telemed.identity.login import own_patient

OPENID = "openid"
FHIR_USER = "fhirUser"
PROFILE = "profile"
SCOPES = (OPENID, FHIR_USER, PROFILE)
CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser", "name", "preferred_username"]
MAX_NONCE = 512


def fhir_user(acct) -> str | None:
    """``Patient/{id}`` of a patient-role account linked to its record, else ``Practitioner/{id}``."""
    patient = own_patient(acct)
    if patient:
        return f"Patient/{patient}"
    return f"Practitioner/{acct.practitioner_id}" if acct.practitioner_id else None


def id_token(
    keys: TokenKeys,
    acct,
    scopes: list[str],
    *,
    issuer: str,
    client_id: str,
    fhir_base: str,
    now: datetime,
    ttl_seconds: int,
    nonce: str | None = None,
) -> str | None:
    """The ID token of a grant (None unless ``openid`` was granted). ``acct`` is the account row."""
    if OPENID not in scopes:
        return None
    claims: dict = {
        "iss": issuer,
        "sub": acct.username,
        "aud": client_id,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
    }
    if nonce:
        claims["nonce"] = nonce
    if FHIR_USER in scopes and (ref := fhir_user(acct)):
        claims["fhirUser"] = f"{fhir_base}/{ref}"
    if PROFILE in scopes:
        claims["name"] = acct.display_name
        claims["preferred_username"] = acct.username
    return tokens.sign_claims(keys, claims, ttl_seconds)


def configuration(endpoints: dict, issuer: str, scopes: list[str]) -> dict:
    """The OpenID Provider metadata (Discovery §3), from the same endpoints as the SMART configuration."""
    return {
        "issuer": issuer,
        **endpoints,
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "claims_supported": CLAIMS,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
    }
