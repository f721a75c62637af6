"""Asymmetric access tokens and refresh tokens, over real HTTP on SQLite and PostgreSQL.

- an outside verifier (PyJWT alone, with the JWK published at ``jwks_uri``) verifies our tokens;
- a rotation made by another instance (its own key ring on the same database, as the command line
  does) keeps earlier tokens valid, signs new ones with the new kid, and withdraws the old key once
  its tokens have expired; tokens signed with the server secret (HS256) or unsigned are refused;
- refresh tokens of the authorization code grant: rotation, reuse detection (the family and its
  access token are revoked, and it is audited), revocation, introspection, "log out everywhere".
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import httpx
import jwt
import pytest

from telemed.__main__ import main
from telemed.db.engine import unit_of_work
from telemed.identity import TokenKeys, issue_token
from telemed.identity.keys import CACHE_SECONDS
from telemed.identity.oauth import register_client
from telemed.kernel.clock import FixedClock
from tests.conftest import unique
from tests.identity.test_authentication import bearer, login, make_user
from tests.identity.test_oauth import REDIRECT, _authorize_params, _login_via_form, _pkce, _token


def _kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def _jwks(server) -> dict:
    conf = httpx.get(f"{server.url}/fhir/.well-known/smart-configuration").json()
    assert conf["jwks_uri"] == f"{server.url}/.well-known/jwks.json"
    r = httpx.get(conf["jwks_uri"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    return r.json()


def test_an_outside_verifier_checks_a_token_with_the_published_key(server, services):
    user = make_user(services)
    token = login(server.url, user).json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"]
    keys = {k["kid"]: k for k in _jwks(server)["keys"]}
    jwk = keys[header["kid"]]
    assert jwk["kty"] == "RSA" and jwk["use"] == "sig" and jwk["alg"] == "RS256" and "d" not in jwk
    # PyJWT with nothing but the published JWK: no secret shared with the platform.
    public = jwt.PyJWK.from_dict(jwk).key
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="telemed-fhir", issuer="telemed")
    assert claims["sub"] == user and claims["org"] == "org-a"
    # The same through PyJWKClient, which fetches the JWK Set itself.
    key = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    assert jwt.decode(token, key.key, algorithms=["RS256"], audience="telemed-fhir")["sub"] == user
    # An altered payload does not verify.
    head, body, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["roles"] = ["platform-admin"]
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{body}.{sig}", public, algorithms=["RS256"], audience="telemed-fhir")
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(f"{head}.{body}.{sig}")).status_code == 401


def test_tokens_signed_with_the_server_secret_or_unsigned_are_refused(server, services):
    user = make_user(services)
    good = jwt.decode(login(server.url, user).json()["access_token"], options={"verify_signature": False})
    hs256 = jwt.encode(good, services.secret_key, algorithm="HS256")  # the former scheme
    kid = {"kid": _jwks(server)["keys"][0]["kid"]}
    hs256_kid = jwt.encode(good, services.secret_key, algorithm="HS256", headers=kid)
    unsigned = jwt.encode(good, None, algorithm="none", headers=kid)
    for token in (hs256, hs256_kid, unsigned):
        r = httpx.get(f"{server.url}/fhir/Organization", headers=bearer(token))
        assert r.status_code == 401, token
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    with pytest.raises(TypeError, match="token_keys"):
        issue_token(services.secret_key, user, ["user/*.*"], 60, services.clock.now(), [])


def test_rotation_keeps_earlier_tokens_valid_and_signs_with_the_new_key(server, services, capsys, monkeypatch):
    user = make_user(services)
    # A key of this test's own: other tests of the session may have signed long-lived tokens
    # (which keep a key published longer) with the key active until now.
    services.token_keys.rotate()
    before = login(server.url, user).json()["access_token"]
    old_kid = _kid(before)
    # The rotation of another instance or of ``telemed keys rotate-signing``: same database, own key ring.
    s = services.settings
    monkeypatch.setenv("TELEMED_DATABASE_URL", s.database_url)
    monkeypatch.setenv("TELEMED_SECRET_KEY", services.secret_key)
    assert main(["keys", "rotate-signing"]) == 0
    out = capsys.readouterr().out
    new_kid = out.split("signed with key ")[1].split()[0]
    assert new_kid != old_kid and f"retired {old_kid}" in out
    assert main(["keys", "list-signing"]) == 0
    listing = capsys.readouterr().out
    assert f"{new_kid}  active" in listing and f"{old_kid}  published until" in listing

    # The token issued before the rotation still works (the server reloads the keys on an unknown kid).
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(before)).status_code == 200
    services.token_keys.refresh()  # the server would pick the new key up within CACHE_SECONDS
    after = login(server.url, user).json()["access_token"]
    assert _kid(after) == new_kid
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(after)).status_code == 200
    published = [k["kid"] for k in _jwks(server)["keys"]]
    assert published[0] == new_kid and old_kid in published

    # Once every token of the old key has expired (the normal lifetime after the rotation), it is withdrawn.
    later = FixedClock(services.clock.now() + timedelta(seconds=s.token_ttl_seconds + CACHE_SECONDS + 60))
    ring = TokenKeys(services.engine, services.secret_key, later, s.token_ttl_seconds)
    assert ring.verification_key(old_kid) is None and ring.verification_key(new_kid) is not None
    assert old_kid not in [k["kid"] for k in ring.jwks()["keys"]]


def test_a_long_lived_token_keeps_its_key_published_after_rotation(services):
    ttl = services.settings.token_ttl_seconds
    now = services.clock.now()
    ring = TokenKeys(services.engine, services.secret_key, FixedClock(now), ttl)
    ring.rotate()
    token = issue_token(ring, unique("cli"), ["user/*.rs"], 10 * ttl, now, [])  # telemed token create --ttl
    kid, _ = ring.rotate()
    assert _kid(token) != kid
    at = FixedClock(now + timedelta(seconds=5 * ttl))
    assert TokenKeys(services.engine, services.secret_key, at, ttl).verification_key(_kid(token)) is not None
    gone = FixedClock(now + timedelta(seconds=10 * ttl + CACHE_SECONDS + 60))
    assert TokenKeys(services.engine, services.secret_key, gone, ttl).verification_key(_kid(token)) is None


# --- refresh tokens ------------------------------------------------------------------------------


def _refresh_client(services, public: bool = True) -> tuple[str, str | None]:
    with unit_of_work(services.engine) as conn:
        return register_client(
            conn, unique("app"), grant_types=["authorization_code"], scopes=["user/*.cruds", "offline_access"],
            redirect_uris=[REDIRECT], public=public,
        )  # fmt: skip


def _exchange(server, services, cid: str, user: str, secret: str | None = None, scope="user/*.rs offline_access"):
    verifier, challenge = _pkce()
    params = _authorize_params(server, cid, challenge, scope=scope)
    with httpx.Client() as http:
        _, r = _login_via_form(http, server, params, user)
    assert r.status_code == 303, r.text
    code = httpx.URL(r.headers["location"]).params["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    auth = (cid, secret) if secret else None
    r = _token(server.url, data if secret else {**data, "client_id": cid}, auth=auth)
    assert r.status_code == 200, r.text
    return r.json()


def _use(server, cid: str, refresh_token: str, secret: str | None = None, **extra) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    if secret:
        return _token(server.url, data, auth=(cid, secret))
    return _token(server.url, {**data, "client_id": cid})


def test_refresh_rotation_and_reuse_detection(server, services):
    cid, _ = _refresh_client(services)
    user = make_user(services)
    first = _exchange(server, services, cid, user)
    assert first["scope"] == "user/*.rs offline_access" and first["refresh_token"]

    second = _use(server, cid, first["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"] and second["scope"] == "user/*.rs offline_access"
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(second["access_token"])).status_code == 200
    narrower = _use(server, cid, second["refresh_token"], scope="user/*.rs")
    assert narrower.status_code == 200 and narrower.json()["scope"] == "user/*.rs"
    third = narrower.json()
    wider = _use(server, cid, third["refresh_token"], scope="user/*.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"

    # The first token again: a replay. Refused, and the whole family ends, with its live access token.
    reuse = _use(server, cid, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert "already used" in reuse.json()["error_description"]
    assert _use(server, cid, third["refresh_token"]).json()["error"] == "invalid_grant"
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(third["access_token"])).status_code == 401

    # Another client cannot use someone else's refresh token; junk is refused.
    other, _ = _refresh_client(services)
    fresh = _exchange(server, services, cid, user)
    assert _use(server, other, fresh["refresh_token"]).json()["error"] == "invalid_grant"
    assert _use(server, cid, "junk").json()["error"] == "invalid_grant"
    assert _use(server, cid, fresh["refresh_token"]).status_code == 200  # the failed tries did not spend it

    auditor = issue_token(services.token_keys, unique("aud"), ["user/*.*"], 600, services.clock.now(), ["auditor"])
    found = httpx.get(f"{server.url}/fhir/AuditEvent", params={"agent": user}, headers=bearer(auditor)).json()
    kinds = [e["resource"]["subtype"][0]["code"] for e in found.get("entry", [])]
    assert kinds.count("token-reuse") == 1 and kinds.count("token-issue") >= 5


def test_no_refresh_token_without_offline_access(server, services):
    cid, _ = _refresh_client(services)
    user = make_user(services)
    body = _exchange(server, services, cid, user, scope="user/*.rs")
    assert "refresh_token" not in body
    with unit_of_work(services.engine) as conn:  # a client not registered for offline_access never gets one
        plain, _ = register_client(conn, unique("app"), grant_types=["authorization_code"], scopes=["user/*.rs"],
                                   redirect_uris=[REDIRECT], public=True)  # fmt: skip
    body = _exchange(server, services, plain, user)
    assert "refresh_token" not in body and body["scope"] == "user/*.rs"


def test_refresh_revocation_introspection_and_logout_everywhere(server, services):
    cid, secret = _refresh_client(services, public=False)
    user = make_user(services)
    tokens = _exchange(server, services, cid, user, secret)

    def introspect(value: str) -> dict:
        return httpx.post(f"{server.url}/oauth/introspect", data={"token": value}, auth=(cid, secret)).json()

    info = introspect(tokens["refresh_token"])
    assert info["active"] is True and info["token_type"] == "refresh_token" and info["client_id"] == cid
    assert info["username"] == user and info["scope"] == "user/*.rs offline_access"
    stranger_cid, stranger_secret = _refresh_client(services, public=False)
    assert httpx.post(f"{server.url}/oauth/introspect", data={"token": tokens["refresh_token"]},
                      auth=(stranger_cid, stranger_secret)).json() == {"active": False}  # fmt: skip

    r = httpx.post(f"{server.url}/oauth/revoke", data={"token": tokens["refresh_token"],
                   "token_type_hint": "refresh_token"}, auth=(cid, secret))  # fmt: skip
    assert r.status_code == 200
    assert introspect(tokens["refresh_token"]) == {"active": False}
    assert _use(server, cid, tokens["refresh_token"], secret).json()["error"] == "invalid_grant"
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(tokens["access_token"])).status_code == 401

    # "Log out everywhere" ends refresh tokens too.
    tokens = _exchange(server, services, cid, user, secret)
    assert introspect(tokens["refresh_token"])["active"] is True
    api_token = login(server.url, user).json()["access_token"]
    assert httpx.post(f"{server.url}/api/auth/logout-all", headers=bearer(api_token)).status_code == 204
    assert introspect(tokens["refresh_token"]) == {"active": False}
    assert _use(server, cid, tokens["refresh_token"], secret).json()["error"] == "invalid_grant"


def test_smart_configuration_advertises_refresh_and_keys(server):
    conf = httpx.get(f"{server.url}/.well-known/smart-configuration").json()
    assert "refresh_token" in conf["grant_types_supported"]
    assert {"offline_access", "online_access"} <= set(conf["scopes_supported"])
    assert {"permission-offline", "permission-online"} <= set(conf["capabilities"])
    assert conf["jwks_uri"].endswith("/.well-known/jwks.json")
