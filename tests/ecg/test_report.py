"""Signing an ECG report: confirmed/corrected measurements, statements, PDF, critical values and acknowledgement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydicom.data import get_testdata_file

from telemed.db.engine import unit_of_work
from telemed.ecg import model, report, service
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import TelemedError
from tests.ecg import network
from tests.ecg.test_service import _pools, claim, read, send

DICOM = open(get_testdata_file("waveform_ecg.dcm"), "rb").read()


def sign(services, net, who, ecg, **kw):
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx(who))
        return report.sign(repo, services.signer, net.ctx(who), services.clock.now(), services.site_url, ecg, **kw)


def test_reader_signs_with_a_corrected_measurement(services):
    net = network.build(services)
    ecg = send(services, net, {"e.dcm": DICOM}).ecg
    claim(services, net, "r1", ecg)
    with pytest.raises(TelemedError, match="not claimed by you"):
        sign(services, net, "r2", ecg, measurements={}, statements=["sinus-rhythm"])
    signed = sign(services, net, "r1", ecg, measurements={"qrs": 96.0}, statements=["sinus-rhythm"],
                  free_text="正常心电图")  # fmt: skip
    assert signed.critical is False and signed.pdf.startswith(b"%PDF") and signed.push.event == "reported"
    dr = read(services, net.ctx("doctor"), "DiagnosticReport", ecg)
    assert dr["status"] == "final" and dr["conclusion"].startswith("窦性心律")
    assert dr["conclusionCode"][0]["coding"][1]["code"] == "426783006"
    assert dr["resultsInterpreter"] == [{"reference": f"Practitioner/{net.readers[0]}"}]
    qrs = read(services, net.ctx("doctor"), "Observation", model.measurement_id(ecg, "qrs"))
    assert qrs["status"] == "corrected" and qrs["valueQuantity"]["value"] == 96.0
    hr = read(services, net.ctx("doctor"), "Observation", model.measurement_id(ecg, "heart_rate"))
    assert hr["status"] == "final"
    task = read(services, net.ctx("doctor"), "Task", ecg)
    assert task["status"] == "completed" and model.reading_of(task).state == "reported"
    # The signed PDF is filed for the sender to read.
    doc = read(services, net.ctx("doctor"), "DocumentReference", signed.document_reference["id"])
    assert doc["content"][0]["attachment"]["contentType"] == "application/pdf"
    with pytest.raises(TelemedError):  # signed once; a second signature would need an amendment
        sign(services, net, "r1", ecg, measurements={}, statements=["sinus-rhythm"])


def test_critical_value_needs_acknowledgement(services):
    net = network.build(services)
    ecg = send(services, net, {"e.dcm": DICOM}, priority="urgent").ecg
    claim(services, net, "r2", ecg)
    signed = sign(services, net, "r2", ecg, measurements={}, statements=["acute-stemi", "st-elevation"],
                  leads="V1-V4")  # fmt: skip
    assert signed.critical and signed.push.event == "critical" and signed.push.sender == net.clinic
    comm = read(services, net.ctx("doctor"), "Communication", f"{ecg}-critical")
    assert comm["status"] == "in-progress" and comm["priority"] == "stat"
    later = services.clock.now() + timedelta(minutes=6)
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, AccessContext.system())
        again = [p for p in report.unacknowledged_critical(repo, later, timedelta(minutes=5)) if p.ecg == ecg]
    assert len(again) == 1 and again[0].sender == net.clinic
    with unit_of_work(services.engine) as conn:
        with pytest.raises(TelemedError):
            report.acknowledge(services.repository(conn, net.ctx("r1")), net.ctx("r1"), later, ecg)
    with unit_of_work(services.engine) as conn:
        report.acknowledge(services.repository(conn, net.ctx("doctor")), net.ctx("doctor"), later, ecg)
    assert read(services, net.ctx("doctor"), "Communication", f"{ecg}-critical")["status"] == "completed"
    assert model.reading_of(read(services, net.ctx("doctor"), "Task", ecg)).state == "acknowledged"
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, AccessContext.system())
        assert [p for p in report.unacknowledged_critical(repo, later, timedelta(minutes=5)) if p.ecg == ecg] == []


def test_extreme_qtc_is_critical():
    assert report.is_critical(["sinus-rhythm"], 530.0) and not report.is_critical(["sinus-rhythm"], 450.0)
    assert report.is_critical(["complete-av-block"], None)


def test_unknown_statement_is_refused(services):
    net = network.build(services)
    ecg = send(services, net, {"e.dcm": DICOM}).ecg
    claim(services, net, "r1", ecg)
    with pytest.raises(TelemedError, match="Unknown ECG statement"):
        sign(services, net, "r1", ecg, measurements={}, statements=["martian-rhythm"])
    assert _pools(services) and service
