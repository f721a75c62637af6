"""Imaging pages (telemed.portal.imaging): upload of a ZIP with per-file results, the study lists,
the access rules through the portal's paths (another institution's study is a 404), and the
viewer's files (OHIF's dist with its public path, our app-config, its CSP)."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from pydicom.filebase import DicomBytesIO

from telemed.portal.imaging import viewer
from tests.imaging.ct_series import PASSWORD, ct_series, make_org, make_user
from tests.portal.conftest import browser_client, csrf_of, sign_in


def _bytes(ds) -> bytes:
    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _session(server, username):
    client = browser_client(server.url)
    assert sign_in(client, username, PASSWORD).status_code == 303
    client.headers["X-CSRF-Token"] = csrf_of(client.get("/portal/imaging/upload"))
    return client


def _upload(client, name: str, ctype: str, data: bytes) -> dict:
    begin = client.post("/portal/uploads", json={"name": name, "type": ctype, "size": len(data)})
    assert begin.status_code == 201, begin.text
    up, chunk = begin.json()["id"], begin.json()["chunk"]
    offset = 0
    while offset < len(data):
        part = client.patch(f"/portal/uploads/{up}", content=data[offset : offset + chunk],
                            headers={"Upload-Offset": str(offset)})  # fmt: skip
        offset = part.json()["offset"]
    stored = client.post(f"/portal/imaging/upload/{up}", headers={"Accept": "application/json"})
    assert stored.status_code == 200, stored.text
    return stored.json()


@pytest.fixture
def two_sites(services, server):
    """Institution A's radiologist uploaded a ZIP (two good CT slices, a corrupt file); B's sees nothing."""
    org_a, org_b = make_org(services), make_org(services)
    a, b = make_user(services, org_a), make_user(services, org_b)
    good = ct_series(2)
    corrupt = _bytes(ct_series(1)[0])[:900]  # cut inside the data set
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("CT/IM0001", _bytes(good[0]))
        z.writestr("CT/IM0002", _bytes(good[1]))
        z.writestr("CT/IM0003", corrupt)
        z.writestr("CT/DICOMDIR", b"not an image")
        z.writestr("__MACOSX/CT/._IM0001", b"resource fork")
    client_a = _session(server, a)
    answer = _upload(client_a, "ct.zip", "application/zip", archive.getvalue())
    return client_a, _session(server, b), good[0].StudyInstanceUID, answer


def test_zip_upload_gives_one_result_per_file(two_sites):
    client_a, _, study, answer = two_sites
    results = {r["file"]: r for r in answer["results"]}
    assert set(results) == {"CT/IM0001", "CT/IM0002", "CT/IM0003"}  # DICOMDIR and macOS metadata skipped
    assert results["CT/IM0001"]["accepted"] and results["CT/IM0002"]["accepted"]
    assert results["CT/IM0001"]["view"] == f"/portal/imaging/studies/{study}/view"
    assert not results["CT/IM0003"]["accepted"]
    assert results["CT/IM0003"]["reason"].startswith("不是可读取的 DICOM 文件")  # zh-CN by default
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    page = client_a.get("/portal/imaging")
    assert page.status_code == 200 and f'data-study="{study}"' in page.text
    assert "2 幅图像" in page.text
    thumb = client_a.get(f"/portal/dicomweb/studies/{study}/thumbnail", headers={"Accept": "image/*"})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_a_single_file_and_a_bad_zip(services, server):
    user = make_user(services, make_org(services))
    client = _session(server, user)
    ds = ct_series(1)[0]
    one = _upload(client, "IM0001.dcm", "application/dicom", _bytes(ds))
    assert one["results"] == [{"file": "IM0001.dcm", "accepted": True, "study": ds.StudyInstanceUID,
                               "view": f"/portal/imaging/studies/{ds.StudyInstanceUID}/view"}]  # fmt: skip
    client.cookies.set("lang", "en", path="/portal")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.dcm", b"x" * 5000)
    broken = archive.getvalue()[:-30]  # the central directory cut off
    bad = _upload(client, "broken.zip", "application/zip", broken)
    assert not bad["results"][0]["accepted"] and bad["results"][0]["reason"]


def test_another_institution_gets_404_through_the_portal(two_sites):
    client_a, client_b, study, _ = two_sites
    view = client_a.get(f"/portal/imaging/studies/{study}/view")
    assert view.status_code == 303
    assert view.headers["location"] == f"/portal/viewer/viewer?StudyInstanceUIDs={study}&lng=zh"
    assert client_a.get(f"/portal/dicomweb/studies/{study}/metadata").status_code == 200
    paths = ["/portal/imaging/studies/{}/view", "/portal/dicomweb/studies/{}/metadata",
             "/portal/dicomweb/studies/{}/thumbnail", "/portal/dicomweb/studies/{}/series/x/metadata"]  # fmt: skip
    for path in paths:
        assert client_b.get(path.format(study), headers={"Accept": "*/*"}).status_code == 404, path
    for search in ("/portal/dicomweb/studies", f"/portal/dicomweb/studies/{study}/series"):  # QIDO: found nothing
        qido = client_b.get(search, headers={"Accept": "application/dicom+json"})
        assert qido.status_code in (200, 204) and study not in qido.text and "CT" not in qido.text
    assert f'data-study="{study}"' not in client_b.get("/portal/imaging").text
    # A's patient page: B gets a 404 page too.
    patient = re.search(r'href="/portal/imaging/patients/([^"]+)"', client_a.get("/portal/imaging").text).group(1)
    assert client_a.get(f"/portal/imaging/patients/{patient}").status_code == 200
    assert client_b.get(f"/portal/imaging/patients/{patient}").status_code == 404


def test_the_portal_dicomweb_is_read_only_and_needs_a_session(two_sites, server):
    client_a, _, study, _ = two_sites
    assert client_a.post("/portal/dicomweb/studies", content=b"x").status_code == 405  # no STOW with a cookie
    with browser_client(server.url) as anonymous:
        metadata = f"/portal/dicomweb/studies/{study}/metadata"
        assert anonymous.get(metadata, headers={"Accept": "application/dicom+json"}).status_code == 401  # OHIF
        assert anonymous.get(metadata).status_code == 303  # a page under /portal: to the login page


def test_the_home_page_and_menu_show_imaging(two_sites):
    client_a, _, _, _ = two_sites
    home = client_a.get("/portal/")
    assert 'href="/portal/imaging"' in home.text and "远程影像" in home.text


@pytest.mark.skipif(not viewer.installed(), reason="OHIF Viewer is not installed (make deps)")
def test_viewer_files(two_sites, server):
    client_a, _, _, _ = two_sites
    index = client_a.get("/portal/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert index.status_code == 200
    csp = index.headers["content-security-policy"]
    assert "'wasm-unsafe-eval'" in csp and "'unsafe-eval'" not in csp and "script-src 'self' 'wasm" in csp
    assert "<script>" not in index.text and 'src="/portal/viewer/boot.js"' in index.text
    bundle = re.search(r'src="(/portal/viewer/app\.bundle\.[0-9a-f]+\.js)"', index.text).group(1)
    js = client_a.get(bundle)
    assert js.status_code == 200 and '__webpack_require__.p = "/portal/viewer/";' in js.text
    assert js.headers["content-encoding"] == "gzip" and int(js.headers["content-length"]) < len(js.content) / 3
    plain = client_a.get(bundle, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == js.content
    config = client_a.get("/portal/viewer/app-config.js").text
    assert '"/portal/dicomweb"' in config and "cloudfront" not in config
    wasm = next(p for p in viewer.dist().glob("*.wasm"))
    assert client_a.get(f"/portal/viewer/{wasm.name}").headers["content-type"] == "application/wasm"
    assert client_a.get("/portal/viewer/..%2F..%2Fpackage.json").status_code == 404
    assert client_a.get("/portal/viewer/missing.js").status_code == 404
    with browser_client(server.url) as anonymous:
        assert anonymous.get("/portal/viewer/").status_code in (302, 303)  # to the login page
