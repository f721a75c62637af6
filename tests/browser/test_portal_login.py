"""The portal in a real browser (Debian's Chromium driven by Playwright): a browser at the root
lands on the Chinese login page, a wrong password is refused, the right one opens the home page,
the language switch turns the page into English, and signing out ends the session.

Screenshots go to docs/screenshots (``TELEMED_SCREENSHOTS`` overrides): portal-login.png and
portal-home.png are the documentation's; the English and phone-sized ones are for review."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from tests.conftest import unique
from tests.identity.test_authentication import PASSWORD, make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = Path(os.environ.get("TELEMED_SCREENSHOTS", "docs/screenshots"))
REVIEW = Path("var/screenshots")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make deps)")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _hospital(services) -> str:
    org_id = unique("org")
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        repo.update("Organization", org_id, {"resourceType": "Organization", "id": org_id, "name": "清河县人民医院"})
    return org_id


def test_sign_in_home_language_switch_and_sign_out(browser, server, services, backend):
    user = make_user(services, role="nurse", org=_hospital(services))
    SHOTS.mkdir(parents=True, exist_ok=True)
    REVIEW.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []  # script errors and CSP violations; stylesheets, scripts, icons that fail to load

    def on_console(message) -> None:
        if message.type == "error" and "Failed to load" not in message.text:  # (error pages are meant)
            errors.append(message.text)

    def on_response(response) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            errors.append(response.url)

    page.on("console", on_console)
    page.on("response", on_response)

    page.goto(server.url + "/")  # a browser at the root is sent to the portal, then to its login page
    assert page.url.startswith(server.url + "/portal/login")
    assert page.locator("h1").inner_text() == "登录"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.screenshot(path=str(SHOTS / "portal-login.png"))

    page.fill("#username", user)
    page.fill("#password", "Wrong-Password-1")
    page.click("button[type=submit]")
    assert page.locator(".alert-error").inner_text() == "用户名或密码错误"
    assert page.input_value("#username") == user and page.input_value("#password") == ""

    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/portal/")
    assert page.locator("h1").inner_text() == "您好，Test"
    assert "清河县人民医院" in page.content() and "护士" in page.content()
    assert page.locator(".mainnav [aria-current=page]").inner_text() == "首页"
    page.screenshot(path=str(SHOTS / "portal-home.png"))

    page.click(".lang-switch a[lang=en]")
    page.wait_for_url(server.url + "/portal/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "Welcome, Test"
    assert page.locator(".mainnav").inner_text().split() == ["Home", "Account", "security"]
    assert "Nurse" in page.content() and "Sign out" in page.content()
    page.screenshot(path=str(REVIEW / f"portal-home-en-{backend}.png"))

    page.click("text=Account security")
    assert page.locator("h1").inner_text() == "Account security"
    page.click("text=Set up two-step verification")
    assert page.locator(".qr svg").is_visible() and page.locator(".secret").inner_text()
    page.screenshot(path=str(REVIEW / f"portal-security-en-{backend}.png"), full_page=True)
    page.goto(server.url + "/portal/no-such-page")
    assert page.locator("h1").inner_text() == "Not found"
    page.screenshot(path=str(REVIEW / f"portal-404-en-{backend}.png"))
    page.goto(server.url + "/portal/")

    page.click(".usermenu button[type=submit]")
    page.wait_for_url("**/portal/login?signed_out=1")
    assert page.locator(".alert-info").inner_text() == "You have signed out."
    page.goto(server.url + "/portal/")
    assert "/portal/login" in page.url  # the session is over
    assert not errors, errors  # no script errors, no CSP violations
    context.close()


def test_the_pages_fit_a_phone(browser, server, services, backend):
    user = make_user(services, role="requesting-doctor", org=_hospital(services))
    context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    page.goto(server.url + "/portal/login")
    page.screenshot(path=str(REVIEW / f"portal-login-phone-{backend}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/portal/")
    page.screenshot(path=str(REVIEW / f"portal-home-phone-{backend}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    context.close()
