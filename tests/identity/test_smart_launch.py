"""SMART standalone launch with a patient context (``launch/patient``, ``patient/`` scopes in v1
and v2 forms) and OpenID Connect (``openid fhirUser profile``: the id_token, verified against the
published JWK Set, and ``/.well-known/openid-configuration``), over real HTTP on both databases."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from telemed.db.engine import unit_of_work
from telemed.identity import ensure_account, issue_token
from telemed.identity.passwords import hash_password
from tests.conftest import unique
from tests.identity.test_authentication import PASSWORD, bearer
from tests.identity.test_oauth import REDIRECT, _authorize_params, _client, _login_via_form, _pkce, _token

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class World:
    """Two institutions: ``org`` holds patients ``p1`` and ``p2``, ``other`` holds ``p3``; each
    patient has one Observation (``obs[pid]``)."""

    def __init__(self, server, services):
        self.org, self.other = unique("org"), unique("org")
        self.obs: dict[str, str] = {}
        self.p1, self.p2 = (self._patient(server, services, self.org, n) for n in ("甲一", "乙二"))
        self.p3 = self._patient(server, services, self.other, "丙三")

    @staticmethod
    def _staff_token(services, org: str) -> str:
        user = unique("staff")
        with unit_of_work(services.engine) as conn:
            ensure_account(conn, user, user, ["requesting-doctor"], services.clock.now(), None, org)
        return issue_token(services.token_keys, user, ["user/*.*"], 600, services.clock.now(), ["requesting-doctor"],
                           organization=org)  # fmt: skip

    def _patient(self, server, services, org: str, name: str) -> str:
        h = bearer(self._staff_token(services, org))
        body = {"resourceType": "Patient", "name": [{"text": name}]}  # held by ``org``: its staff created it
        pid = httpx.post(f"{server.url}/fhir/Patient", json=body, headers=h).json()["id"]
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "体温"},
               "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip
        self.obs[pid] = httpx.post(f"{server.url}/fhir/Observation", json=obs, headers=h).json()["id"]
        return pid


@pytest.fixture
def world(server, services) -> World:
    return World(server, services)


def _user(services, org: str, roles: list[str], *, practitioner: str | None = None, patient: str | None = None) -> str:
    username = unique("u")
    with unit_of_work(services.engine) as conn:
        ensure_account(
            conn, username, "测试用户", roles, services.clock.now(), practitioner, None if patient else org,
            password_hash=hash_password(PASSWORD), patient_id=patient,
        )  # fmt: skip
    return username


@pytest.fixture
def launch_client(services) -> str:
    scopes = ["user/*.rs", "patient/*.cruds", "launch/patient", "openid", "fhirUser", "profile", "offline_access"]
    return _client(services, grant_types=["authorization_code"], scopes=scopes, redirect_uris=[REDIRECT],
                   public=True)[0]  # fmt: skip


def _code_from(r: httpx.Response) -> str:
    assert r.status_code == 303, r.text
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert "code" in query, r.headers["location"]
    return query["code"][0]


def _exchange(server, cid: str, code: str, verifier: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": cid,
            "code_verifier": verifier}  # fmt: skip
    return _token(server.url, data)


def _ids(server, token: str, rtype: str) -> set[str]:
    bundle = httpx.get(f"{server.url}/fhir/{rtype}", headers=bearer(token)).json()
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "outcome"}


def _pick(http: httpx.Client, server, hidden: dict, action: str, **fields) -> httpx.Response:
    """Answer the patient picker: ``find`` (search by name) or ``choose``."""
    return http.post(f"{server.url}/oauth/authorize", data={**hidden, "action": action, **fields})


def _verified(id_token: str, key, client_id: str, config: dict) -> dict:
    """PyJWT's verification of an ID token: signature by the published key, RS256, audience, issuer."""
    return jwt.decode(id_token, key.key, algorithms=["RS256"], audience=client_id, issuer=config["issuer"])


def _read(server, token: str, path: str) -> int:
    return httpx.get(f"{server.url}/fhir/{path}", headers=bearer(token)).status_code


def test_practitioner_picks_a_patient_and_the_token_sees_only_that_patient(server, services, world, launch_client):
    doctor = _user(services, world.org, ["requesting-doctor"], practitioner=unique("prac"))
    verifier, challenge = _pkce()
    scope = "launch/patient patient/Observation.rs patient/Patient.read offline_access"
    with httpx.Client() as http:
        params = _authorize_params(server, launch_client, challenge, scope=scope, lang="en")
        _, picker = _login_via_form(http, server, params, doctor)
        assert picker.status_code == 200, picker.text
        assert "Choose a patient" in picker.text
        assert "甲一" in picker.text and "乙二" in picker.text and "丙三" not in picker.text  # the doctor's own rules
        hidden = dict(HIDDEN.findall(picker.text))
        assert hidden["launch_proof"] and "password" not in hidden
        # another institution's patient is refused like a missing one
        refused = _pick(http, server, hidden, "choose", patient_id=world.p3)
        assert refused.status_code == 404 and "unknown" in refused.text
        # a search by name narrows the list
        found = _pick(http, server, hidden, "find", patient_name="乙二")
        assert found.status_code == 200 and "乙二" in found.text and "甲一" not in found.text
        code = _code_from(_pick(http, server, hidden, "choose", patient=world.p1))
    r = _exchange(server, launch_client, code, verifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient"] == world.p1
    assert body["scope"] == "patient/Observation.rs patient/Patient.read launch/patient offline_access"
    assert "id_token" not in body  # no openid asked
    token = body["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["patient"] == world.p1

    assert _ids(server, token, "Observation") == {world.obs[world.p1]}  # not p2's, though the doctor sees p2
    included = httpx.get(f"{server.url}/fhir/Patient", params={"_revinclude": "Observation:subject"},
                         headers=bearer(token)).json()  # fmt: skip
    assert {e["resource"]["id"] for e in included.get("entry", [])} == {world.p1, world.obs[world.p1]}
    history = httpx.get(f"{server.url}/fhir/Observation/_history", headers=bearer(token)).json()
    assert {e["resource"]["id"] for e in history.get("entry", []) if "resource" in e} == {world.obs[world.p1]}
    assert _ids(server, token, "Patient") == {world.p1}
    assert _read(server, token, f"Patient/{world.p1}") == 200
    assert _read(server, token, f"Observation/{world.obs[world.p1]}") == 200
    assert _read(server, token, f"Patient/{world.p2}") == 404
    assert _read(server, token, f"Observation/{world.obs[world.p2]}") == 404
    assert _read(server, token, f"Observation/{world.obs[world.p3]}") == 404
    assert _read(server, token, "Encounter") == 403  # no scope for it
    assert _read(server, token, f"Patient/{world.p2}/$everything") == 404
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{world.p1}"}}  # fmt: skip
    assert httpx.post(f"{server.url}/fhir/Observation", json=obs, headers=bearer(token)).status_code == 403  # .rs

    # a refreshed token keeps the patient context
    again = _token(server.url, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                "client_id": launch_client})  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json()["patient"] == world.p1
    assert _ids(server, again.json()["access_token"], "Observation") == {world.obs[world.p1]}


def test_patient_scopes_in_v2_form_can_write_within_the_patient_only(server, services, world, launch_client):
    doctor = _user(services, world.org, ["requesting-doctor"])
    verifier, challenge = _pkce()
    with httpx.Client() as http:
        params = _authorize_params(server, launch_client, challenge, scope="launch/patient patient/Observation.cruds")
        _, picker = _login_via_form(http, server, params, doctor)
        assert "选择患者" in picker.text  # Chinese by default
        hidden = dict(HIDDEN.findall(picker.text))
        code = _code_from(_pick(http, server, hidden, "choose", patient=world.p2))
    token = _exchange(server, launch_client, code, verifier).json()["access_token"]
    mine = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{world.p2}"}}  # fmt: skip
    assert httpx.post(f"{server.url}/fhir/Observation", json=mine, headers=bearer(token)).status_code == 201
    other = {**mine, "subject": {"reference": f"Patient/{world.p1}"}}
    assert httpx.post(f"{server.url}/fhir/Observation", json=other, headers=bearer(token)).status_code == 404
    nobodys = {k: v for k, v in mine.items() if k != "subject"}  # in no patient's compartment
    assert httpx.post(f"{server.url}/fhir/Observation", json=nobodys, headers=bearer(token)).status_code == 403
    moved = httpx.put(f"{server.url}/fhir/Observation/{world.obs[world.p2]}", headers=bearer(token),
                      json={**other, "id": world.obs[world.p2]})  # fmt: skip
    assert moved.status_code == 404  # to another patient
    assert _ids(server, token, "Observation") >= {world.obs[world.p2]}
    assert world.obs[world.p1] not in _ids(server, token, "Observation")


def test_a_patient_account_gets_its_own_patient_and_an_id_token(server, services, world, launch_client):
    patient_user = _user(services, world.org, ["patient"], patient=world.p1)
    verifier, challenge = _pkce()
    scope = "launch/patient patient/*.rs openid fhirUser profile"
    with httpx.Client() as http:
        params = _authorize_params(server, launch_client, challenge, scope=scope, nonce="n-0S6_WzA2Mj")
        _, r = _login_via_form(http, server, params, patient_user)
        code = _code_from(r)  # no picker: bound to its own record
    body = _exchange(server, launch_client, code, verifier).json()
    assert body["patient"] == world.p1
    assert _ids(server, body["access_token"], "Observation") == {world.obs[world.p1]}
    assert _read(server, body["access_token"], f"Patient/{world.p2}") == 404
    assert _ids(server, body["access_token"], f"Patient/{world.p1}/$everything") == {world.p1, world.obs[world.p1]}

    config = httpx.get(f"{server.url}/.well-known/openid-configuration").json()
    jwks = jwt.PyJWKClient(config["jwks_uri"])
    key = jwks.get_signing_key_from_jwt(body["id_token"])
    claims = _verified(body["id_token"], key, launch_client, config)
    assert jwt.get_unverified_header(body["id_token"])["kid"] == key.key_id
    assert claims["sub"] == patient_user and claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["fhirUser"] == f"{server.url}/fhir/Patient/{world.p1}"
    assert claims["name"] == "测试用户" and claims["preferred_username"] == patient_user
    assert claims["exp"] > claims["iat"]


def test_patient_account_without_a_record_is_refused(server, services, launch_client):
    lonely = _user(services, "org-none", ["patient"])
    _, challenge = _pkce()
    with httpx.Client() as http:
        params = _authorize_params(server, launch_client, challenge, scope="launch/patient patient/*.rs")
        _, r = _login_via_form(http, server, params, lonely)
    assert r.status_code == 303
    assert parse_qs(urlsplit(r.headers["location"]).query)["error"] == ["access_denied"]


def test_openid_connect_for_a_practitioner(server, services, launch_client):
    practitioner = unique("prac")
    doctor = _user(services, unique("org"), ["requesting-doctor"], practitioner=practitioner)
    verifier, challenge = _pkce()
    with httpx.Client() as http:
        params = _authorize_params(server, launch_client, challenge, scope="openid fhirUser user/*.rs", nonce="abc")
        _, r = _login_via_form(http, server, params, doctor)
        code = _code_from(r)
    body = _exchange(server, launch_client, code, verifier).json()
    assert body["scope"] == "user/*.rs openid fhirUser" and "patient" not in body
    config = httpx.get(f"{server.url}/.well-known/openid-configuration").json()
    key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(body["id_token"])
    claims = _verified(body["id_token"], key, launch_client, config)
    assert claims["fhirUser"] == f"{server.url}/fhir/Practitioner/{practitioner}" and claims["nonce"] == "abc"
    assert "name" not in claims  # no profile scope
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(body["id_token"], key.key, algorithms=["RS256"], audience="another-client")


def test_discovery_documents_agree(server):
    oidc = httpx.get(f"{server.url}/.well-known/openid-configuration")
    assert oidc.status_code == 200
    config = oidc.json()
    smart = httpx.get(f"{server.url}/fhir/.well-known/smart-configuration").json()
    assert config["issuer"] == server.url == smart["issuer"]
    endpoints = ("authorization_endpoint", "token_endpoint", "jwks_uri", "revocation_endpoint",
                 "introspection_endpoint")  # fmt: skip
    for key in endpoints:
        assert config[key] == smart[key]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert config["response_types_supported"] == ["code"] and config["subject_types_supported"] == ["public"]
    assert {"openid", "fhirUser", "profile", "launch/patient", "patient/*.rs"} <= set(config["scopes_supported"])
    assert set(config["scopes_supported"]) == set(smart["scopes_supported"])
    assert {"sso-openid-connect", "context-standalone-patient", "permission-patient"} <= set(smart["capabilities"])
    keys = httpx.get(config["jwks_uri"]).json()["keys"]
    assert keys and all(k["alg"] == "RS256" and k["kid"] for k in keys)


def test_an_administrators_launch_is_narrowed_too(server, services, world, launch_client):
    """A platform administrator sees every patient; with a patient context only that one."""
    admin = _user(services, world.other, ["platform-admin"])
    verifier, challenge = _pkce()
    with httpx.Client() as http:
        params = _authorize_params(server, launch_client, challenge, scope="launch/patient patient/*.rs")
        _, picker = _login_via_form(http, server, params, admin)
        hidden = dict(HIDDEN.findall(picker.text))
        code = _code_from(_pick(http, server, hidden, "choose", patient_id=world.p3))
    body = _exchange(server, launch_client, code, verifier).json()
    token = body["access_token"]
    assert body["patient"] == world.p3
    assert _ids(server, token, "Observation") == {world.obs[world.p3]}
    assert _read(server, token, f"Observation/{world.obs[world.p1]}") == 404
    assert _read(server, token, "Organization") == 200  # directory data stays readable
    # introspection reports the context (a confidential client asks)
    cid, secret = _client(services, grant_types=["client_credentials"], scopes=["system/*.rs"])
    info = httpx.post(f"{server.url}/oauth/introspect", data={"token": token}, auth=(cid, secret)).json()
    assert info["active"] and info["patient"] == world.p3
