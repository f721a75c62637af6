"""ECGs by DICOM C-STORE: dcmtk's storescu sends pydicom's 12-lead ``waveform_ecg.dcm`` from a clinic's
registered AE to the DICOM service that ``telemed.app.dicom_service`` builds; the ECG reaches the
clinic's reading pool like an upload (pushed to the on-duty readers, readable by them), once however
often it is sent; a sender attached to no pool gets a failure status with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from telemed.app import dicom_service
from telemed.db.engine import unit_of_work
from telemed.ecg import model, service
from telemed.fhir.store.context import AccessContext
from telemed.imaging import endpoint_resource
from tests.conftest import free_port, unique
from tests.ecg import network
from tests.ecg.test_service import read


@pytest.fixture
def scp(services):
    svc = dicom_service(services, port=free_port(), host="127.0.0.1").start()
    pushes: list[dict] = []

    def listener(text: str) -> None:
        pushes.append(json.loads(text))

    services.hub.add_listener(service.TOPIC, listener)
    yield svc, pushes
    services.hub.remove_listener(service.TOPIC, listener)
    svc.stop()


def _ae(services, org: str) -> str:
    title = ("E" + unique("a")[-12:]).upper()
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        repo.create("Endpoint", endpoint_resource(title, "127.0.0.1", 104, org))
    return title


def _ecg_file(tmp_path, patient_id: str) -> tuple[str, str]:
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), patient_id
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return str(path), ds.SOPInstanceUID


def storescu(svc, ae: str, path: str, verbosity: str = "-v") -> subprocess.CompletedProcess:
    tool = shutil.which("storescu")
    if tool is None:
        pytest.skip("storescu not installed (Debian package dcmtk: make system-deps)")
    args = [tool, verbosity, "-aet", ae, "-aec", svc.ae_title, "127.0.0.1", str(svc.port), path]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"})


def test_c_store_of_a_12_lead_ecg_reaches_the_pool(services, scp, tmp_path):
    svc, pushes = scp
    net = network.build(services)
    ae = _ae(services, net.clinic)
    path, uid = _ecg_file(tmp_path, unique("P"))
    proc = storescu(svc, ae, path)
    assert proc.returncode == 0 and "Received Store Response (Success)" in proc.stdout + proc.stderr, proc.stderr
    ecg = service.dicom_ecg_id(uid)
    mine = [p for p in pushes if p["ecg"] == ecg]
    assert len(mine) == 1 and mine[0]["event"] == "new" and mine[0]["pool"] == net.pool
    assert sorted(mine[0]["readers"]) == sorted(net.readers[:2]) and mine[0]["sender"] == net.clinic
    # A reader of the pool sees it waiting and reads its 12 leads, its measurements and the original.
    task = read(services, net.ctx("r1"), "Task", ecg)
    assert task["status"] == "requested" and task["owner"] == {"reference": f"Group/{net.pool}"}
    assert task["requester"] == {"reference": f"Organization/{net.clinic}"}
    panel = read(services, net.ctx("r1"), "Observation", ecg)
    assert len(panel["hasMember"]) == 12 and panel["identifier"][0]["value"] == f"urn:oid:{uid}"
    hr = read(services, net.ctx("r1"), "Observation", model.measurement_id(ecg, "heart_rate"))
    assert 40 < hr["valueQuantity"]["value"] < 120
    doc = read(services, net.ctx("r1"), "DocumentReference", ecg)
    assert doc["content"][0]["attachment"]["contentType"] == "application/dicom"
    # The patient is the one the imaging service registered for the DICOM Patient ID at the clinic.
    patient = read(services, net.ctx("r1"), "Patient", model.ref_id(task["for"], "Patient"))
    assert patient["managingOrganization"] == {"reference": f"Organization/{net.clinic}"}
    with unit_of_work(services.engine, write=False) as conn:
        waiting = service.waiting(services.repository(conn, net.ctx("r1")), net.pool)
    assert ecg in [w.resource["id"] for w in waiting]
    # The device sends it again (a retry): still one ECG, no second push.
    assert storescu(svc, ae, path).returncode == 0
    assert len([p for p in pushes if p["ecg"] == ecg]) == 1
    assert read(services, net.ctx("r1"), "Task", ecg)["meta"]["versionId"] == task["meta"]["versionId"]


def test_c_store_from_a_clinic_without_a_pool_and_of_other_instances(services, scp, tmp_path):
    svc, pushes = scp
    net = network.build(services)
    # A clinic attached to no pool: failure status with the reason (the instance itself is kept).
    ae = _ae(services, net.other_clinic)
    path, uid = _ecg_file(tmp_path, unique("P"))
    proc = storescu(svc, ae, path, "-d")  # debug: the response's Error Comment
    out = proc.stdout + proc.stderr
    assert "0xc000: Error: Cannot understand" in out and "attached to no ECG" in out, out
    assert not [p for p in pushes if p["ecg"] == service.dicom_ecg_id(uid)]
    # Not an ECG (a CT image) from the pool's clinic: stored as an image, nothing in the pool.
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.SOPInstanceUID = generate_uid()
    ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
    ct.PatientID = unique("P")
    ct.save_as(tmp_path / "ct.dcm")
    assert storescu(svc, _ae(services, net.clinic), str(tmp_path / "ct.dcm")).returncode == 0
    assert not [p for p in pushes if p["ecg"] == service.dicom_ecg_id(ct.SOPInstanceUID)]
