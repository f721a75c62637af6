"""Logging in: Argon2 passwords and policy, lockout, TOTP with recovery codes, logout (one token
and everywhere), SMART-style scopes, and the audit of each."""

from __future__ import annotations

import httpx
import pyotp
import pytest

from telemed.app import Services, create_app
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.identity import ensure_account, issue_token
from telemed.identity.passwords import hash_password
from tests.conftest import LiveServer, make_settings, unique

PASSWORD = "Correct-Horse-42"


def make_user(services, role: str = "requesting-doctor", org: str = "org-a") -> str:
    username = unique("u")
    with unit_of_work(services.engine) as conn:
        ensure_account(
            conn, username, "Test", [role], services.clock.now(), None, org, password_hash=hash_password(PASSWORD)
        )
    return username


def login(url: str, username: str, password: str = PASSWORD, code: str | None = None) -> httpx.Response:
    return httpx.post(f"{url}/api/auth/login", json={"username": username, "password": password, "code": code})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def test_login_and_use_the_token(server, services):
    user = make_user(services)
    r = login(server.url, user)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(token)).status_code == 200


def test_wrong_password_then_lockout(server, services):
    user = make_user(services)
    for _ in range(5):
        r = login(server.url, user, "Wrong-Password-1")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    locked = login(server.url, user)  # even the right password is refused while locked
    assert locked.status_code == 403 and "locked" in locked.json()["detail"]
    unknown = login(server.url, unique("nobody"))
    assert unknown.status_code == 401 and unknown.json()["detail"] == "Invalid user name or password"


def test_totp_enrollment_codes_and_recovery(server, services):
    user = make_user(services)
    token = login(server.url, user).json()["access_token"]
    setup = httpx.post(f"{server.url}/api/auth/totp/setup", headers=bearer(token)).json()
    assert setup["otpauth_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(setup["secret"])
    assert (
        httpx.post(f"{server.url}/api/auth/totp/confirm", json={"code": "000000"}, headers=bearer(token)).status_code
        == 422
    )
    codes = httpx.post(f"{server.url}/api/auth/totp/confirm", json={"code": totp.now()}, headers=bearer(token)).json()
    recovery = codes["recovery_codes"]
    assert len(recovery) == 10
    assert login(server.url, user).status_code == 401  # a code is now required
    assert login(server.url, user, code=totp.now()).status_code == 200
    assert login(server.url, user, code=recovery[0]).status_code == 200
    assert login(server.url, user, code=recovery[0]).status_code == 401  # one-time


def test_logout_and_logout_everywhere(server, services):
    user = make_user(services)
    first = login(server.url, user).json()["access_token"]
    second = login(server.url, user).json()["access_token"]
    assert httpx.post(f"{server.url}/api/auth/logout", headers=bearer(first)).status_code == 204
    assert httpx.get(f"{server.url}/fhir/metadata", headers=bearer(first)).status_code == 401
    assert httpx.get(f"{server.url}/fhir/metadata", headers=bearer(second)).status_code == 200
    assert httpx.post(f"{server.url}/api/auth/logout-all", headers=bearer(second)).status_code == 204
    assert httpx.get(f"{server.url}/fhir/metadata", headers=bearer(second)).status_code == 401


def test_password_policy_and_history(server, services):
    user = make_user(services)
    token = login(server.url, user).json()["access_token"]

    def change(old: str, new: str) -> httpx.Response:
        body = {"old_password": old, "new_password": new}
        return httpx.post(f"{server.url}/api/auth/password", json=body, headers=bearer(token))

    weak = change(PASSWORD, "password123")
    assert weak.status_code == 422 and "commonly used" in weak.json()["detail"]
    assert "10 characters" in change(PASSWORD, "Ab1!").json()["detail"]
    assert change(PASSWORD, PASSWORD).status_code == 422  # reuse
    assert change("not-it", "Brand-New-Pass-7").status_code == 401
    assert change(PASSWORD, "Brand-New-Pass-7").status_code == 204
    assert login(server.url, user, "Brand-New-Pass-7").status_code == 200


def test_scopes_limit_what_a_token_can_do(server, services):
    read_only = issue_token(
        services.token_keys, unique("r"), ["user/Patient.rs"], 600, services.clock.now(), ["platform-admin"]
    )
    h = bearer(read_only)
    assert httpx.get(f"{server.url}/fhir/Patient", headers=h).status_code == 200
    assert httpx.post(f"{server.url}/fhir/Patient", json={"resourceType": "Patient"}, headers=h).status_code == 403
    assert httpx.get(f"{server.url}/fhir/Observation", headers=h).status_code == 403


@pytest.fixture
def production_server(tmp_path):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/prod.db").model_copy(update={"demo": False})
    services = Services.from_settings(settings)
    upgrade(services.engine)
    with LiveServer(create_app(services)) as live:
        yield live, services


def test_clinical_roles_must_enroll_in_two_factor_outside_demo_mode(production_server):
    server, services = production_server
    user = make_user(services)
    r = login(server.url, user)
    assert r.status_code == 200 and r.json()["mfa_enrollment_required"] is True
    limited = r.json()["access_token"]
    assert httpx.get(f"{server.url}/fhir/Patient", headers=bearer(limited)).status_code == 403
    secret = httpx.post(f"{server.url}/api/auth/totp/setup", headers=bearer(limited)).json()["secret"]
    code = pyotp.TOTP(secret).now()
    assert (
        httpx.post(f"{server.url}/api/auth/totp/confirm", json={"code": code}, headers=bearer(limited)).status_code
        == 200
    )
    full = login(server.url, user, code=pyotp.TOTP(secret).now()).json()
    assert full["mfa_enrollment_required"] is False
    assert httpx.get(f"{server.url}/fhir/Patient", headers=bearer(full["access_token"])).status_code == 200
    supervisor = make_user(services, role="supervisor")  # no clinical data: no second factor needed
    assert login(server.url, supervisor).json()["mfa_enrollment_required"] is False


def test_logins_are_audited(server, services):
    user = make_user(services)
    login(server.url, user, "Wrong-Password-1")
    login(server.url, user)
    auditor = issue_token(services.token_keys, "aud", ["user/*.*"], 600, services.clock.now(), ["auditor"])
    found = httpx.get(f"{server.url}/fhir/AuditEvent", params={"agent": user}, headers=bearer(auditor)).json()
    kinds = sorted(e["resource"]["subtype"][0]["code"] for e in found["entry"])
    assert kinds == ["login", "login-failed"]
