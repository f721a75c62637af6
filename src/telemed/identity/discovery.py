"""Discovery: ``/.well-known/smart-configuration`` (SMART App Launch v2 §2.3, also under the FHIR
base URL), ``/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0) and the JWK Set that
verifies our access and ID tokens (``/.well-known/jwks.json``, RFC 7517). Both configurations are
built from one list of endpoints, so they cannot disagree.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from telemed.identity import oidc

router = APIRouter(tags=["oauth"])


def fhir_base(request: Request) -> str:
    """This server's FHIR base URL (``TELEMED_BASE_URL``, else from the request)."""
    configured = request.app.state.services.settings.base_url
    return (configured or str(request.base_url).rstrip("/") + "/fhir").rstrip("/")


def root(request: Request) -> str:
    """The platform's root URL: the OAuth endpoints and the OpenID Connect issuer."""
    base = fhir_base(request)
    return base[: -len("/fhir")] if base.endswith("/fhir") else str(request.base_url).rstrip("/")


SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch/patient", "patient/*.cruds", "patient/*.rs",
    "user/*.cruds", "user/*.rs", "system/*.cruds", "system/*.rs", "offline_access", "online_access",
]  # fmt: skip


def _endpoints(base: str) -> dict:
    """What the SMART configuration and the OpenID Provider metadata both say."""
    return {
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
    }


def smart_configuration(request: Request) -> JSONResponse:
    """SMART App Launch v2 §2.3 (``.well-known/smart-configuration``)."""
    base = root(request)
    body = {
        "issuer": base,
        **_endpoints(base),
        "response_types_supported": ["code"],
        "scopes_supported": SCOPES_SUPPORTED,
        # Standalone launch with a patient context; no EHR launch (no launch parameter) yet.
        "capabilities": [
            "launch-standalone", "context-standalone-patient", "client-public", "client-confidential-symmetric",
            "sso-openid-connect", "permission-patient", "permission-user", "permission-v1", "permission-v2",
            "permission-offline", "permission-online",
        ],
    }  # fmt: skip
    return JSONResponse(body, headers={"Cache-Control": "max-age=3600"})


def openid_configuration(request: Request) -> JSONResponse:
    """OpenID Connect Discovery 1.0 §4: the provider metadata, at ``{issuer}/.well-known/openid-configuration``."""
    base = root(request)
    body = oidc.configuration(_endpoints(base), base, SCOPES_SUPPORTED)
    return JSONResponse(body, headers={"Cache-Control": "max-age=3600"})


def jwks(request: Request) -> JSONResponse:
    """The public keys that verify our access tokens (RFC 7517 JWK Set), retired ones included
    until the last token they signed has expired."""
    return JSONResponse(request.app.state.services.token_keys.jwks(), headers={"Cache-Control": "max-age=300"})


router.add_api_route("/.well-known/jwks.json", jwks, methods=["GET"])

# SMART serves it under the FHIR base URL; the root copy is for generic OAuth discovery clients.
router.add_api_route("/.well-known/smart-configuration", smart_configuration, methods=["GET"])
router.add_api_route("/fhir/.well-known/smart-configuration", smart_configuration, methods=["GET"])
router.add_api_route("/.well-known/openid-configuration", openid_configuration, methods=["GET"])
