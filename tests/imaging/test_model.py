"""The instance checks and the DICOM JSON encoder (PS3.18 §F.2) against pydicom's own."""

from __future__ import annotations

import io

import orjson
import pydicom
import pytest

from telemed.imaging import model
from tests.imaging.conftest import ACROSS_SYNTAXES, TEST_FILES

MORE = ["rtdose.dcm", "liver_1frame.dcm", "examples_palette.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm"]


@pytest.mark.parametrize("name", [n for n in ACROSS_SYNTAXES + MORE if n != "JPEGLSNearLossless_08.dcm"])
def test_metadata_matches_pydicom(name):
    raw = (TEST_FILES / name).read_bytes()
    parsed = model.parse_instance(raw)
    mine = orjson.loads(model.metadata_json(parsed))
    base = (
        model.BASE_PLACEHOLDER.decode()
        + "/"
        + model.instance_path(parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid)
    )
    ref = pydicom.dcmread(io.BytesIO(raw)).to_json_dict(
        model.BULK_THRESHOLD, lambda e: f"{base}/bulkdata/{int(e.tag):08X}"
    )
    assert mine.pop("00083002") == {"vr": "UI", "Value": [parsed.transfer_syntax]}
    if "7FE00010" in ref:
        assert mine.pop("7FE00010")["BulkDataURI"] == f"{base}/frames/1"
        ref.pop("7FE00010")
    assert orjson.loads(orjson.dumps(ref)) == mine


@pytest.mark.parametrize(
    "name, reason",
    [
        ("JPEGLSNearLossless_08.dcm", "StudyInstanceUID is missing"),
        ("no_meta.dcm", "cannot be read"),
        ("rtplan_truncated.dcm", "truncated or garbled"),
    ],
)
def test_non_conformant_files_are_refused(name, reason):
    with pytest.raises(model.NonConformant, match=reason):
        model.parse_instance((TEST_FILES / name).read_bytes())


def test_person_names_to_fhir():
    assert model._fhir_name("Wang^XiaoDong=王^小东") == {
        "use": "official", "family": "王", "given": ["小东"], "text": "王小东"
    }  # fmt: skip
    assert model._fhir_name("Doe^John") == {"use": "official", "family": "Doe", "given": ["John"], "text": "John Doe"}
