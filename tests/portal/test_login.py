"""Signing in to the portal: session cookie, logout, messages in both languages, lockout, TOTP
two-step login, CSRF, revoked sessions, enrollment-only sessions."""

from __future__ import annotations

import re

import httpx
import pyotp
import pytest

from telemed.app import Services, create_app
from telemed.db.migrate import upgrade
from telemed.portal.session import SESSION_COOKIE
from tests.conftest import LiveServer, make_settings
from tests.identity.test_authentication import PASSWORD, make_user
from tests.portal.conftest import browser_client, csrf_of, sign_in


def test_anonymous_browsers_are_sent_to_the_login_page(browser):
    r = browser.get("/portal/", params={"x": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/portal/login?next=%2Fportal%2F%3Fx%3D1"
    page = browser.get(r.headers["location"])
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    assert "登录" in page.text and "用户名" in page.text and "密码" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # A script asking for JSON gets a 401 with a (localized) problem, not a redirect.
    api = browser.get("/portal/", headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json()["detail"] == "请登录"


def test_sign_in_home_and_sign_out(browser, services):
    user = make_user(services)
    r = sign_in(browser, user, next_url="/portal/?from=login")
    assert r.status_code == 303 and r.headers["location"] == "/portal/?from=login"
    cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/portal" in cookie and "Secure" not in cookie  # http base URL
    home = browser.get("/portal/")
    assert home.status_code == 200 and "您好，Test" in home.text and "申请医生" in home.text
    assert 'aria-current="page">首页<' in home.text
    token = browser.cookies[SESSION_COOKIE]

    out = browser.post("/portal/logout", data={"csrf_token": csrf_of(home)})
    assert out.status_code == 303 and out.headers["location"] == "/portal/login?signed_out=1"
    assert "您已安全退出" in browser.get(out.headers["location"]).text
    assert browser.get("/portal/").status_code == 303
    # The old cookie is revoked, not merely forgotten by the browser.
    with browser_client(browser.base_url) as replay:
        replay.cookies.set(SESSION_COOKIE, token, path="/portal")
        assert replay.get("/portal/").status_code == 303


def test_an_unsafe_next_is_ignored(browser, services):
    user = make_user(services)
    r = sign_in(browser, user, next_url="//evil.example/portal")
    assert r.headers["location"] == "/portal/"


def test_wrong_password_in_chinese_then_in_english(browser, services):
    user = make_user(services)
    r = sign_in(browser, user, "Wrong-Password-1")
    assert r.status_code == 200 and "用户名或密码错误" in r.text and SESSION_COOKIE not in browser.cookies
    assert f'value="{user}"' in r.text  # the user name is kept, the password is not
    switch = browser.get("/portal/lang/en", params={"next": "/portal/login"})
    assert switch.status_code == 303 and switch.headers["location"] == "/portal/login"
    assert browser.cookies["lang"] == "en"
    r = sign_in(browser, user, "Wrong-Password-1")
    assert r.status_code == 200 and "The user name or password is incorrect" in r.text
    assert '<html lang="en">' in r.text and "用户名" not in r.text
    unknown = sign_in(browser, unique_nobody(), "x")  # unknown users get the same answer
    assert "The user name or password is incorrect" in unknown.text


def unique_nobody() -> str:
    from tests.conftest import unique

    return unique("nobody")


def test_lockout_message(browser, services):
    user = make_user(services)
    for _ in range(5):
        assert "用户名或密码错误" in sign_in(browser, user, "Wrong-Password-1").text
    locked = sign_in(browser, user)
    assert locked.status_code == 403 and "账户已被锁定" in locked.text and "15 分钟" in locked.text


def test_empty_form_is_refused_politely(browser):
    page = browser.get("/portal/login")
    r = browser.post("/portal/login", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 400 and "请输入用户名和密码" in r.text


def _enroll(client: httpx.Client) -> tuple[str, list[str]]:
    """Turn TOTP on through the security page; returns the secret and the recovery codes."""
    page = client.get("/portal/account/security")
    assert page.status_code == 200 and "两步验证未开启" in page.text
    started = client.post("/portal/account/security", data={"action": "start", "csrf_token": csrf_of(page)})
    assert started.status_code == 303
    page = client.get("/portal/account/security")
    assert "<svg" in page.text  # the QR code
    secret = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', page.text).group(1).replace(" ", "")
    wrong = client.post(
        "/portal/account/security", data={"action": "confirm", "code": "000000", "csrf_token": csrf_of(page)}
    )
    assert wrong.status_code == 422 and "验证码不匹配" in wrong.text
    done = client.post(
        "/portal/account/security",
        data={"action": "confirm", "code": pyotp.TOTP(secret).now(), "csrf_token": csrf_of(page)},
    )
    assert done.status_code == 200 and "两步验证已开启" in done.text
    codes = re.findall(r"<li><code>([0-9a-f]{8}-[0-9a-f]{8})</code></li>", done.text)
    assert len(codes) == 10
    # The page after enrollment already belongs to the new session: its forms carry its token.
    assert client.post("/portal/logout", data={"csrf_token": csrf_of(done)}).status_code == 303
    return secret, codes


def test_totp_two_step_login_with_code_and_recovery_code(browser, services):
    user = make_user(services)
    assert sign_in(browser, user).status_code == 303
    secret, codes = _enroll(browser)

    step = sign_in(browser, user)
    assert step.status_code == 200 and 'name="code"' in step.text and "两步验证" in step.text
    assert SESSION_COOKIE not in browser.cookies  # the password alone gives no session
    wrong = browser.post("/portal/login/code", data={"code": "000000", "csrf_token": csrf_of(step)})
    assert wrong.status_code == 200 and "验证码无效" in wrong.text and SESSION_COOKIE not in browser.cookies
    assert 'href="/portal/lang/en?next=/portal/login/code"' in wrong.text  # the language switch leads ...
    assert browser.get("/portal/login/code").headers["location"] == "/portal/login"  # ... back to the login
    ok = browser.post("/portal/login/code", data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf_of(step)})
    assert ok.status_code == 303 and ok.headers["location"] == "/portal/"
    home = browser.get("/portal/")
    assert home.status_code == 200
    browser.post("/portal/logout", data={"csrf_token": csrf_of(home)})

    step = sign_in(browser, user)
    recovered = browser.post("/portal/login/code", data={"code": codes[0], "csrf_token": csrf_of(step)})
    assert recovered.status_code == 303
    page = browser.get("/portal/account/security")
    assert "还剩 9 个未使用的恢复码" in page.text


def test_the_code_step_needs_the_password_step(browser):
    page = browser.get("/portal/login")
    r = browser.post("/portal/login/code", data={"code": "123456", "csrf_token": csrf_of(page)})
    assert r.status_code == 200 and "登录已超时" in r.text and 'name="password"' in r.text


def test_csrf_is_required_for_every_state_change(browser, services):
    page = browser.get("/portal/login")
    no_token = browser.post("/portal/login", data={"username": "x", "password": "y"})
    assert no_token.status_code == 403 and "表单已过期" in no_token.text
    forged = browser.post("/portal/login", data={"username": "x", "password": "y", "csrf_token": "0" * 64})
    assert forged.status_code == 403

    user = make_user(services)
    assert sign_in(browser, user).status_code == 303
    home = browser.get("/portal/")
    assert browser.post("/portal/logout").status_code == 403
    # A pre-session token is no longer enough once signed in? It still only proves the same browser:
    # what matters is that another site cannot read either token.
    assert browser.post("/portal/logout", data={"csrf_token": csrf_of(page)[::-1]}).status_code == 403
    assert browser.get("/portal/").status_code == 200  # still signed in
    header = browser.post("/portal/logout", headers={"X-CSRF-Token": csrf_of(home)})
    assert header.status_code == 303


def test_a_session_revoked_elsewhere_is_refused(browser, server, services):
    user = make_user(services)
    sign_in(browser, user)
    assert browser.get("/portal/").status_code == 200
    token = browser.cookies[SESSION_COOKIE]
    everywhere = httpx.post(f"{server.url}/api/auth/logout-all", headers={"Authorization": f"Bearer {token}"})
    assert everywhere.status_code == 204
    r = browser.get("/portal/")
    assert r.status_code == 303 and r.headers["location"].startswith("/portal/login")


def test_sign_out_everywhere_from_the_security_page(browser, services):
    user = make_user(services)
    sign_in(browser, user)
    with browser_client(browser.base_url) as other:
        sign_in(other, user)
        assert other.get("/portal/").status_code == 200
        page = browser.get("/portal/account/security")
        out = browser.post("/portal/logout", data={"csrf_token": csrf_of(page), "everywhere": "1"})
        assert out.status_code == 303
        assert other.get("/portal/").status_code == 303


def test_browsers_at_the_root_go_to_the_portal(server):
    assert httpx.get(server.url + "/", headers={"Accept": "text/html"}).headers["location"] == "/portal/"
    assert httpx.get(server.url + "/").json()["name"] == "Telemed"


@pytest.fixture
def production_server(tmp_path):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/prod.db").model_copy(update={"demo": False})
    services = Services.from_settings(settings)
    upgrade(services.engine)
    with LiveServer(create_app(services)) as live:
        yield live, services


def test_a_clinician_without_two_factor_must_enroll_first(production_server):
    server, services = production_server
    user = make_user(services)
    with browser_client(server.url) as client:
        r = sign_in(client, user, PASSWORD, next_url="/portal/")
        assert r.status_code == 303 and r.headers["location"] == "/portal/account/security"
        assert client.get("/portal/").headers["location"] == "/portal/account/security"
        page = client.get("/portal/account/security")
        assert "您的角色要求开启两步验证" in page.text and 'class="mainnav"' not in page.text
        secret, _codes = _enroll(client)
        # Signed out by _enroll; signing in now takes the code and gives a full session.
        step = sign_in(client, user)
        ok = client.post("/portal/login/code", data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf_of(step)})
        assert ok.headers["location"] == "/portal/"
        assert client.get("/portal/").status_code == 200
