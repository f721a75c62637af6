"""Remote ECG in a real browser (Debian's Chromium driven by Playwright).

Two readers of a pool are on duty with the pool page open; a township doctor uploads an urgent
12-lead DICOM ECG; it appears on both readers' pages within a second; both click "claim" at once
and exactly one gets it. The winner's 12-lead viewer draws a paper grid whose 1 mm is 96/25.4 CSS
pixels at 25 mm/s and 10 mm/mV (and at 50 mm/s, 20 mm/mV), and the calipers measure 1000 ms
over 25 mm. Screenshot: docs/screenshots/ecg-viewer.png.
"""

from __future__ import annotations

import re
import time

import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity.passwords import hash_password
from tests.browser.test_consultation_flow import ARGS, CHROMIUM, PASSWORD, SHOTS, pytestmark  # noqa: F401
from tests.ecg import network

PX_PER_MM = 96 / 25.4


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _login(browser, server, user):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.goto(f"{server.url}/portal/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/portal/?$"))
    return page


def test_pool_push_claim_and_viewer_scale(browser, server, services, backend):
    if backend != "sqlite":
        pytest.skip("the browser flow runs once, on SQLite (the store is tested on both backends)")
    net = network.build(services)
    with unit_of_work(services.engine) as conn:
        pw = hash_password(PASSWORD)
        for user in [net.doctor, *net.readers]:
            conn.execute(update(account).where(account.c.username == user).values(password_hash=pw))
    readers = [_login(browser, server, r) for r in net.readers[:2]]
    for page in readers:
        page.goto(f"{server.url}/portal/ecg")
        page.wait_for_selector("body[data-ecg-live='1']", timeout=5000)
    doctor = _login(browser, server, net.doctor)
    doctor.goto(f"{server.url}/portal/ecg")
    doctor.set_input_files("#ecg-files", get_testdata_file("waveform_ecg.dcm"))
    doctor.select_option("#ecg-priority", "urgent")
    doctor.click("#send-ecg button[type=submit]")
    doctor.wait_for_url(re.compile(r".*/portal/ecg/[^/]+$"), timeout=30000)
    stored = time.perf_counter()
    ecg = doctor.url.rsplit("/", 1)[1]
    for page in readers:  # pushed to both, no reload (the latency itself: benchmarks/ecg.py)
        page.wait_for_selector(f"[data-ecg='{ecg}'] [data-claim]", timeout=5000)
    arrived = time.perf_counter() - stored
    assert arrived < 5.0  # generous: CI machines are shared
    assert all(p.evaluate("document.body.dataset.lastAlert") == ecg for p in readers)  # urgent: the alert sound
    # Both claim at once (the clicks are dispatched without waiting for either answer).
    for page in readers:
        page.evaluate(f"document.querySelector(\"[data-claim='{ecg}']\").click()")
    for page in readers:
        page.wait_for_load_state("load")
        page.wait_for_function("document.readyState === 'complete' && !location.pathname.endsWith('/portal/ecg')")
    refused = [p for p in readers if "该心电图已被其他医生领取" in p.content()]
    winners = [p for p in readers if p.query_selector("#ecg-viewer") is not None]
    assert len(refused) == 1 and len(winners) == 1, [p.url for p in readers]
    page = winners[0]
    page.wait_for_selector("#ecg-viewer[data-ready='1']", timeout=10000)

    def scale():
        return page.evaluate("""() => {
            const svg = document.querySelector('.ecg-svg');
            const cal = svg.querySelector('.ecg-cal').getBoundingClientRect();
            return {pxPerMm: svg.getScreenCTM().a, widthPx: svg.getBoundingClientRect().width,
                    widthMm: Number(svg.dataset.widthMm), calPx: cal.height};
        }""")

    s = scale()
    assert s["pxPerMm"] == pytest.approx(PX_PER_MM, rel=0.005)  # 1 mm of paper = 3.78 CSS px
    assert s["widthPx"] == pytest.approx(s["widthMm"] * PX_PER_MM, rel=0.005)
    assert s["calPx"] == pytest.approx(10 * PX_PER_MM, rel=0.03)  # 1 mV = 10 mm
    assert s["widthMm"] == pytest.approx(12 + 4 * 2.5 * 25 + 2)  # 10 s at 25 mm/s after the calibration
    # Calipers: two clicks 25 mm apart at 25 mm/s are one second.
    box = page.query_selector(".ecg-svg").bounding_box()
    page.mouse.click(box["x"] + 50 * PX_PER_MM, box["y"] + 20)
    page.mouse.click(box["x"] + 75 * PX_PER_MM, box["y"] + 20)
    # (mouse positions are whole pixels: ±0.5 px is ±5 ms at 25 mm/s)
    assert abs(int(page.get_attribute("[data-caliper-readout]", "data-ms")) - 1000) <= 10
    page.screenshot(path=str(SHOTS / "ecg-viewer.png"), full_page=True)
    page.select_option("[data-speed]", "50")
    page.select_option("[data-gain]", "20")
    s = scale()
    assert s["pxPerMm"] == pytest.approx(PX_PER_MM, rel=0.005)
    assert s["calPx"] == pytest.approx(20 * PX_PER_MM, rel=0.03)
    assert s["widthMm"] == pytest.approx(12 + 4 * 2.5 * 50 + 2)


def test_a_30_minute_holter_strip_scrolls_at_paper_scale(browser, server, services, backend):
    if backend != "sqlite":
        pytest.skip("the browser flow runs once, on SQLite (the store is tested on both backends)")
    from tests.ecg.long_recording import store_long_ecg

    net = network.build(services)
    ecg, _ = store_long_ecg(services, net, minutes=30)
    with unit_of_work(services.engine) as conn:
        conn.execute(update(account).where(account.c.username == net.readers[0])
                     .values(password_hash=hash_password(PASSWORD)))  # fmt: skip
    page = _login(browser, server, net.readers[0])
    page.goto(f"{server.url}/portal/ecg/{ecg}")
    page.wait_for_selector("#ecg-viewer[data-ready='1'][data-complete='1']", timeout=30000)
    info = page.evaluate("""() => { const v = window.TelemedEcgViewer, s = v.scroller;
        return {long: v.isLong(), leads: v.longLeads, width: s.scrollWidth, view: s.clientWidth}; }""")
    px_per_s = 25 * PX_PER_MM
    assert info["long"] and len(info["leads"]) == 3
    assert abs(info["width"] - (12 + 1800 * 25) * PX_PER_MM) < 2  # the whole half hour at 25 mm/s
    draws = []
    for minute in (1, 7, 20, 29.5):  # jump, then pan a screen at a time as a reader does
        page.evaluate(f"() => {{ window.TelemedEcgViewer.scroller.scrollLeft = {minute * 60 * px_per_s}; }}")
        page.wait_for_function(f"() => Math.abs(Number(document.getElementById('ecg-viewer').dataset.t0) - "
                               f"{minute * 60 - 12 / 25}) < 0.5 && document.getElementById('ecg-viewer')"
                               ".dataset.complete === '1'", timeout=15000)  # fmt: skip
        for _ in range(5):
            page.evaluate(f"() => {{ window.TelemedEcgViewer.scroller.scrollLeft += {info['view'] // 2}; }}")
            page.wait_for_function("() => !window.TelemedEcgViewer.pending")
            draws.append(page.evaluate("() => window.TelemedEcgViewer.lastDrawMs"))
        # Every window in view has arrived (a pan may outrun the prefetch for a moment).
        page.wait_for_function("() => document.getElementById('ecg-viewer').dataset.complete === '1'", timeout=15000)
        points = page.evaluate("() => document.querySelector('#ecg-viewer polyline').getAttribute('points')"
                               ".split(' ').length")  # fmt: skip
        assert points > 250 * info["view"] / px_per_s * 0.9  # the seconds in view, every sample
    print(f"Holter strip redraws: median {sorted(draws)[len(draws) // 2]} ms, max {max(draws)} ms")
    if SHOTS.exists():
        page.screenshot(path=str(SHOTS / "ecg-holter.png"), full_page=False)
    page.context.close()
