"""OAuth 2.0 for the FHIR API: client credentials, authorization code + PKCE through the login
page, introspection, revocation and SMART discovery, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from telemed.db.engine import unit_of_work
from telemed.identity.oauth import register_client
from tests.conftest import unique
from tests.identity.test_authentication import PASSWORD, bearer, make_user

REDIRECT = "https://app.example.org/callback"


def _client(services, **kwargs) -> tuple[str, str | None]:
    with unit_of_work(services.engine) as conn:
        return register_client(conn, unique("app"), **kwargs)


def _system_client(services) -> tuple[str, str]:
    return _client(
        services, grant_types=["client_credentials"], scopes=["system/*.rs", "system/Organization.cruds"],
        roles=["requesting-doctor"], organization_id="org-a",
    )  # fmt: skip


def _token(url: str, data: dict, auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/oauth/token", data=data, auth=auth)


def test_client_credentials(server, services):
    cid, secret = _system_client(services)
    r = _token(server.url, {"grant_type": "client_credentials", "scope": "system/*.rs launch"}, auth=(cid, secret))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.rs"
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(body["access_token"])).status_code == 200
    # client_secret_post works too; no scope asked means every allowed system scope
    r = _token(server.url, {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
    assert r.status_code == 200 and r.json()["scope"] == "system/*.rs system/Organization.cruds"


def test_client_credentials_errors(server, services):
    cid, secret = _system_client(services)
    wrong = _token(server.url, {"grant_type": "client_credentials"}, auth=(cid, "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert "Basic" in wrong.headers["www-authenticate"]
    unknown = _token(server.url, {"grant_type": "client_credentials"}, auth=("nobody", "x"))
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    scope = _token(server.url, {"grant_type": "client_credentials", "scope": "system/*.cud"}, auth=(cid, secret))
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    grant = _token(server.url, {"grant_type": "password", "username": "x"}, auth=(cid, secret))
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    not_form = httpx.post(f"{server.url}/oauth/token", json={"grant_type": "client_credentials"}, auth=(cid, secret))
    assert not_form.status_code == 400 and not_form.json()["error"] == "invalid_request"
    code = _token(server.url, {"grant_type": "authorization_code", "code": "x"}, auth=(cid, secret))
    assert code.status_code == 400 and code.json()["error"] == "unauthorized_client"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_params(server, cid: str, challenge: str, **overrides) -> dict:
    params = {
        "response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "scope": "user/*.rs launch/patient",
        "state": "st-123", "code_challenge": challenge, "code_challenge_method": "S256", "aud": f"{server.url}/fhir",
    }  # fmt: skip
    params.update(overrides)
    return params


def _login_via_form(http: httpx.Client, server, params: dict, username: str, password: str = PASSWORD):
    page = http.get(f"{server.url}/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    form = {**hidden, "csrf_token": csrf, "username": username, "password": password, "code": ""}
    return page, http.post(f"{server.url}/oauth/authorize", data=form)


def _code(server, services, cid: str, challenge: str, username: str) -> str:
    with httpx.Client() as http:
        _, r = _login_via_form(http, server, _authorize_params(server, cid, challenge), username)
    assert r.status_code == 303, r.text
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-123"]
    return query["code"][0]


@pytest.fixture
def app_client(services):
    return _client(
        services, grant_types=["authorization_code"], scopes=["user/*.cruds"], redirect_uris=[REDIRECT], public=True
    )[0]


def test_authorization_code_with_pkce(server, services, app_client):
    user = make_user(services)
    verifier, challenge = _pkce()
    with httpx.Client() as http:
        page = http.get(f"{server.url}/oauth/authorize", params=_authorize_params(server, app_client, challenge))
        assert "用户名" in page.text and "密码" in page.text and "动态验证码" in page.text and "登录" in page.text
        assert page.headers["x-frame-options"] == "DENY"
        english = http.get(
            f"{server.url}/oauth/authorize", params=_authorize_params(server, app_client, challenge, lang="en")
        )
        assert "User name" in english.text and "Password" in english.text and "用户名" not in english.text
    code = _code(server, services, app_client, challenge, user)
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app_client}
    r = _token(server.url, {**exchange, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "user/*.rs"  # launch/patient is not among the client's scopes: not granted
    assert "patient" not in r.json()
    token = r.json()["access_token"]
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(token)).status_code == 200
    assert httpx.post(f"{server.url}/fhir/Organization", json={"resourceType": "Organization"},
                      headers=bearer(token)).status_code == 403  # fmt: skip
    reuse = _token(server.url, {**exchange, "code_verifier": verifier})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"


def test_authorization_code_refusals(server, services, app_client):
    user = make_user(services)
    verifier, challenge = _pkce()
    code = _code(server, services, app_client, challenge, user)
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app_client}
    wrong = _token(server.url, {**base, "code_verifier": _pkce()[0]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # the failed attempt used the code up
    assert _token(server.url, {**base, "code_verifier": verifier}).json()["error"] == "invalid_grant"

    code = _code(server, services, app_client, challenge, user)
    other_uri = {**base, "code": code, "redirect_uri": REDIRECT + "/other", "code_verifier": verifier}
    assert _token(server.url, other_uri).json()["error"] == "invalid_grant"

    with httpx.Client() as http:
        unregistered = http.get(
            f"{server.url}/oauth/authorize", params=_authorize_params(server, app_client, challenge,
                                                                      redirect_uri="https://evil.example/cb"),
        )  # fmt: skip
        assert unregistered.status_code == 400 and "location" not in unregistered.headers
        plain = http.get(
            f"{server.url}/oauth/authorize",
            params=_authorize_params(server, app_client, challenge, code_challenge_method="plain"),
        )
        assert plain.status_code == 303 and "error=invalid_request" in plain.headers["location"]
        bad_aud = http.get(
            f"{server.url}/oauth/authorize", params=_authorize_params(server, app_client, challenge, aud="https://x")
        )
        assert bad_aud.status_code == 303 and "error=invalid_request" in bad_aud.headers["location"]

        page, wrong_password = _login_via_form(
            http, server, _authorize_params(server, app_client, challenge), user, "Wrong-Password-1"
        )
        assert wrong_password.status_code == 401 and "用户名、密码或验证码错误" in wrong_password.text

        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        forged = {**hidden, "csrf_token": "0" * 64, "username": user, "password": PASSWORD}
        assert http.post(f"{server.url}/oauth/authorize", data=forged).status_code == 403
    no_cookie = httpx.post(
        f"{server.url}/oauth/authorize", data={**hidden, "username": user, "password": PASSWORD}
    )  # a fresh client: right token, but no cookie to bind it to
    assert no_cookie.status_code == 403


def test_introspection_and_revocation(server, services):
    cid, secret = _system_client(services)
    token = _token(server.url, {"grant_type": "client_credentials"}, auth=(cid, secret)).json()["access_token"]

    def introspect(value: str) -> dict:
        r = httpx.post(f"{server.url}/oauth/introspect", data={"token": value}, auth=(cid, secret))
        assert r.status_code == 200, r.text
        return r.json()

    info = introspect(token)
    assert info["active"] is True and info["sub"] == f"client:{cid}" and info["client_id"] == cid
    assert info["scope"] == "system/*.rs system/Organization.cruds" and info["exp"] > info["iat"]
    assert introspect("not-a-token") == {"active": False}
    assert introspect(token[:-4] + "AAAA") == {"active": False}
    assert httpx.post(f"{server.url}/oauth/introspect", data={"token": token}).status_code == 401

    other_cid, other_secret = _system_client(services)
    refused = httpx.post(f"{server.url}/oauth/revoke", data={"token": token}, auth=(other_cid, other_secret))
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    assert httpx.post(f"{server.url}/oauth/revoke", data={"token": "junk"}, auth=(cid, secret)).status_code == 200
    assert httpx.get(f"{server.url}/fhir/metadata", headers=bearer(token)).status_code == 200
    assert httpx.post(f"{server.url}/oauth/revoke", data={"token": token}, auth=(cid, secret)).status_code == 200
    assert httpx.get(f"{server.url}/fhir/metadata", headers=bearer(token)).status_code == 401
    assert introspect(token) == {"active": False}


def test_smart_configuration(server):
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        conf = httpx.get(server.url + path).json()
        assert conf["authorization_endpoint"] == f"{server.url}/oauth/authorize"
        assert conf["token_endpoint"] == f"{server.url}/oauth/token"
        assert conf["introspection_endpoint"] == f"{server.url}/oauth/introspect"
        assert conf["revocation_endpoint"] == f"{server.url}/oauth/revoke"
        assert conf["code_challenge_methods_supported"] == ["S256"]
        assert set(conf["grant_types_supported"]) == {"authorization_code", "client_credentials", "refresh_token"}
        assert {"context-standalone-patient", "sso-openid-connect"} <= set(conf["capabilities"])
        assert conf["issuer"] == server.url
        assert "client-confidential-symmetric" in conf["capabilities"]


def test_token_issue_and_refusal_are_audited(server, services):
    from telemed.identity import issue_token

    cid, secret = _system_client(services)
    _token(server.url, {"grant_type": "client_credentials"}, auth=(cid, secret))
    _token(server.url, {"grant_type": "client_credentials"}, auth=(cid, "wrong"))
    auditor = issue_token(services.token_keys, "aud", ["user/*.*"], 600, services.clock.now(), ["auditor"])
    found = httpx.get(
        f"{server.url}/fhir/AuditEvent", params={"agent": f"client:{cid}"}, headers=bearer(auditor)
    ).json()
    kinds = sorted(e["resource"]["subtype"][0]["code"] for e in found.get("entry", []))
    assert kinds == ["token-issue", "token-refused"]
