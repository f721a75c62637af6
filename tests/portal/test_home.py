"""The home page: a friendly default, sections and menu entries registered for roles."""

from __future__ import annotations

from markupsafe import Markup, escape

from telemed.portal import home, nav
from tests.identity.test_authentication import make_user
from tests.portal.conftest import browser_client, sign_in


def test_default_home_names_the_user_institution_and_roles(browser, services):
    user = make_user(services, role="supervisor")
    sign_in(browser, user)
    page = browser.get("/portal/")
    assert page.status_code == 200
    assert "我的账户" in page.text and "监管人员" in page.text and "org-a" in page.text
    browser.get("/portal/lang/en")
    page = browser.get("/portal/")
    assert "Your account" in page.text and "Read-only supervisor" in page.text


def test_sections_and_menu_entries_follow_the_roles(browser, services):
    role = "portal-test-role"
    seen = []

    def section(request, user) -> Markup:
        seen.append(user.username)
        return Markup('<section class="card" id="test-section">{}</section>').format(escape(user.display_name))

    added = home.register_home_section({role}, section, order=5)
    nav.register_nav("Home", "/portal/test-entry", roles={role}, order=50)
    try:
        user = make_user(services, role=role)
        sign_in(browser, user)
        page = browser.get("/portal/")
        assert 'id="test-section">Test<' in page.text and "我的账户" not in page.text
        assert 'href="/portal/test-entry"' in page.text and seen == [user]
        with browser_client(str(browser.base_url)) as other:
            sign_in(other, make_user(services, role="supervisor"))
            page = other.get("/portal/")
            assert "test-section" not in page.text and 'href="/portal/test-entry"' not in page.text
    finally:
        home.home_sections.remove(added)
        nav._entries.pop("/portal/test-entry", None)
