"""A frozen section end to end in a real browser (Debian's Chromium driven by Playwright), in
zh-CN: the county doctor requests it with two slides, the pathologist finds it at the top of the
worklist with its time left, claims it, reads the slides side by side, sends the preliminary result,
writes and signs the report; the doctor sees the preliminary result and opens the signed PDF.
Writes docs/screenshots/pathology-case.png and docs/screenshots/pathology-worklist.png."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity.passwords import hash_password
from telemed.pathology import api as pathology_api
from telemed.pathology import service
from telemed.pathology.synthetic import write_slide
from tests.pathology import cases_net
from tests.pathology.test_viewer_browser import ARGS, CHROMIUM, PASSWORD, SHOTS, browser  # noqa: F401

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (make deps)")  # fmt: skip


def test_frozen_section_request_report_and_pdf(services, server, browser, backend, tmp_path):  # noqa: F811
    if backend != "sqlite":
        pytest.skip("the pages are the same on PostgreSQL; the service tests cover both databases")
    net = cases_net.build(services)
    store = pathology_api.centre_of(services).store
    slides = []
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        for name, w, h in (("F26-0099-1.tiff", 4096, 3072), ("F26-0099-2.tiff", 3072, 2048)):
            path = write_slide(tmp_path / name, w, h, mpp=0.25, look="tissue")
            slides.append(service.import_slide(repo, store, path, patient=net.patient).id)
        who = account.c.username.in_([net.requester, net.pathologists[0]])
        conn.execute(update(account).where(who).values(password_hash=hash_password(PASSWORD)))
    problems: list[str] = []

    def login(user: str):
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1300})
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

    # The county doctor requests a frozen section with both slides.
    doc_ctx, doc = login(net.requester)
    doc.goto(f"{server.url}/portal/pathology/cases/new")
    assert doc.locator("h1").inner_text() == "申请远程病理会诊"
    doc.check("#kind-frozen")
    for sid in slides:
        doc.check(f"input[name=slide][value='{sid}']")
    doc.fill("#accession", "F26-0099")
    doc.fill("#site", "左乳肿物")
    doc.fill("#history", "左乳外上象限肿物2周，术中送冰冻")
    doc.fill("#gross", "灰白结节一枚 2.0×1.5×1.2 cm，切面灰白质硬")
    doc.fill("#question", "良恶性？切缘？")
    doc.fill("#callback", "13900001111")
    doc.fill("#theatre", "3号手术间")
    doc.click("#submit-request")
    doc.wait_for_url(re.compile(r".*/portal/pathology/cases/[^/]+$"))
    case_url = doc.url
    cid = case_url.rsplit("/", 1)[1]

    # The pathologist: the frozen section at the top, with the time left; claim it.
    path_ctx, pat = login(net.pathologists[0])
    pat.goto(f"{server.url}/portal/pathology/cases")
    row = pat.locator(f"#frozen tr[data-case='{cid}']")
    assert "剩余" in row.locator(".time-left").inner_text()
    pat.screenshot(path=str(SHOTS / "pathology-worklist.png"), full_page=True)
    row.locator("button[data-claim]").click()
    pat.wait_for_url(case_url)
    pat.wait_for_selector("#slide-1[data-ready='1']")
    pat.wait_for_selector("#slide-2[data-ready='1']")
    assert pat.locator(".slide-viewer").count() == 2
    pat.fill("#prelim-text", "（左乳）浸润性癌，待石蜡切片确诊")
    pat.click("#send-preliminary")
    pat.wait_for_selector("[data-preliminary]")
    pat.wait_for_selector("#slide-1[data-ready='1']")
    pat.fill("#sec-microscopic", "癌细胞呈巢状、条索状浸润性生长，核异型明显，核分裂象易见")
    pat.fill("#sec-diagnosis", "（左乳）浸润性癌，非特殊类型")
    pat.fill("#sec-ihc", "建议 ER、PR、HER2、Ki-67")
    pat.fill("#sec-comments", "切缘待石蜡切片报告")
    pat.wait_for_timeout(1500)  # the tiles settle for the screenshot
    pat.screenshot(path=str(SHOTS / "pathology-case.png"), full_page=True)
    pat.click("#sign-report")
    pat.wait_for_selector("#report-pdf")

    # The doctor sees the preliminary result and the signed PDF.
    doc.goto(case_url)
    assert "（左乳）浸润性癌，待石蜡切片确诊" in doc.locator("[data-preliminary]").inner_text()
    href = doc.locator("#report-pdf").get_attribute("href")
    pdf = doc.request.get(f"{server.url}{href}")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    doc.click("#acknowledge")
    doc.wait_for_selector("#case-state")
    assert "已确认" in doc.locator("#case-state").inner_text()
    assert not problems, problems
    doc_ctx.close()
    path_ctx.close()
