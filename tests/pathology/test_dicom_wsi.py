"""DICOM WSI through wsidicom behind the same slide interface: a DICOM WSI written here (one
instance per level, TILED_FULL JPEG frames, the same content as the generated TIFF), its Deep Zoom
geometry and scale, tiles at each level against the source region, a thumbnail, refusals; and one
imported at the centre is served like any other slide."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from telemed.db.engine import unit_of_work
from telemed.pathology import api as pathology_api
from telemed.pathology import service
from telemed.pathology.slide import Slide, SlideError
from telemed.pathology.synthetic import write_dicom_slide
from tests.pathology import cases_net
from tests.pathology.test_slide import _expected

pytest.importorskip("wsidicom")
W, H, MPP = 3000, 2200, 0.5


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory):
    return write_dicom_slide(tmp_path_factory.mktemp("dicom") / "S26-DCM", W, H, mpp=MPP)


def test_geometry_scale_and_tiles_match_the_source(dicom_folder):
    assert len(list(dicom_folder.glob("*.dcm"))) == 5  # 3000, 1500, 750, 375, 188 px wide
    slide = Slide(dicom_folder)
    info = slide.info
    assert (info.width, info.height, info.vendor) == (W, H, "DICOM")
    assert info.mpp_x == pytest.approx(MPP) and info.mpp_y == pytest.approx(MPP)
    assert Slide(next(dicom_folder.glob("*.dcm"))).info == info  # one of its files names the slide too
    for level in range(info.max_level - 5, info.max_level + 1):
        cols, rows = info.tile_grid(level)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            image = np.asarray(Image.open(io.BytesIO(slide.tile(level, col, row))).convert("RGB"), dtype=np.int16)
            expected = _expected(info, level, col, row).astype(np.int16)
            assert image.shape == expected.shape, (level, col, row)
            assert np.abs(image - expected).mean() < 4, (level, col, row)
    thumb = Image.open(io.BytesIO(slide.thumbnail(300)))
    assert thumb.width == 300 and 215 <= thumb.height <= 221


def test_a_broken_dicom_wsi_is_refused_clearly(tmp_path, dicom_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SlideError) as exc:
        Slide(empty)
    assert "empty" in exc.value.message and exc.value.category.status == 422
    broken = tmp_path / "broken"
    shutil.copytree(dicom_folder, broken)
    for f in broken.glob("*.dcm"):
        f.write_bytes(f.read_bytes()[:2000])
    with pytest.raises(SlideError) as exc:
        Slide(broken)
    assert "broken" in exc.value.message


def test_an_imported_dicom_wsi_is_served_from_the_centre(services, dicom_folder):
    net = cases_net.build(services)
    store = pathology_api.centre_of(services).store
    with unit_of_work(services.engine) as conn:
        rec = service.import_slide(services.repository(conn, net.ctx("requester")), store, dicom_folder,
                                   patient=net.patient)  # fmt: skip
    assert rec.name == "S26-DCM.dicom" and rec.complete and rec.slide_info.vendor == "DICOM"
    assert store.cached_tile(rec, rec.slide_info.max_level, 0, 0).startswith(b"\xff\xd8")
    assert store.thumbnail(rec.id).startswith(b"\xff\xd8")
    with unit_of_work(services.engine, write=False) as conn:  # the centre's pathologists see it only by request
        assert service.readable(services.repository(conn, net.ctx("requester")), rec.id)
        assert not service.readable(services.repository(conn, net.ctx("outsider")), rec.id)


def test_a_dicom_wsi_folder_through_the_site_gateway(services, server, dicom_folder, tmp_path):
    """The gateway sees a folder of DICOM instances as one slide: registered, its tiles answered
    over the link at once, and the folder uploaded as one tar (resumable like any file) that the
    centre unpacks and then serves itself."""
    import hashlib
    import time

    import httpx

    from tests.pathology.site import GatewayThread, gateway_config, make_site

    def wait_for(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    site = make_site(services)
    folder = tmp_path / "scanner"
    folder.mkdir()
    viewer = httpx.Client(base_url=server.url + "/api/pathology", timeout=30,
                          headers={"Authorization": f"Bearer {site.viewer_token}"})  # fmt: skip
    info = Slide(dicom_folder).info
    tile = f"/slides/{{}}/slide_files/{info.max_level}/5_3.jpeg"
    with GatewayThread(gateway_config(server, site, folder, tmp_path / "state", rate=150_000)) as gw:
        shutil.copytree(dicom_folder, folder / "S26-DCM")
        slide_id = wait_for(lambda: next((s.id for s in gw.slides.values() if s.id), None), 60, "registration")
        wait_for(lambda: gw.linked.is_set(), 10, "the gateway's link")
        first = viewer.get(tile.format(slide_id))
        assert first.status_code == 200 and first.content.startswith(b"\xff\xd8")
        assert viewer.get(f"/slides/{slide_id}").json()["name"] == "S26-DCM.dicom.tar"
        wait_for(lambda: all(s.complete for s in gw.slides.values() if s.id), 120, "the upload")
        packed = next(s.upload for s in gw.slides.values() if s.id)
    store = pathology_api.centre_of(services).store
    rec = store.record(slide_id)
    unpacked = store.folder(slide_id) / "slide.dicom"
    assert rec.complete and unpacked.is_dir() and rec.sha256 == hashlib.sha256(open(packed, "rb").read()).hexdigest()
    for f in dicom_folder.iterdir():
        assert (unpacked / f.name).read_bytes() == f.read_bytes()
    local = viewer.get(tile.format(slide_id))
    assert local.status_code == 200 and store.local_slide(rec).info == info
