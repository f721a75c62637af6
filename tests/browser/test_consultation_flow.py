"""The whole teleconsultation in a real browser (Debian's Chromium driven by Playwright).

A township doctor submits a request with an attachment, the QC officer returns it, the doctor
fixes and resubmits it, QC accepts, dispatch assigns an MDT of two experts and schedules it,
both experts write and sign, the requester downloads the signed PDF and acknowledges it. A
second browser context shows the live board, which updates without a reload. Once in Chinese
(the default, with screenshots for docs/screenshots) and once in English.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from telemed.db.engine import unit_of_work
from telemed.identity.passwords import hash_password
from tests.consultation.network import build

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "Telemed-Test-2026!"
SHOTS = Path(os.environ.get("TELEMED_SCREENSHOTS", "docs/screenshots"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make deps)")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _users(services, net) -> dict[str, str]:
    """Portal accounts with passwords for the network's people (user name by role)."""
    from sqlalchemy import update

    from telemed.db.schema import account
    from telemed.identity import ensure_account

    names = {"requester": net.requester, "e1": net.experts[0], "e2": net.experts[1],
             "qc": f"qc-{net.centre}", "triage": f"triage-{net.centre}"}  # fmt: skip
    with unit_of_work(services.engine) as conn:
        now = services.clock.now()
        ensure_account(conn, names["qc"], "质控员", ["qc-officer"], now, None, net.centre)
        ensure_account(conn, names["triage"], "分诊员", ["triage-officer"], now, None, net.centre)
        pw = hash_password(PASSWORD)
        for user in names.values():
            conn.execute(update(account).where(account.c.username == user).values(password_hash=pw))
    return names


def _login(browser, server, user: str, lang: str):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    if lang == "en":
        page.goto(f"{server.url}/portal/lang/en?next=/portal/login")
    page.goto(f"{server.url}/portal/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/portal/?$"))
    return page


def _act(page, action: str, reason: str | None = None):
    if reason is not None:
        page.fill(f"#reason-{action}", reason)
    page.click(f"#do-{action}")
    page.wait_for_load_state("load")


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_mdt_consultation_in_the_browser(browser, server, services, backend, lang, tmp_path):
    net = build(services)
    users = _users(services, net)
    zh = lang == "zh-CN"
    shots = zh and backend == "sqlite"

    doctor = _login(browser, server, users["requester"], lang)
    doctor.goto(f"{server.url}/portal/consultations/new")
    doctor.select_option("#patient", net.patient)
    doctor.select_option("#kind", "mdt")
    doctor.select_option("#specialty", "394579002")
    doctor.fill("#requested_time", "2026-12-01T09:30")
    doctor.fill("#purpose", "明确胸痛原因" if zh else "Chest pain: confirm the diagnosis")
    doctor.fill("#summary", "男，68岁，反复胸痛3天。")
    doctor.fill("#question", "是否需要冠脉造影？")
    doctor.check("#consent")
    doctor.fill("#consent_witness", "护士 李娟")
    if shots:
        doctor.screenshot(path=str(SHOTS / "consultation-new.png"), full_page=True)
    doctor.click("button[name=then_submit][value='']")  # save as a draft first, then attach
    doctor.wait_for_url(re.compile(r".*/portal/consultations/[^/]+$"))
    case_url = doctor.url.split("?")[0]

    record = tmp_path / "ecg.pdf"
    record.write_bytes(b"%PDF-1.4\n% ECG 12-lead\n")
    doctor.set_input_files("#upload-file", str(record))
    doctor.click("#do-upload")
    doctor.wait_for_selector("#attachments a[href*='/attachments/']")
    _act(doctor, "submit")
    assert doctor.locator("#state").inner_text() == ("待质控" if zh else "Awaiting quality check")

    # The board (a second context) is open before the next steps, and must follow them live.
    board = _login(browser, server, users["triage"], lang)
    board.goto(f"{server.url}/portal/board")
    assert board.locator("#col-waiting [data-id]").count() >= 1

    qc = _login(browser, server, users["qc"], lang)
    qc.goto(case_url)
    _act(qc, "return", "请补充心电图报告" if zh else "Please add the ECG report")
    # The doctor's open case page says it changed (portal events), without a reload.
    doctor.wait_for_selector("[data-live-notice]:not([hidden])", timeout=5000)
    doctor.goto(case_url)
    assert "请补充心电图报告" in doctor.locator("#return-reason").inner_text() or not zh
    doctor.fill("#e-summary", "男，68岁，反复胸痛3天，心电图已上传。")
    doctor.click("#save-edit")
    doctor.wait_for_load_state("load")
    _act(doctor, "submit")
    qc.goto(case_url)
    _act(qc, "accept")

    triage = _login(browser, server, users["triage"], lang)
    triage.goto(case_url)
    triage.check(f"#x-{net.experts[0]}")
    triage.check(f"#x-{net.experts[1]}")
    _act(triage, "assign")
    triage.fill("#start", "2026-12-01T10:00")
    _act(triage, "schedule")
    # Live: the board shows the scheduled state without being reloaded.
    tile = board.locator(f"[data-id='{case_url.rsplit('/', 1)[1]}']").first
    tile.wait_for(state="attached", timeout=5000)
    board.wait_for_function(
        "id => [...document.querySelectorAll(`[data-id='${id}']`)].some(e => e.dataset.state === 'scheduled')",
        arg=case_url.rsplit("/", 1)[1], timeout=5000,
    )  # fmt: skip
    if shots:
        triage.screenshot(path=str(SHOTS / "consultation-detail.png"), full_page=True)
        board.screenshot(path=str(SHOTS / "board.png"), full_page=True)

    for who, text in (("e1", "考虑不稳定型心绞痛，建议冠脉造影。"), ("e2", "同意，两周后复诊。")):
        expert = _login(browser, server, users[who], lang)
        expert.goto(case_url)
        expert.fill("#op-impression", text)
        expert.click("#save-opinion")
        expert.wait_for_load_state("load")
        _act(expert, "sign")
        if shots and who == "e2":
            expert.screenshot(path=str(SHOTS / "consultation-signed.png"), full_page=True)
        expert.context.close()

    doctor.goto(case_url)
    href = doctor.locator("#report-link").get_attribute("href")
    response = doctor.request.get(f"{server.url}{href}")
    assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF")
    _act(doctor, "acknowledge")
    assert doctor.locator("#state").inner_text() == ("已确认" if zh else "Acknowledged")
    if shots:
        doctor.goto(f"{server.url}/portal/consultations")
        doctor.screenshot(path=str(SHOTS / "worklist.png"), full_page=True)
    for p in (doctor, board, qc, triage):
        p.context.close()
