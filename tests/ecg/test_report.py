"""Signing an ECG report: confirmed/corrected measurements, statements, PDF, critical values and acknowledgement."""

from __future__ import annotations

import io
import re
import subprocess
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from telemed.db.engine import unit_of_work
from telemed.ecg import model, paper, report, service
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


def _page(pdf: bytes, page: int, dpi: int) -> np.ndarray:
    png = subprocess.run(["pdftoppm", "-f", str(page), "-l", str(page), "-r", str(dpi), "-png", "-"], input=pdf,
                         capture_output=True, check=True).stdout  # fmt: skip
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _line_spacing(mask: np.ndarray, axis: int) -> tuple[int, float]:
    """The number of grid lines across ``axis`` and the median distance between them, in pixels."""
    profile = mask.sum(axis=axis)
    hits = np.flatnonzero(profile > 0.5 * profile.max())
    runs = np.split(hits, np.flatnonzero(np.diff(hits) > 1) + 1)
    centres = [r.mean() for r in runs]
    return len(centres), float(np.median(np.diff(centres)))


def test_signed_pdf_has_the_waveform_at_paper_scale(services):
    """The PDF's last page (A4 landscape) is the ECG on a grid whose heavy lines are 5 mm apart at
    25 mm/s and 10 mm/mV, with the traces; the Chinese text of the report is still text."""
    net = network.build(services)
    ecg = send(services, net, {"e.dcm": DICOM}).ecg
    claim(services, net, "r1", ecg)
    pdf = sign(services, net, "r1", ecg, measurements={}, statements=["sinus-rhythm"], free_text="正常心电图").pdf
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "9", "-"], input=pdf, capture_output=True, check=True)
    sizes = re.findall(r"Page +\d+ size: +([\d.]+ x [\d.]+)", info.stdout.decode())
    assert sizes[-1] == "841.89 x 595.276" and set(sizes[:-1]) == {"595.276 x 841.89"}  # the last page landscape
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert "心电图诊断报告" in text and "窦性心律" in text and "正常心电图" in text and "李秀英" in text
    assert "25 mm/s" in text and "10 mm/mV" in text
    img = _page(pdf, len(sizes), 254)  # 10 pixels per mm
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    major = (r > 180) & (g < 150) & (b < 150)
    across, dx = _line_spacing(major, 0)
    down, dy = _line_spacing(major, 1)
    assert abs(dx - 50) <= 0.5 and abs(dy - 50) <= 0.5  # 5 mm
    assert across == 53 and down == 29  # 260 mm x 140 mm of paper: 10 s at 25 mm/s + the calibration
    trace = (r < 90) & (g < 90) & (b < 90)
    assert trace.sum() > 40_000  # 16 strips of trace (12 leads, the rhythm strip, 4 calibration pulses)
    # The calibration pulses (1 mV = 10 mm = 100 px high) in the first 10 mm of the paper: the longest
    # vertical run of trace there.
    x0 = int(np.flatnonzero(major.sum(axis=0))[0])
    longest = 0
    for x in range(x0, x0 + 95):
        runs = np.split(np.flatnonzero(trace[:, x]), np.flatnonzero(np.diff(np.flatnonzero(trace[:, x])) > 1) + 1)
        longest = max([longest, *(len(run) for run in runs)])
    assert 98 <= longest <= 106


def test_waveform_figure_of_other_lead_sets():
    leads = {"MLII": np.zeros(3600), "V5": np.ones(3600)}
    drawing = paper.svg(leads, 360.0)
    assert drawing.count('stroke="#000000" stroke-width="0.25" stroke-linejoin') == 2
    assert 'width="260mm" height="70mm"' in drawing and ">MLII</text>" in drawing


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
