"""A remote imaging reading end to end in a real browser (Debian's Chromium driven by Playwright),
in zh-CN: the county doctor requests a reading of a stored CT study, the radiologist finds it on the
worklist, claims it, writes the report from the CT template, flags a critical finding and signs;
the doctor acknowledges the critical finding and opens the signed PDF.
Writes docs/screenshots/imaging-reading-worklist.png and docs/screenshots/imaging-reading-report.png."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity.passwords import hash_password
from tests.imaging import reading_net
from tests.pathology.test_viewer_browser import ARGS, CHROMIUM, PASSWORD, SHOTS, browser  # noqa: F401

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (make deps)")  # fmt: skip


def test_request_claim_report_and_pdf(services, server, browser, backend):  # noqa: F811
    if backend != "sqlite":
        pytest.skip("the pages are the same on PostgreSQL; the service tests cover both databases")
    net = reading_net.build(services)
    study, _uid = reading_net.ct_study(services, net)
    with unit_of_work(services.engine) as conn:
        who = account.c.username.in_([net.requester, net.radiologists[0]])
        conn.execute(update(account).where(who).values(password_hash=hash_password(PASSWORD)))
    problems: list[str] = []

    def login(user: str):
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1200})
        context.set_default_timeout(90_000)  # a shared machine under load
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{server.url}/portal/login")
        page.fill("#username", user)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/portal/?$"))
        return context, page

    doc_ctx, doc = login(net.requester)
    doc.goto(f"{server.url}/portal/reading/new")
    assert doc.locator("h1").inner_text() == "申请远程阅片"
    doc.check(f"#study-{study}")
    doc.select_option("#priority", "urgent")
    doc.fill("#question", "咳嗽两月，右肺占位？")
    doc.click("#submit-reading")
    doc.wait_for_url(re.compile(r".*/portal/reading/[^/]+$"))
    url = doc.url
    rid = url.rsplit("/", 1)[1]

    rad_ctx, rad = login(net.radiologists[0])
    rad.goto(f"{server.url}/portal/reading")
    row = rad.locator(f"#pool tr[data-reading='{rid}']")
    assert "剩余" in row.locator(".time-left").inner_text() and "加急" in row.inner_text()
    rad.screenshot(path=str(SHOTS / "imaging-reading-worklist.png"), full_page=True)
    row.locator("button[data-claim]").click()
    rad.wait_for_url(url)
    assert "扫描范围内所见" in rad.locator("#sec-findings").input_value()
    rad.fill("#sec-findings", "右肺上叶尖段见一约 2.1 cm 软组织结节，边缘毛刺，邻近胸膜牵拉。")
    rad.fill("#sec-impression", "右肺上叶结节，考虑周围型肺癌可能，建议增强 CT。")
    rad.screenshot(path=str(SHOTS / "imaging-reading-report.png"), full_page=True)
    rad.click("#sign-report")
    rad.wait_for_selector("#report-pdf")
    rad.fill("#critical-text", "右肺上叶占位伴气胸，请立即处理")
    rad.click("#flag-critical")
    rad.wait_for_selector("[data-critical]")

    doc.goto(f"{server.url}/portal/reading")
    banner = doc.locator(".critical-banner").first
    assert "右肺上叶占位伴气胸" in banner.inner_text()
    banner.locator("button[data-ack-critical]").click()
    doc.wait_for_load_state()
    doc.goto(url)
    href = doc.locator("#report-pdf").get_attribute("href")
    pdf = doc.request.get(f"{server.url}{href}")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    assert doc.locator("[data-ack-critical]").count() == 0
    assert not problems, problems
    doc_ctx.close()
    rad_ctx.close()
