"""A user logs in through the SMART authorization-code flow in a real browser (Debian's Chromium
driven by Playwright), in Chinese by default, and the app's code exchange yields a working token."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.identity.test_authentication import PASSWORD, bearer, make_user
from tests.identity.test_oauth import REDIRECT, _authorize_params, _client, _pkce

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(os.environ.get("TELEMED_SCREENSHOTS", "var/screenshots"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make deps)")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_smart_authorization_code_login_in_chromium(browser, server, services, backend):
    user = make_user(services)
    app = _client(
        services, grant_types=["authorization_code"], scopes=["user/*.rs"], redirect_uris=[REDIRECT], public=True
    )[0]
    verifier, challenge = _pkce()
    page = browser.new_page(locale="zh-CN")
    captured: list[str] = []
    # The app's redirect URI is not reachable here: record where the browser was sent.
    page.on("request", lambda r: captured.append(r.url) if r.url.startswith(REDIRECT) else None)
    query = httpx.QueryParams(_authorize_params(server, app, challenge))
    page.goto(f"{server.url}/oauth/authorize?{query}")
    assert "用户名" in page.content() and "登录" in page.content()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"oauth-login-{backend}.png"), full_page=True)
    page.fill("#username", user)
    page.fill("#password", "wrong-password")
    page.click("button[type=submit]")
    assert "登录" in page.content() and not captured  # refused: the form is shown again with a message
    page.goto(f"{server.url}/oauth/authorize?{query}")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_timeout(500)
    assert captured, page.content()
    redirect = parse_qs(urlsplit(captured[0]).query)
    assert redirect["state"] == ["st-123"]
    token = httpx.post(
        f"{server.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": redirect["code"][0],
            "redirect_uri": REDIRECT,
            "client_id": app,
            "code_verifier": verifier,
        },  # fmt: skip
    ).json()["access_token"]
    assert httpx.get(f"{server.url}/fhir/Organization", headers=bearer(token)).status_code == 200
    page.close()


def test_smart_patient_launch_in_chromium(browser, server, services, backend):
    """A doctor's standalone launch: sign in, pick one of their own patients, and the token is
    bound to it (patient in the token response, only that patient's records)."""
    from tests.identity.test_smart_launch import World, _user

    world = World(server, services)
    doctor = _user(services, world.org, ["requesting-doctor"])
    scopes = ["patient/*.rs", "launch/patient", "openid", "fhirUser"]
    app = _client(services, grant_types=["authorization_code"], scopes=scopes, redirect_uris=[REDIRECT], public=True)[0]
    verifier, challenge = _pkce()
    page = browser.new_page(locale="zh-CN")
    captured: list[str] = []
    page.on("request", lambda r: captured.append(r.url) if r.url.startswith(REDIRECT) else None)
    query = httpx.QueryParams(_authorize_params(server, app, challenge, scope="launch/patient patient/*.rs openid"))
    page.goto(f"{server.url}/oauth/authorize?{query}")
    page.fill("#username", doctor)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("input[name=patient]")
    content = page.content()
    assert "选择患者" in content and "乙二" in content and "丙三" not in content
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"oauth-patient-picker-{backend}.png"), full_page=True)
    page.check(f"input[name=patient][value='{world.p2}']")
    page.click("button[value=choose]")
    page.wait_for_timeout(500)
    assert captured, page.content()
    code = parse_qs(urlsplit(captured[0]).query)["code"][0]
    body = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app,
              "code_verifier": verifier},
    ).json()  # fmt: skip
    assert body["patient"] == world.p2 and body["id_token"]
    bundle = httpx.get(f"{server.url}/fhir/Observation", headers=bearer(body["access_token"])).json()
    assert {e["resource"]["id"] for e in bundle.get("entry", [])} == {world.obs[world.p2]}
    page.close()
