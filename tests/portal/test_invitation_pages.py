"""Inviting an external expert over HTTP (live server, both databases): the triage officer sees the
link and code once; the link signs the expert in once; the guest session opens that consultation
only, and is no bearer token for the FHIR API."""

from __future__ import annotations

import logging
import re

import httpx

from telemed.consultation import service
from telemed.db.engine import unit_of_work
from telemed.identity import ensure_account
from telemed.portal.session import SESSION_COOKIE
from tests.consultation.network import build
from tests.consultation.test_service import details, run
from tests.portal.conftest import browser_client, csrf_of
from tests.portal.test_consultation_pages import _session

LINK = re.compile(r'id="invite-link"[^>]*>([^<]+)<')
CODE = re.compile(r'id="invite-code"[^>]*>(\d{6})<')


def _accepted(services, net, **kw) -> str:
    cid = run(services, net.ctx("requester"), service.create, details(net, **kw)).consultation.id
    run(services, net.ctx("requester"), service.act, cid, "submit")
    run(services, net.ctx("qc"), service.act, cid, "accept")
    return cid


def _invite(services, server, net, cid) -> tuple[str, str]:
    triage = net.ctx("triage")
    with unit_of_work(services.engine) as conn:
        ensure_account(conn, triage.user, "分诊员", ["triage-officer"], services.clock.now(), None, net.centre)
    client, _token = _session(services, server, triage.user)
    page = client.get(f"/portal/consultations/{cid}")
    assert page.status_code == 200 and f'action="/portal/consultations/{cid}/invite"' in page.text
    form = {"csrf_token": csrf_of(page), "name": "陈教授", "institution": "上海瑞金医院", "title": "主任医师",
            "email": "chen@ruijin.example.cn", "phone": "13800138000", "hours": "72"}  # fmt: skip
    done = client.post(f"/portal/consultations/{cid}/invite", data=form)
    assert done.status_code == 200, done.text[:500]
    assert "仅显示这一次" in done.text and done.headers["cache-control"] == "no-store"
    link, code = LINK.search(done.text).group(1), CODE.search(done.text).group(1)
    assert link.startswith(services.site_url + "/portal/invite/")
    case = client.get(f"/portal/consultations/{cid}")
    assert "陈教授" in case.text and "上海瑞金医院" in case.text and code not in case.text
    return link.removeprefix(services.site_url), code


def _redeem(server, path: str, code: str) -> httpx.Client:
    guest = browser_client(server.url)
    page = guest.get(path)
    assert page.status_code == 200 and "陈教授" in page.text and 'name="code"' in page.text
    wrong = guest.post(path, data={"csrf_token": csrf_of(page), "code": "abcdef"})
    assert wrong.status_code == 200 and "验证码不正确，还可尝试4次" in wrong.text
    assert SESSION_COOKIE not in guest.cookies
    done = guest.post(path, data={"csrf_token": csrf_of(wrong), "code": code})
    assert done.status_code == 303 and SESSION_COOKIE in guest.cookies, done.text[:500]
    return guest, done.headers["location"]


def test_the_guest_opens_only_its_consultation(services, server, caplog):
    caplog.set_level(logging.INFO, logger="telemed.access")
    net = build(services)
    cid = _accepted(services, net)
    other = _accepted(services, net)
    path, code = _invite(services, server, net, cid)

    anonymous = browser_client(server.url)
    no_csrf = anonymous.post(path, data={"code": code})
    assert no_csrf.status_code == 403  # the anonymous form needs its pre-session CSRF token too

    guest, location = _redeem(server, path, code)
    assert location == f"/portal/consultations/{cid}"
    case = guest.get(location)
    assert case.status_code == 200 and "张伟" in case.text and 'id="op-impression"' in case.text
    assert 'class="mainnav"' not in case.text  # no menu of pages a guest cannot open

    for refused in ("/portal/", "/portal/consultations", "/portal/consultations/new", "/portal/board",
                    "/portal/statistics", "/portal/account/security", f"/portal/consultations/{other}",
                    f"/portal/consultations/{cid}-x", f"/portal/consultations/{other}/attachments/x"):  # fmt: skip
        answer = guest.get(refused)
        assert answer.status_code in (403, 404), (refused, answer.status_code)
    assert guest.get(f"/portal/consultations/{other}").status_code == 404  # another case: as if none
    assert guest.get("/portal/lang/en", params={"next": location}).status_code == 303

    # The guest's token is no bearer token for the FHIR API (nor /api).
    bearer = {"Authorization": f"Bearer {guest.cookies[SESSION_COOKIE]}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{server.url}/fhir/Patient", headers=bearer).status_code == 401
    assert httpx.get(f"{server.url}/fhir/Patient/{net.patient}", headers=bearer).status_code == 401

    # The link worked once.
    again = browser_client(server.url)
    assert again.get(path).status_code == 404
    # The access log keeps the link's shape, not its token.
    paths = [getattr(r, "path", "") for r in caplog.records if r.name == "telemed.access"]
    assert "/portal/invite/[redacted]" in paths and path not in paths

    # Signing out ends the guest session.
    out = guest.post("/portal/logout", data={"csrf_token": csrf_of(case)})
    assert out.status_code == 303
    assert guest.get(location).status_code == 303  # to the login page


def test_the_guest_writes_and_signs_an_opinion(services, server):
    net = build(services)
    cid = _accepted(services, net)
    path, code = _invite(services, server, net, cid)
    guest, location = _redeem(server, path, code)
    case = guest.get(location)
    opinion = {"csrf_token": csrf_of(case), "impression": "考虑主动脉夹层，建议CTA"}
    saved = guest.post(f"{location}/opinion", data=opinion)
    assert saved.status_code == 303
    case = guest.get(location)
    assert 'id="do-sign"' in case.text
    version = re.search(r'name="version" value="(\d+)"', case.text.split('id="opinion"', 1)[1]).group(1)
    signed = guest.post(f"{location}/act", data={"csrf_token": csrf_of(case), "event": "sign", "version": version})
    assert signed.status_code == 303, signed.text[:500]
    case = guest.get(location)
    assert "考虑主动脉夹层" in case.text and 'id="report-link"' in case.text
    report = re.search(r'href="(/portal/consultations/[^"]+\.pdf)"', case.text).group(1)
    pdf = guest.get(report)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_an_unknown_or_expired_link_is_a_page_in_chinese(services, server):
    client = browser_client(server.url)
    page = client.get("/portal/invite/not-a-real-token")
    assert page.status_code == 404 and "此邀请链接无效或已被使用" in page.text
