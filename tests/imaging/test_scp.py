"""The DICOM service with dcmtk as the peer: echoscu, storescu, findscu, movescu, getscu (PS3.4 A, B, C)."""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from telemed.db.engine import unit_of_work
from telemed.db.schema import dicom_instance, dicom_study
from tests.conftest import unique
from tests.imaging.conftest import TEST_FILES, make_institution, need, rewrite

ENV = {**os.environ, "TCP_NODELAY": "1"}


def run(*args, check=True, timeout=60) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


# storescu proposes a compressed transfer syntax only when told to (as a modality is configured to).
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def store_folder(dicom_service, inst, folder: Path) -> None:
    """storescu each file of ``folder``, one association per transfer syntax."""
    groups: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(PROPOSE.get(ts, "-x="), []).append(f)
    for option, files in groups.items():
        run(need("storescu"), option, *peer(dicom_service, inst), *files)


def peer(dicom_service, inst) -> list:
    return ["-aet", inst.ae_title, "-aec", dicom_service.ae_title, "127.0.0.1", dicom_service.port]


def test_echo(services, dicom_service):
    inst = make_institution(services)
    run(need("echoscu"), *peer(dicom_service, inst))


def test_unknown_calling_ae_is_rejected(services, dicom_service):
    proc = run(need("echoscu"), "-aet", "NOBODY", "-aec", "TELEMED", "127.0.0.1", dicom_service.port, check=False)
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in proc.stderr + proc.stdout


def test_wrong_called_ae_is_rejected(services, dicom_service):
    inst = make_institution(services)
    proc = run(need("echoscu"), "-aet", inst.ae_title, "-aec", "OTHER", "127.0.0.1", dicom_service.port, check=False)
    assert proc.returncode != 0
    assert "Called AE Title Not Recognized" in proc.stderr + proc.stdout


def test_store_folder_across_transfer_syntaxes(services, dicom_service, study_folder):
    folder, study, patient, uids = study_folder
    inst = make_institution(services)
    store_folder(dicom_service, inst, folder)
    with unit_of_work(services.engine, write=False) as conn:
        rows = conn.execute(select(dicom_instance).where(dicom_instance.c.study_uid == study)).all()
        study_row = conn.execute(select(dicom_study).where(dicom_study.c.study_uid == study)).one()
    assert {r.sop_instance_uid for r in rows} == set(uids)
    # The bytes as received: the stored file's dataset is the sent file's dataset, byte for byte.
    for r in rows:
        name = next(
            p
            for p in folder.iterdir()
            if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == r.sop_instance_uid
        )
        sent = pydicom.dcmread(folder / name.name)
        stored = pydicom.dcmread(services.blobs._path(r.blob_key))
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        if "PixelData" in sent:
            assert stored.PixelData == sent.PixelData
    assert study_row.num_instances == len(uids) and study_row.owner_org == inst.org
    # The study is a FHIR ImagingStudy of a Patient of the sending institution, with a DICOMweb endpoint.
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, inst.context)
        img = repo.read("ImagingStudy", study_row.fhir_id).resource
        assert img["numberOfInstances"] == len(uids)
        assert img["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
        assert {s["modality"]["code"] for s in img["series"]} >= {"CT", "MR", "OT"}
        pat = repo.read("Patient", img["subject"]["reference"].split("/")[1]).resource
        assert pat["identifier"][0]["value"] == patient
        assert pat["managingOrganization"]["reference"] == f"Organization/{inst.org}"
        # Another institution cannot read it.
        other = make_institution(services)
        with pytest.raises(Exception, match="not known"):
            services.repository(conn, other.context).read("ImagingStudy", study_row.fhir_id)


def test_same_patient_id_matches_the_same_patient(services, dicom_service, tmp_path):
    inst = make_institution(services)
    patient = unique("P")
    files = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    for f in files:
        rewrite(TEST_FILES / "CT_small.dcm", f, study=generate_uid(), patient_id=patient)
    run(need("storescu"), *peer(dicom_service, inst), *files)
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, inst.context)
        from telemed.fhir.search import query
        from telemed.fhir.store import searching

        ids = searching.find_ids(repo, query.parse("Patient", [("identifier", patient)]))
        assert len(ids) == 1
        studies = searching.find_ids(repo, query.parse("ImagingStudy", [("subject", f"Patient/{ids[0]}")]))
        assert len(studies) == 2


def corrupt_copies(tmp_path: Path) -> list[Path]:
    """Files storescu still sends but the platform must refuse."""
    truncated = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    truncated.SOPInstanceUID, truncated.StudyInstanceUID = generate_uid(), generate_uid()
    truncated.file_meta.MediaStorageSOPInstanceUID = truncated.SOPInstanceUID
    truncated.PixelData = truncated.PixelData[:1000]  # shorter than Rows x Columns x 2 bytes
    bad_uid = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    bad_uid.SOPInstanceUID = generate_uid()
    bad_uid.file_meta.MediaStorageSOPInstanceUID = bad_uid.SOPInstanceUID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad_uid.StudyInstanceUID = "1.2.abc.4"
    out = [tmp_path / "truncated.dcm", tmp_path / "bad_uid.dcm"]
    truncated.save_as(out[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad_uid.save_as(out[1])
    return out


def test_corrupt_instances_are_refused_and_nothing_is_stored(services, dicom_service, tmp_path):
    inst = make_institution(services)
    for f in corrupt_copies(tmp_path):
        proc = run(need("storescu"), "-v", *peer(dicom_service, inst), f, check=False)
        assert "Store Response (Error: DataSetDoesNotMatchSOPClass)" in proc.stdout + proc.stderr, proc.stderr
        uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        with unit_of_work(services.engine, write=False) as conn:
            assert conn.execute(select(dicom_instance).where(dicom_instance.c.sop_instance_uid == uid)).first() is None


def _file_with(tmp_path: Path, name: str, meta_sop_class: str, dataset_bytes: bytes) -> tuple[Path, str]:
    """A Part 10 file whose File Meta says one thing and whose data set bytes are ``dataset_bytes``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    buf = DicomBytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta)
    path = tmp_path / name
    path.write_bytes(buf.getvalue() + dataset_bytes)
    return path, meta.MediaStorageSOPInstanceUID


def _explicit_le(ds) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


@pytest.fixture
def raw_send(monkeypatch):
    """pynetdicom sends a file's bytes as they are, without decoding them first."""
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def _association(services, dicom_service, *contexts):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    inst = make_institution(services)
    ae = AE(ae_title=inst.ae_title)
    for cx in (*contexts, Verification):
        ae.add_requested_context(cx, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", dicom_service.port, ae_title="TELEMED")
    assert assoc.is_established
    return assoc


def test_garbage_dataset_gets_a_failure_status_and_the_association_survives(
    services, dicom_service, tmp_path, raw_send
):
    """A C-STORE whose data set bytes do not decode: a failure status, then the association goes on."""
    from pynetdicom.sop_class import CTImageStorage

    path, uid = _file_with(tmp_path, "garbage.dcm", CTImageStorage, b"\x08\x00\x16\x00UI\xff\x7fgarbage")
    assoc = _association(services, dicom_service, CTImageStorage)
    try:
        status = assoc.send_c_store(path)
        assert status.Status in (0xC000, 0xA900)
        assert assoc.send_c_echo().Status == 0x0000  # still associated
    finally:
        assoc.release()
    with unit_of_work(services.engine, write=False) as conn:
        assert conn.execute(select(dicom_instance).where(dicom_instance.c.sop_instance_uid == uid)).first() is None


def test_wrong_sop_class_is_refused(services, dicom_service, tmp_path, raw_send):
    """A CT data set sent as MR Image Storage (PS3.4 B.2.3: 0xA900 Data Set does not match SOP Class)."""
    from pynetdicom.sop_class import CTImageStorage, MRImageStorage

    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.StudyInstanceUID = generate_uid()
    path, uid = _file_with(tmp_path, "wrong.dcm", MRImageStorage, b"")
    ds.SOPInstanceUID = uid
    path.write_bytes(path.read_bytes() + _explicit_le(ds))
    assoc = _association(services, dicom_service, CTImageStorage, MRImageStorage)
    try:
        assert assoc.send_c_store(path).Status == 0xA900
    finally:
        assoc.release()
