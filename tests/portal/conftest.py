"""Portal test helpers: a browser-like HTTP client (cookies, no automatic redirects) and sign-in."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.identity.test_authentication import PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, f"no CSRF token in the page ({page.status_code}): {page.text[:300]}"
    return found.group(1)


def browser_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Accept": "text/html"}, follow_redirects=False, timeout=30)


def sign_in(client: httpx.Client, username: str, password: str = PASSWORD, next_url: str = "") -> httpx.Response:
    """GET the login page (for its CSRF token and pre-session cookie), then POST the form."""
    page = client.get("/portal/login")
    form = {"username": username, "password": password, "csrf_token": csrf_of(page), "next": next_url}
    return client.post("/portal/login", data=form)


@pytest.fixture
def browser(server) -> Iterator[httpx.Client]:
    with browser_client(server.url) as c:
        yield c
