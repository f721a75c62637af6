"""Annotations: stored as FHIR Basic of the slide's patient, measured in µm, seen by every participant."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from telemed.identity import issue_token
from telemed.kernel.clock import SystemClock
from telemed.pathology.annotations import area_um2, length_um
from telemed.pathology.slide import Slide, SlideInfo
from telemed.pathology.synthetic import write_slide
from tests.pathology.site import make_site
from tests.pathology.test_upload import _gateway


def test_measurements():
    info = SlideInfo(1000, 1000, 0.5, 0.5, "x")
    assert length_um([(0, 0), (300, 400)], info) == pytest.approx(250.0)
    assert area_um2([(0, 0), (100, 0), (100, 200), (0, 200)], info) == pytest.approx(5000.0)
    assert length_um([(0, 0), (1, 1)], SlideInfo(10, 10, None, None, "x")) is None


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("wsi") / "ann.tiff", 1600, 1200, mpp=0.5)


def test_annotations_are_shared_with_participants_and_hidden_from_others(services, server, slide_file):
    site, other = make_site(services), make_site(services, "白水县人民医院")
    digest = hashlib.sha256(slide_file.read_bytes()).hexdigest()
    body = {"name": "ann.tiff", "size": slide_file.stat().st_size, "info": Slide(slide_file).info.to_json(),
            "sha256": digest, "patient": {"value": "MRN-ANN-1"}}  # fmt: skip
    with _gateway(server, site) as gw:
        sid = gw.post("/slides", json=body).json()["id"]
    second = issue_token(services.token_keys, "second-reader", ["user/*.*"], 600, SystemClock().now(), ["pathologist"],
                         organization=site.org)  # fmt: skip
    url = f"{server.url}/api/pathology/slides/{sid}/annotations"

    def as_(token):
        return {"Authorization": f"Bearer {token}"}

    made = []
    for ann in [
        {"kind": "point", "points": [[100, 100]]},
        {"kind": "line", "points": [[0, 0], [300, 400]]},
        {"kind": "polygon", "points": [[0, 0], [100, 0], [100, 200], [0, 200]]},
        {"kind": "text", "points": [[800, 600]], "text": "核分裂象 3/10HPF"},
    ]:
        r = httpx.post(url, json=ann, headers=as_(site.viewer_token))
        assert r.status_code == 201, r.text
        made.append(r.json())
    assert made[1]["length_um"] == pytest.approx(250.0) and made[2]["area_um2"] == pytest.approx(5000.0)

    seen = httpx.get(url, headers=as_(second)).json()  # another participant, a later visit
    assert [a["kind"] for a in seen] == ["point", "line", "polygon", "text"]
    assert seen[3]["text"] == "核分裂象 3/10HPF" and seen[1]["points"] == [[0, 0], [300, 400]]
    assert httpx.get(url, headers=as_(other.viewer_token)).status_code == 404
    assert httpx.post(url, json=made[0], headers=as_(other.viewer_token)).status_code == 404

    for bad in [{"kind": "circle", "points": [[1, 1]]}, {"kind": "line", "points": [[1, 1]]},
                {"kind": "point", "points": [[99999, 1]]}, {"kind": "text", "points": [[1, 1]]}]:  # fmt: skip
        assert httpx.post(url, json=bad, headers=as_(site.viewer_token)).status_code == 422, bad
