"""The diagnostic viewer in a real browser (Debian's Chromium driven by Playwright).

A radiologist's institution stores a CT series by STOW-RS; the radiologist signs in to the portal,
finds the study in the list (its thumbnail drawn from /thumbnail), opens it, and OHIF Viewer,
served by the platform and reading /portal/dicomweb with the session cookie, draws the slice: the
test reads the viewport canvas's pixels and finds an image, not a blank canvas. Scrolling the stack
changes the picture; a drag changes window/level; the Length tool measures in mm. The upload page
sends a ZIP (three slices and a file that is not DICOM) with a progress bar and lists each file's
result. Screenshots: docs/screenshots/imaging-studies.png, imaging-viewer.png, imaging-upload.png.
"""

from __future__ import annotations

import re
import zipfile

import pytest
from dicomweb_client import DICOMwebClient
from pydicom.filebase import DicomBytesIO

from telemed.identity import issue_token
from telemed.kernel.clock import SystemClock
from telemed.portal.imaging import viewer
from tests.browser.test_consultation_flow import ARGS, CHROMIUM, SHOTS, pytestmark  # noqa: F401
from tests.imaging.ct_series import PASSWORD, ct_series, make_org, make_user

# Reads the first viewport's canvas: how many pixels differ from the first one, and the spread of grey.
CANVAS_STATS = """() => {
  const c = document.querySelector('.cornerstone-viewport-element canvas, [data-viewport-uid] canvas');
  if (!c || !c.width || !c.height) return null;
  const g = c.getContext('2d', { willReadFrequently: true });
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let differ = 0, lo = 255, hi = 0, sum = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i];
    if (v !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) differ++;
    lo = Math.min(lo, v); hi = Math.max(hi, v); sum += v;
  }
  return { width: c.width, height: c.height, differ, lo, hi, mean: sum / (d.length / 4) };
}"""


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(start[0] + (end[0] - start[0]) * i / 10, start[1] + (end[1] - start[1]) * i / 10)
    page.mouse.up()


@pytest.fixture(scope="module")
def chromium():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_viewer_draws_a_stored_ct_series(chromium, server, services, backend):
    if backend != "sqlite":
        pytest.skip("the browser flow runs once, on SQLite (the store is tested on both backends)")
    if not viewer.installed():
        pytest.skip("OHIF Viewer is not installed (make deps)")
    org = make_org(services)
    user = make_user(services, org)
    token = issue_token(services.token_keys, user, ["user/*.*"], 3600, SystemClock().now(), ["radiologist"],
                        organization=org)  # fmt: skip
    series = ct_series(8)
    client = DICOMwebClient(f"{server.url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
    client.store_instances(series)
    study = series[0].StudyInstanceUID

    context = chromium.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{server.url}/portal/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/portal/?$"))

    page.goto(f"{server.url}/portal/imaging")
    card = page.locator(f"[data-study='{study}']")
    card.wait_for()
    page.wait_for_function(
        f"() => {{ const i = document.querySelector(\"[data-study='{study}'] img\"); "
        "return i && i.complete && i.naturalWidth > 0; }",
        timeout=15000,
    )
    assert "张伟" in card.inner_text() and "CT" in card.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "imaging-studies.png"))

    card.locator(".study-open").click()
    page.wait_for_url(re.compile(r".*/portal/viewer/viewer\?StudyInstanceUIDs=.*"))
    drawn = f"() => {{ const s = ({CANVAS_STATS})(); return s && s.differ > 1000 && s.hi - s.lo > 50; }}"
    page.wait_for_function(drawn, timeout=60000)
    first = page.evaluate(f"({CANVAS_STATS})()")
    assert first["differ"] > 0.05 * first["width"] * first["height"], first  # an image, not a blank canvas
    assert page.evaluate("localStorage.getItem('i18nextLng')") == "zh"  # OHIF's Chinese catalogue
    # Stack scrolling: the mouse wheel over the image moves to another slice, and the picture changes.
    box = page.locator(".cornerstone-viewport-element").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    before = page.evaluate(f"({CANVAS_STATS})()")
    for _ in range(3):
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(200)
    page.wait_for_function(f"(b) => {{ const s = ({CANVAS_STATS})(); return s && s.mean !== b.mean; }}", arg=before,
                           timeout=10000)  # fmt: skip
    # Window/level (OHIF's primary tool on the left button): a drag changes the overlay's W/L.
    overlay = page.locator("[data-cy='viewport-overlay-bottom-left']").first
    wl_before = overlay.inner_text()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    _drag(page, (cx, cy), (cx + 120, cy + 60))
    changed = "(t) => document.querySelector(\"[data-cy='viewport-overlay-bottom-left']\").innerText !== t"
    page.wait_for_function(changed, arg=wl_before, timeout=5000)
    # A length measurement: OHIF's Length tool draws the line and its length in mm (from Pixel Spacing).
    page.click("[data-cy='Length-btn']")
    _drag(page, (cx - 150, cy), (cx + 150, cy))
    page.wait_for_function("() => Array.from(document.querySelectorAll('.cornerstone-viewport-element svg text'))"
                           ".some(t => /\\d+(\\.\\d+)?\\s*mm/.test(t.textContent))", timeout=10000)  # fmt: skip
    # OHIF asks (in Chinese) whether to track the series' measurements: yes, so its panel lists the length.
    page.get_by_role("button", name="是", exact=True).click()
    page.locator("[data-cy='trackedMeasurements-btn']").click()
    page.get_by_text(re.compile(r"\d+(\.\d+)? mm")).first.wait_for(timeout=10000)
    page.wait_for_timeout(1500)  # let the thumbnails and overlays settle for the screenshot
    page.screenshot(path=str(SHOTS / "imaging-viewer.png"))
    csp_errors = [p for p in problems if "Content Security Policy" in p]
    assert not csp_errors, csp_errors
    context.close()


def test_upload_page_sends_a_zip_and_lists_each_file(chromium, server, services, backend, tmp_path):
    if backend != "sqlite":
        pytest.skip("the browser flow runs once, on SQLite")
    user = make_user(services, make_org(services))
    series = ct_series(3)
    archive = tmp_path / "CT检查.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i, ds in enumerate(series):
            buf = DicomBytesIO()
            ds.save_as(buf, enforce_file_format=True)
            z.writestr(f"DICOM/IM{i:04d}", buf.getvalue())
        z.writestr("DICOM/IM9999", b"DICM" + b"\0" * 200)  # not a DICOM file
    context = chromium.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}/portal/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/portal/?$"))
    page.goto(f"{server.url}/portal/imaging/upload")
    page.set_input_files("#upload-files", str(archive))
    page.click("#imaging-upload button[type=submit]")
    page.wait_for_selector("#imaging-upload[data-finished='1']", timeout=30000)
    assert page.evaluate("document.getElementById('upload-bar').value") == 1
    rows = page.locator("#upload-results tbody tr")
    assert rows.count() == 4
    assert page.locator("#upload-results tr.upload-accepted").count() == 3
    rejected = page.locator("#upload-results tr.upload-rejected")
    assert rejected.count() == 1 and "IM9999" in rejected.inner_text() and "DICOM" in rejected.inner_text()
    assert "完成：已接收 3 个，拒收 1 个" in page.locator("#upload-status").inner_text()
    page.screenshot(path=str(SHOTS / "imaging-upload.png"))
    context.close()
