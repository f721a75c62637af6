"""A CT series made from pydicom's CT_small.dcm (new UIDs, one slice apart) and a signed-in-able user
of an institution: shared by the portal page tests and the viewer's browser test."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import ensure_account
from telemed.identity.passwords import hash_password
from tests.conftest import unique
from tests.imaging.conftest import TEST_FILES

PASSWORD = "Correct-Horse-42"


def ct_series(slices: int = 8, patient_id: str | None = None) -> list[Dataset]:
    """``slices`` CT images of one new study and series; each slice's pixels shifted a little so
    scrolling the stack shows a change."""
    base = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    study, series, patient = generate_uid(), generate_uid(), patient_id or unique("CT")
    z0 = float(base.ImagePositionPatient[2])
    out = []
    for i in range(slices):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = patient, "张^伟"
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyDescription, ds.SeriesDescription = "CT CHEST", "Axial 5mm"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [*base.ImagePositionPatient[:2], z0 + 5.0 * i]
        ds.SliceLocation = z0 + 5.0 * i
        pixels = ds.pixel_array
        ds.PixelData = np.roll(pixels, 3 * i, axis=1).astype(pixels.dtype).tobytes()
        out.append(ds)
    return out


def make_org(services) -> str:
    org = unique("org")
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        repo.update("Organization", org, {"resourceType": "Organization", "id": org, "name": f"医院 {org}"})
    return org


def make_user(services, org: str, role: str = "radiologist") -> str:
    user = unique("rad")
    with unit_of_work(services.engine) as conn:
        ensure_account(conn, user, "李医生", [role], services.clock.now(), None, org,
                       password_hash=hash_password(PASSWORD))  # fmt: skip
    return user
