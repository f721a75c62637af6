"""C-FIND at each level (Patient Root and Study Root), C-MOVE to a storescp, C-GET, with dcmtk as the peer."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from tests.conftest import free_port
from tests.imaging.conftest import make_institution, need
from tests.imaging.test_scp import ENV, peer, run, store_folder


@pytest.fixture
def stored(services, dicom_service, study_folder):
    folder, study, patient, uids = study_folder
    inst = make_institution(services)
    store_folder(dicom_service, inst, folder)
    return inst, folder, study, patient, uids


def find(dicom_service, inst, tmp_path: Path, model: str, level: str, *keys: str) -> list[pydicom.Dataset]:
    out = tmp_path / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args = [model, "-X", "-od", out, "-k", f"QueryRetrieveLevel={level}"]
    for k in keys:
        args += ["-k", k]
    run(need("findscu"), *args, *peer(dicom_service, inst))
    return [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]


def test_find_at_each_level(dicom_service, stored, tmp_path):
    inst, folder, study, patient, uids = stored
    # Patient Root, PATIENT level
    found = find(dicom_service, inst, tmp_path, "-P", "PATIENT", f"PatientID={patient}", "PatientName", "PatientSex")
    assert [d.PatientID for d in found] == [patient]
    # Study Root, STUDY level, matching on the patient and a date range; return keys filled in
    found = find(
        dicom_service, inst, tmp_path, "-S", "STUDY", f"PatientID={patient}", "StudyInstanceUID",
        "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDate",
    )  # fmt: skip
    assert [d.StudyInstanceUID for d in found] == [study]
    assert int(found[0].NumberOfStudyRelatedInstances) == len(uids)
    assert "CT" in found[0].ModalitiesInStudy and "MR" in found[0].ModalitiesInStudy
    # Patient Root, STUDY level
    found = find(dicom_service, inst, tmp_path, "-P", "STUDY", f"PatientID={patient}", "StudyInstanceUID")
    assert [d.StudyInstanceUID for d in found] == [study]
    # SERIES level with a wild card on Modality
    found = find(
        dicom_service, inst, tmp_path, "-S", "SERIES", f"StudyInstanceUID={study}", "Modality=M*", "SeriesInstanceUID"
    )
    assert found and all(d.Modality == "MR" for d in found)
    # IMAGE level: every instance, with its SOP Class
    found = find(
        dicom_service, inst, tmp_path, "-S", "IMAGE", f"StudyInstanceUID={study}", "SOPInstanceUID", "SOPClassUID"
    )
    assert {d.SOPInstanceUID for d in found} == set(uids)


def test_another_institution_finds_nothing(services, dicom_service, stored, tmp_path):
    inst, folder, study, patient, uids = stored
    other = make_institution(services)
    assert find(dicom_service, other, tmp_path, "-S", "STUDY", f"StudyInstanceUID={study}") == []
    assert find(dicom_service, other, tmp_path, "-P", "PATIENT", f"PatientID={patient}") == []
    assert find(dicom_service, other, tmp_path, "-S", "IMAGE", f"StudyInstanceUID={study}", "SOPInstanceUID") == []


@pytest.fixture
def storescp(tmp_path):
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    proc = subprocess.Popen(
        [need("storescp"), "-aet", "VIEWSTATION", "+xa", "-od", str(out), str(port)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 20
    while True:  # ready when it accepts connections (a busy machine may take a while)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    yield port, out
    proc.terminate()
    proc.wait(5)


def test_move_to_storescp(services, dicom_service, stored, storescp, tmp_path):
    inst, folder, study, patient, uids = stored
    port, out = storescp
    from telemed.db.engine import unit_of_work
    from telemed.fhir.store.context import AccessContext
    from telemed.imaging import endpoint_resource

    with unit_of_work(services.engine) as conn:  # the destination is a workstation of the same hospital
        services.repository(conn, AccessContext.system()).create(
            "Endpoint", endpoint_resource("VIEWSTATION", "127.0.0.1", port, inst.org)
        )
    dicom_service.forget_aes()
    run(need("movescu"), "-S", "-aem", "VIEWSTATION", "-k", "QueryRetrieveLevel=STUDY", "-k",
        f"StudyInstanceUID={study}", *peer(dicom_service, inst))  # fmt: skip
    received = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in out.iterdir()}
    assert received == set(uids)


def test_move_to_unknown_or_foreign_destination_is_refused(services, dicom_service, stored, storescp):
    inst, folder, study, patient, uids = stored
    other = make_institution(services, port=storescp[0])
    for dest in ("NOSUCHAE", other.ae_title):
        proc = run(need("movescu"), "-v", "-S", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY", "-k",
                   f"StudyInstanceUID={study}", *peer(dicom_service, inst), check=False)  # fmt: skip
        assert "Move Destination unknown" in proc.stderr or "MoveDestinationUnknown" in proc.stderr, proc.stderr
    assert list(storescp[1].iterdir()) == []


def test_get_series(services, dicom_service, stored, tmp_path):
    inst, folder, study, patient, uids = stored
    ct = pydicom.dcmread(folder / "CT_small.dcm", stop_before_pixels=True)
    out = tmp_path / "got"
    out.mkdir()
    run(need("getscu"), "-S", "-od", out, "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}",
        "-k", f"SeriesInstanceUID={ct.SeriesInstanceUID}", *peer(dicom_service, inst))  # fmt: skip
    got = [pydicom.dcmread(f) for f in out.iterdir()]
    assert [d.SOPInstanceUID for d in got] == [ct.SOPInstanceUID]
    assert got[0].PixelData == pydicom.dcmread(folder / "CT_small.dcm").PixelData


def test_another_institution_cannot_get_or_move(services, dicom_service, stored, tmp_path):
    inst, folder, study, patient, uids = stored
    other = make_institution(services)
    out = tmp_path / "got"
    out.mkdir()
    run(need("getscu"), "-S", "-od", out, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        *peer(dicom_service, other), check=False)  # fmt: skip
    assert list(out.iterdir()) == []
