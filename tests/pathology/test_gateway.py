"""The site gateway and the centre: a slide viewable before its upload finishes, over a weak link.

The centre is the real app on a live uvicorn server; the gateway runs in its own thread and event
loop and reaches the centre through a TCP relay that the test can cut, with its upload capped at
2 Mbit/s. An expert opens a full-resolution region while the upload is at a few per cent; the link
is cut and restored mid-upload and the upload continues where it stopped; the final file's SHA-256
equals the original's and the centre then serves the slide itself.
"""

from __future__ import annotations

import hashlib
import shutil
import time

import httpx
import pytest

from telemed.pathology.slide import Slide
from telemed.pathology.synthetic import write_slide
from tests.pathology.site import GatewayThread, Proxy, gateway_config, make_site

CAP = 2_000_000 / 8  # 2 Mbit/s in bytes per second


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory):
    """A textured slide of a few megabytes (JPEG tiles of tissue-like noise)."""
    return write_slide(tmp_path_factory.mktemp("wsi") / "S26-0412-A1.tiff", 6144, 4096, mpp=0.25, noise=40)


def wait_for(predicate, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def test_slide_viewable_at_once_upload_resumes_after_a_cut_and_checksum_matches(services, server, big_slide, tmp_path):
    site = make_site(services)
    folder = tmp_path / "scanner"
    folder.mkdir()
    proxy = Proxy(server.port)
    viewer = httpx.Client(base_url=server.url + "/api/pathology", timeout=30,
                          headers={"Authorization": f"Bearer {site.viewer_token}"})  # fmt: skip
    size = big_slide.stat().st_size
    original = Slide(big_slide)
    try:
        with GatewayThread(gateway_config(proxy, site, folder, tmp_path / "state", rate=CAP)) as gw:
            shutil.copy(big_slide, folder / big_slide.name)
            (folder / (big_slide.name + ".json")).write_text(
                '{"patient": {"system": "urn:test:mrn", "value": "MRN-0412", "name": "张伟"}, "specimen": "S26-0412"}'
            )
            slide_id = wait_for(lambda: next((s.id for s in gw.slides.values() if s.id), None), 30, "registration")
            wait_for(lambda: gw.linked.is_set(), 10, "the gateway's link")

            # At once: the geometry, thumbnail and overview levels; the ImagingStudy of the patient.
            info = viewer.get(f"/slides/{slide_id}").json()
            assert info["info"]["width"] == 6144 and info["info"]["mpp_x"] == pytest.approx(0.25)
            assert viewer.get(f"/slides/{slide_id}/slide.dzi").text.count('TileSize="254"') == 1
            wait_for(lambda: viewer.get(f"/slides/{slide_id}/thumbnail.jpeg").status_code == 200, 10, "thumbnail")

            # A full-resolution region while the upload has barely begun: asked of the gateway.
            level = original.info.max_level
            started = time.monotonic()
            r = viewer.get(f"/slides/{slide_id}/slide_files/{level}/12_9.jpeg")
            elapsed = time.monotonic() - started
            progress = viewer.get(f"/slides/{slide_id}").json()["offset"] / size
            assert r.status_code == 200, (r.text, r.headers, r.request.url)
            assert r.content == original.tile(level, 12, 9)  # the very pixels of the original, full resolution
            print(f"full-resolution tile in {elapsed * 1000:.0f} ms at {progress:.1%} uploaded of {size} bytes")
            assert elapsed < 5 and progress < 0.10, (elapsed, progress)
            assert gw.stats["tiles"] >= 1

            # The link is cut mid-upload and restored: the upload continues, it does not start over.
            wait_for(lambda: viewer.get(f"/slides/{slide_id}").json()["offset"] > 0.12 * size, 60, "some upload")
            proxy.cut()
            before = viewer.get(f"/slides/{slide_id}").json()["offset"]
            r = viewer.get(f"/slides/{slide_id}/slide_files/{level}/3_3.jpeg")
            assert r.status_code == 503  # the site is offline and that part has not arrived
            time.sleep(2)
            proxy.restore()
            wait_for(lambda: gw.stats["resumed"] >= 1, 20, "a resume")
            wait_for(lambda: viewer.get(f"/slides/{slide_id}").json()["offset"] > before, 30, "progress after the cut")
            wait_for(lambda: gw.linked.is_set(), 20, "the link again")

            gw.throttle.rate = None  # lift the cap so the test ends soon
            wait_for(lambda: viewer.get(f"/slides/{slide_id}").json()["complete"], 120, "the whole file", 0.2)
            # Nothing sent twice beyond the part in flight when the link went down.
            assert gw.stats["uploaded"] < size + 2 * gw.throttle.part_size(gw.config.chunk) + CAP
        # The gateway is gone: the centre serves everything itself, and the file is the original.
        rec = services._pathology_centre.store.record(slide_id)
        stored = services._pathology_centre.store.folder(slide_id) / "slide.tiff"
        assert rec.complete and hashlib.sha256(stored.read_bytes()).hexdigest() == rec.sha256
        assert rec.sha256 == hashlib.sha256(big_slide.read_bytes()).hexdigest()
        r = viewer.get(f"/slides/{slide_id}/slide_files/{level}/3_3.jpeg")
        assert r.status_code == 200 and r.content == original.tile(level, 3, 3)
        fhir = httpx.get(
            f"{server.url}/fhir/ImagingStudy/{slide_id}", headers={"Authorization": f"Bearer {site.viewer_token}"}
        )
        study = fhir.json()
        assert study["status"] == "available" and study["modality"][0]["code"] == "SM"
        assert study["subject"]["reference"].startswith("Patient/") and study["series"][0]["specimen"]
    finally:
        viewer.close()
        proxy.close()
