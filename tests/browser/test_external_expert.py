"""An external expert in a real browser (Debian's Chromium driven by Playwright): the triage officer
invites them from the case page and reads the link and code once; the expert opens the link in a
browser of their own, enters the code, writes and signs an opinion, and can open nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from telemed.consultation import service
from tests.browser.test_consultation_flow import ARGS, CHROMIUM, _act, _login, _users
from tests.consultation.network import build
from tests.consultation.test_service import details, run

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make deps)")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_external_expert_signs_an_opinion_in_the_browser(browser, server, services):
    net = build(services)
    users = _users(services, net)
    cid = run(services, net.ctx("requester"), service.create, details(net)).consultation.id
    run(services, net.ctx("requester"), service.act, cid, "submit")
    run(services, net.ctx("qc"), service.act, cid, "accept")
    case_url = f"{server.url}/portal/consultations/{cid}"

    triage = _login(browser, server, users["triage"], "zh-CN")
    triage.goto(case_url)
    triage.click("details.invite summary")
    triage.fill("#inv-name", "陈教授")
    triage.fill("#inv-title", "主任医师")
    triage.fill("#inv-institution", "上海瑞金医院")
    triage.fill("#inv-email", "chen@ruijin.example.cn")
    triage.fill("#inv-phone", "13800138000")
    triage.click("#do-invite")
    triage.wait_for_selector("#invite-code")
    link = triage.locator("#invite-link").inner_text().strip()
    code = triage.locator("#invite-code").inner_text().strip()
    assert re.fullmatch(r"\d{6}", code) and "/portal/invite/" in link
    triage.context.close()

    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    expert = context.new_page()
    expert.goto(server.url + link[link.index("/portal/invite/") :])
    assert "陈教授" in expert.locator("#invitation").inner_text()
    expert.fill("#code", "000000" if code != "000000" else "111111")
    expert.click("#do-redeem")
    expert.wait_for_load_state("load")
    assert "还可尝试4次" in expert.locator("#invitation").inner_text()
    expert.fill("#code", code)
    expert.click("#do-redeem")
    expert.wait_for_url(re.compile(rf".*/portal/consultations/{cid}$"))
    assert expert.locator("#patient-name").inner_text() == "张伟"
    assert expert.locator("nav.mainnav").count() == 0

    expert.fill("#op-impression", "考虑主动脉夹层可能，建议急诊CTA。")
    expert.click("#save-opinion")
    expert.wait_for_load_state("load")
    _act(expert, "sign")
    assert expert.locator("#state").inner_text() == "报告已签发"
    assert "上海瑞金医院" in expert.locator("#actions").inner_text()
    href = expert.locator("#report-link").get_attribute("href")
    pdf = expert.request.get(f"{server.url}{href}")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")

    # Nothing else opens: the worklist of other consultations is not there for a guest.
    answer = expert.goto(f"{server.url}/portal/consultations")
    assert answer.status == 404 and expert.locator("h1").first.inner_text() == "未找到"
    context.close()
