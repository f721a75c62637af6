"""The two steps of an ECG's arrival: in the pool first (committed, pushed), the measurements after;
a reader who is quicker than the analysis still signs, and the late analysis leaves the signed report alone."""

from __future__ import annotations

import pytest
from pydicom.data import get_testdata_file

from telemed.db.engine import unit_of_work
from telemed.ecg import UnreadableRecording, model, service
from telemed.kernel.errors import TelemedError
from tests.conftest import unique
from tests.ecg import network
from tests.ecg.test_report import sign
from tests.ecg.test_service import _pools, claim, read

DICOM = open(get_testdata_file("waveform_ecg.dcm"), "rb").read()


def receive(services, net, files):
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("doctor"))
        return service.receive(repo, services.blobs, _pools(services), services.clock.now(), unique("ecg"),
                               files=files, patient=net.patient, ctx=net.ctx("doctor"))  # fmt: skip


def analyse(services, net, received):
    with unit_of_work(services.engine) as conn:
        return service.add_analysis(services.repository(conn, net.ctx("doctor")), services.clock.now(), received)


def test_in_the_pool_before_the_analysis(services):
    net = network.build(services)
    received = receive(services, net, {"e.dcm": DICOM})
    ecg = received.ecg
    assert received.analysis is None and received.push.event == "new" and len(received.push.readers) == 2
    # Committed: a reader sees it waiting, with its leads, and no measurements yet.
    with unit_of_work(services.engine, write=False) as conn:
        assert ecg in [t.resource["id"] for t in service.waiting(services.repository(conn, net.ctx("r1")), net.pool)]
    assert len(read(services, net.ctx("r1"), "Observation", ecg)["hasMember"]) == 12
    assert "result" not in read(services, net.ctx("r1"), "DiagnosticReport", ecg)
    with pytest.raises(TelemedError):
        read(services, net.ctx("r1"), "Observation", model.measurement_id(ecg, "heart_rate"))
    analysis = analyse(services, net, received)
    assert analysis.heart_rate and received.analysis is analysis
    dr = read(services, net.ctx("r1"), "DiagnosticReport", ecg)
    assert dr["status"] == "preliminary" and len(dr["result"]) == len(model.MEASUREMENTS) + 1
    hr = read(services, net.ctx("r1"), "Observation", model.measurement_id(ecg, "heart_rate"))
    assert hr["status"] == "preliminary" and hr["meta"]["tag"][0]["code"] == "machine-generated"


def test_signed_before_the_analysis(services):
    net = network.build(services)
    received = receive(services, net, {"e.dcm": DICOM})
    claim(services, net, "r1", received.ecg)
    signed = sign(services, net, "r1", received.ecg, measurements={"heart_rate": 72.0}, statements=["sinus-rhythm"])
    assert signed.pdf.startswith(b"%PDF")
    before = read(services, net.ctx("r1"), "DiagnosticReport", received.ecg)
    analyse(services, net, received)
    after = read(services, net.ctx("r1"), "DiagnosticReport", received.ecg)
    assert after == before and after["status"] == "final"


def test_corrupt_file_stores_nothing(services):
    net = network.build(services)
    with pytest.raises(UnreadableRecording):
        receive(services, net, {"e.dcm": DICOM[:2000]})
    with unit_of_work(services.engine, write=False) as conn:
        assert service.waiting(services.repository(conn, net.ctx("r1")), net.pool) == []
