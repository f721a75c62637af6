"""The slide viewer in a real browser (Debian's Chromium driven by Playwright), while the slide is
still arriving: the site gateway is capped at 1 Mbit/s, so every full-resolution tile the expert
looks at is asked of the gateway. Overview, scale bar in µm, no CSP violation; a second slide side
by side. Writes docs/screenshots/pathology-viewer.png (zh-CN) and checks the English page."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity import ensure_account
from telemed.identity.passwords import hash_password
from telemed.pathology.synthetic import write_slide
from tests.pathology.site import GatewayThread, gateway_config, make_site

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


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scanned")
    write_slide(folder / "S26-0588-A1.tiff", 6144, 4096, mpp=0.25, noise=12, look="tissue")
    write_slide(folder / "S26-0588-B1.tiff", 2048, 1536, mpp=0.5, look="tissue")
    return folder


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_viewer_while_the_slide_arrives(services, server, browser, slides, tmp_path):
    site = make_site(services)
    colleague = site.viewer + "-2"
    with unit_of_work(services.engine) as conn:
        ensure_account(conn, colleague, "会诊病理医生", ["pathologist"], services.clock.now(), None, site.org)
        who = account.c.username.in_([site.viewer, colleague])
        conn.execute(update(account).where(who).values(password_hash=hash_password(PASSWORD)))
    folder = tmp_path / "scanner"
    folder.mkdir()
    with GatewayThread(gateway_config(server, site, folder, tmp_path / "state", rate=1_000_000 / 8)) as gw:
        for f in slides.iterdir():
            shutil.copy(f, folder / f.name)
        _wait(lambda: len([s for s in gw.slides.values() if s.id]) == 2 and gw.linked.is_set(), 60, "registration")
        by_name = {Path(s.path).name: s.id for s in gw.slides.values()}
        big, small = by_name["S26-0588-A1.tiff"], by_name["S26-0588-B1.tiff"]

        problems: list[str] = []

        def login(user: str):
            # the whole pane on the screen: a click that focuses the viewer must not scroll the page
            context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1200})
            context.set_default_timeout(90_000)  # a shared machine under load: minutes-long stalls are not ours
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{server.url}/portal/login")
            page.fill("#username", user)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/portal/?$"))
            return context, page

        context, page = login(site.viewer)

        page.goto(f"{server.url}/portal/pathology")
        assert page.locator("h1").inner_text() == "病理切片"
        assert page.locator(".slide-card").count() == 2

        page.goto(f"{server.url}/portal/pathology/slides/{big}")
        page.wait_for_selector(
            "#slide-1[data-ready='1']",
        )
        tiles_before = gw.stats["tiles"]
        # Zoom to full resolution on a region of tissue: these tiles exist only at the site.
        page.evaluate("""() => {
            const v = document.getElementById('slide-1').telemedViewer;
            const item = v.world.getItemAt(0);
            v.viewport.panTo(item.imageToViewportCoordinates(1800, 1400), true);
            v.viewport.zoomTo(item.imageToViewportZoom(1.0), null, true);
        }""")
        loaded = "() => document.getElementById('slide-1').telemedViewer.world.getItemAt(0).getFullyLoaded()"
        page.wait_for_function(loaded)
        status = page.evaluate(f"() => fetch('/portal/pathology/slides/{big}/status').then(r => r.json())")
        assert not status["complete"] and status["offset"] / status["size"] < 0.5
        # The full-resolution tiles came from the site over its link (the gateway counts a tile after
        # sending it, so the count may trail the viewer by a moment).
        deadline = time.time() + 10
        while gw.stats["tiles"] <= tiles_before and time.time() < deadline:
            time.sleep(0.1)
        assert gw.stats["tiles"] > tiles_before
        label = page.locator(".scalebar-label").first.inner_text()
        assert re.fullmatch(r"\d+ (µm|mm)", label), label
        um_per_px = float(page.locator("[data-scalebar]").first.get_attribute("data-um-per-px"))
        assert um_per_px == pytest.approx(0.25, rel=0.05)  # 1 image pixel per screen pixel at 0.25 µm/px
        assert page.locator(".navigator").first.is_visible()  # the overview
        assert "正从基层医院传输" in page.locator("[data-progress]").first.inner_text()

        # Annotations: a line of 200 screen pixels at 1 image pixel per screen pixel (0.25 µm/px) is 50 µm.
        box = page.locator("#slide-1").bounding_box()
        x0, y0 = box["x"] + 300, box["y"] + 420
        page.click("[data-mode=line]")
        box = page.locator("#slide-1").bounding_box()  # after the hint appeared
        x0, y0 = box["x"] + 300, box["y"] + 420
        page.mouse.click(x0, y0)
        page.mouse.click(x0 + 200, y0)
        page.wait_for_selector("#slide-1[data-annotation-count='1']")
        page.click("[data-mode=polygon]")  # a square of 80 × 80 µm = 6400 µm²
        for dx, dy in [(0, 0), (320, 0), (320, 320), (0, 320)]:
            page.mouse.click(x0 + 420 + dx, y0 - 250 + dy)
            page.wait_for_timeout(150)
        page.click("[data-finish]")
        page.wait_for_selector("#slide-1[data-annotation-count='2']")
        page.click("[data-mode=polygon]")  # the mode off again
        page.fill(".annotation-text", "核分裂象 3/10HPF")
        page.click("[data-mode=text]")
        page.mouse.click(x0 + 420, y0 + 130)
        page.wait_for_selector("#slide-1[data-annotation-count='3']")
        saved = page.evaluate(f"() => fetch('/portal/pathology/slides/{big}/annotations').then(r => r.json())")
        assert [a["kind"] for a in saved] == ["line", "polygon", "text"]
        assert saved[0]["length_um"] == pytest.approx(50, abs=1) and saved[1]["area_um2"] == pytest.approx(
            6400, rel=0.03
        )
        assert (
            page.locator(".annotation-layer polyline").count() == 1
            and page.locator(".annotation-layer polygon").count() == 1
        )
        items = page.locator("[data-annotation-list] li").all_inner_texts()
        assert re.fullmatch(r"测距 (49|50)(\.\d)? µm", items[0]) and items[2] == "文字 “核分裂象 3/10HPF”", items
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "pathology-viewer.png"))

        # A second participant sees them (and after a reload, so does the first).
        other_context, other = login(colleague)
        other.goto(f"{server.url}/portal/pathology/slides/{big}")
        other.wait_for_selector(
            "#slide-1[data-annotation-count='3']",
        )
        other_context.close()
        page.reload()
        page.wait_for_selector(
            "#slide-1[data-annotation-count='3']",
        )

        # Two slides of the case side by side; and the page in English.
        page.goto(f"{server.url}/portal/pathology/slides/{big}?with={small}")
        page.wait_for_selector(
            "#slide-2[data-ready='1']",
        )
        assert page.locator(".slide-viewer").count() == 2
        page.goto(f"{server.url}/portal/lang/en?next=/portal/pathology/slides/{small}")
        assert page.locator("h1").inner_text() == "Slide viewer"
        assert not problems, problems
        context.close()
