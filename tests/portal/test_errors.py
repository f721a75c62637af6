"""Errors under /portal are pages in the user's language with the category's status; /api and
/fhir keep their problem details and OperationOutcomes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter

from telemed.app import create_app
from telemed.kernel.errors import Category, Issue, TelemedError
from telemed.portal.exceptions import PortalError
from telemed.portal.session import CurrentUser
from tests.conftest import LiveServer
from tests.identity.test_authentication import make_user
from tests.portal.conftest import browser_client, csrf_of, sign_in

pages = APIRouter()


@pages.get("/portal/test/conflict")
def conflict(user: CurrentUser) -> None:
    raise PortalError(Category.CONFLICT, "The consultation was already accepted by %(name)s", name="Dr Li")


@pages.get("/portal/test/unprocessable")
def unprocessable(user: CurrentUser) -> None:
    raise TelemedError(
        Category.UNPROCESSABLE,
        "The request is not complete",
        [Issue("Not found", expression="patient"), Issue("Some detail nobody translated", expression="reason")],
    )


@pages.get("/portal/test/store-404")
def store_not_found(user: CurrentUser) -> None:
    raise TelemedError(Category.NOT_FOUND, "Patient/p-123 is not known")


@pages.get("/portal/test/crash")
def crash(user: CurrentUser) -> None:
    raise RuntimeError("secret internals")


@pages.post("/portal/test/json")
def post_json(body: dict, user: CurrentUser) -> dict:
    return {"echo": body, "user": user.username}


@pytest.fixture(scope="module")
def error_server(services) -> Iterator[LiveServer]:
    app = create_app(services)
    from fastapi import Depends

    from telemed.portal.session import require_csrf

    app.include_router(pages, dependencies=[Depends(require_csrf)])
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def signed_in(error_server, services) -> Iterator[httpx.Client]:
    with browser_client(error_server.url) as client:
        assert sign_in(client, make_user(services)).status_code == 303
        yield client


def test_unknown_portal_page_is_a_localized_404(signed_in):
    r = signed_in.get("/portal/no/such/page")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert "未找到" in r.text and "Test" in r.text  # the header still shows who is signed in
    signed_in.get("/portal/lang/en")
    r = signed_in.get("/portal/no/such/page")
    assert r.status_code == 404 and "Not found" in r.text and '<html lang="en">' in r.text


def test_conflict_shows_the_reason_translated(signed_in, monkeypatch):
    r = signed_in.get("/portal/test/conflict")
    assert r.status_code == 409 and "操作冲突" in r.text
    # Not in any catalogue: the English reason is shown, filled in, under the Chinese heading.
    assert "The consultation was already accepted by Dr Li" in r.text


def test_unprocessable_lists_the_problems(signed_in):
    r = signed_in.get("/portal/test/unprocessable")
    assert r.status_code == 422 and "请修改以下内容" in r.text
    assert "patient: 未找到" in r.text and "reason: Some detail nobody translated" in r.text


def test_a_store_404_keeps_its_detail_out_of_the_way(signed_in):
    r = signed_in.get("/portal/test/store-404")
    assert r.status_code == 404 and "该页面或记录不存在" in r.text
    assert "技术细节" in r.text and "Patient/p-123 is not known" in r.text


def test_a_crash_is_a_page_without_internals(signed_in):
    r = signed_in.get("/portal/test/crash")
    assert r.status_code == 500 and "出错了" in r.text and "secret internals" not in r.text


def test_json_routes_take_the_csrf_header(signed_in):
    home = signed_in.get("/portal/")
    refused = signed_in.post("/portal/test/json", json={"a": 1}, headers={"Accept": "application/json"})
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "表单已过期或并非来自本站，请刷新页面后重试"
    ok = signed_in.post("/portal/test/json", json={"a": 1}, headers={"X-CSRF-Token": csrf_of(home)})
    assert ok.status_code == 200 and ok.json()["echo"] == {"a": 1}


def test_validation_errors_are_listed(signed_in):
    home = signed_in.get("/portal/")
    r = signed_in.post(
        "/portal/test/json", content=b"[1,", headers={"X-CSRF-Token": csrf_of(home), "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "请修改以下内容" in r.text


def test_other_paths_keep_their_error_formats(error_server):
    api = httpx.post(f"{error_server.url}/api/auth/logout")
    assert api.status_code == 401 and api.headers["content-type"] == "application/problem+json"
    fhir = httpx.get(f"{error_server.url}/fhir/Patient")
    assert fhir.status_code == 401 and fhir.json()["resourceType"] == "OperationOutcome"
    missing = httpx.get(f"{error_server.url}/api/nothing-here")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


def test_unknown_language_and_unsafe_redirects(error_server):
    with browser_client(error_server.url) as client:
        assert client.get("/portal/lang/fr").status_code == 404
        for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "/api/x"):
            r = client.get("/portal/lang/en", params={"next": target})
            assert r.status_code == 303 and r.headers["location"] == "/portal/"
