"""Imaging fixtures: institutions with their AEs, the DICOM service on a free port, test instances."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.imaging import DicomService, endpoint_resource
from tests.conftest import free_port, unique

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# Local pydicom files across transfer syntaxes (FIELD-NOTES: only the ones shipped in the wheel).
ACROSS_SYNTAXES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian (retired, still sent by old modalities)
    "image_dfl.dcm",  # deflated explicit VR little endian
    "JPEG-lossy.dcm",  # JPEG extended (process 2 and 4)
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPGExtended.dcm",
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS near-lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_RLE.dcm",  # RLE lossless
    "SC_rgb_rle_2frame.dcm",
    "rtplan.dcm",  # no pixel data
    "test-SR.dcm",  # structured report
    "waveform_ecg.dcm",  # 12-lead ECG waveform
]


@dataclass
class Institution:
    org: str
    ae_title: str
    context: AccessContext


def make_institution(services, *, host: str = "127.0.0.1", port: int = 104, extra_aes=()) -> Institution:
    org = unique("org")
    ae = ("M" + org[-10:]).upper()
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        repo.update("Organization", org, {"resourceType": "Organization", "id": org, "name": f"Hospital {org}"})
        repo.create("Endpoint", endpoint_resource(ae, host, port, org))
        for title, h, p in extra_aes:
            repo.create("Endpoint", endpoint_resource(title, h, p, org))
    ctx = AccessContext(user=unique("u"), organization=org, roles=frozenset({"radiologist"}), clinical="scoped")
    return Institution(org, ae, ctx)


@pytest.fixture(scope="session")
def dicom_service(services):
    svc = DicomService(services, port=free_port(), host="127.0.0.1").start()
    yield svc
    svc.stop()


def rewrite(src: Path, dst: Path, *, study: str, patient_id: str, series: str | None = None) -> str:
    """Copy a test file as a new instance of ``study`` (pixel data and transfer syntax untouched)."""
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    ds.save_as(dst)
    return ds.SOPInstanceUID


@pytest.fixture
def study_folder(tmp_path):
    """A folder of the ACROSS_SYNTAXES files, all in one new study of one patient."""
    study, patient = generate_uid(), unique("P")
    folder = tmp_path / "study"
    folder.mkdir()
    uids = [rewrite(TEST_FILES / name, folder / name, study=study, patient_id=patient) for name in ACROSS_SYNTAXES]
    return folder, study, patient, uids


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian package dcmtk: make system-deps)")
    return path
