"""The centre's slide API for gateways: registration, resumable checksummed parts, access by institution."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest

from telemed.pathology.slide import Slide
from telemed.pathology.synthetic import write_slide
from tests.pathology.site import make_site


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("wsi") / "small.tiff", 1200, 900, mpp=0.5)


def _gateway(server, site) -> httpx.Client:
    form = {"grant_type": "client_credentials", "scope": "system/ImagingStudy.* system/Patient.* system/Device.*"}
    r = httpx.post(f"{server.url}/oauth/token", data=form, auth=(site.client_id, site.secret))
    assert r.status_code == 200, r.text
    return httpx.Client(base_url=server.url + "/api/pathology",
                        headers={"Authorization": f"Bearer {r.json()['access_token']}"})  # fmt: skip


def _checksum(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_parts_resume_refuse_damage_and_complete(services, server, small_slide):
    site, other = make_site(services), make_site(services, "白水县人民医院")
    data = small_slide.read_bytes()
    body = {"name": "small.tiff", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "info": Slide(small_slide).info.to_json()}  # fmt: skip
    with _gateway(server, site) as gw, _gateway(server, other) as gw2:
        r = gw.post("/slides", json=body)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert gw.post("/slides", json=body).json()["id"] == sid  # a restarted gateway: the same slide
        assert gw.post("/slides", json={**body, "sha256": "xyz"}).status_code == 400

        part = data[:20_000]
        damaged = gw.patch(f"/slides/{sid}/upload", content=part,
                           headers={"Upload-Offset": "0", "Upload-Checksum": _checksum(part[:-1] + b"!")})  # fmt: skip
        assert damaged.status_code == 422 and "checksum" in damaged.json()["detail"]
        ok = gw.patch(
            f"/slides/{sid}/upload", content=part, headers={"Upload-Offset": "0", "Upload-Checksum": _checksum(part)}
        )
        assert ok.json() == {"offset": 20_000, "complete": False}
        # The answer was lost and the gateway sends the same part again: told where to continue.
        again = gw.patch(
            f"/slides/{sid}/upload", content=part, headers={"Upload-Offset": "0", "Upload-Checksum": _checksum(part)}
        )
        assert again.status_code == 409 and again.headers["Upload-Offset"] == "20000"
        # Another institution's gateway does not learn that the slide exists.
        assert gw2.get(f"/slides/{sid}/upload").status_code == 404
        rest = data[20_000:]
        done = gw.patch(f"/slides/{sid}/upload", content=rest,
                        headers={"Upload-Offset": "20000", "Upload-Checksum": _checksum(rest)})  # fmt: skip
        assert done.json() == {"offset": len(data), "complete": True}

    viewer = {"Authorization": f"Bearer {site.viewer_token}"}
    stranger = {"Authorization": f"Bearer {other.viewer_token}"}
    base = f"{server.url}/api/pathology/slides/{sid}"
    assert httpx.get(f"{base}/slide_files/0/0_0.jpeg", headers=viewer).status_code == 200
    assert httpx.get(f"{base}/slide_files/0/0_0.jpeg", headers=stranger).status_code == 404
    assert httpx.get(f"{base}/slide.dzi", headers=stranger).status_code == 404
    assert httpx.get(f"{base}/slide_files/0/0_0.jpeg").status_code == 401
    assert httpx.get(f"{base}/slide_files/30/0_0.jpeg", headers=viewer).status_code == 404
