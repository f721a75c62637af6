"""Reading DICOM waveform, HL7 aECG and WFDB recordings, and refusing what is not one."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from telemed.ecg import aecg
from telemed.ecg.formats import read_files, read_path
from telemed.ecg.recording import STANDARD_LEADS, UnreadableRecording
from telemed.ecg.synthetic import simulate, to_wfdb

DICOM_ECG = get_testdata_file("waveform_ecg.dcm")


def test_dicom_12_lead():
    rec = read_path(DICOM_ECG)
    assert rec.format == "dicom"
    assert rec.lead_names == list(STANDARD_LEADS)
    assert rec.sampling_rate == 1000 and rec.samples == 10000 and rec.duration == 10.0
    assert rec.device == "Mortara Instrument, Inc. el250"
    assert rec.patient_id == "642341" and rec.start.isoformat() == "2013-01-25T10:59:19"
    lead_ii = rec.lead("II")
    assert (lead_ii.factor, lead_ii.origin, lead_ii.unit) == (1.25, 0.0, "uV")
    # The same values pydicom's own waveform_array gives (in µV), from the raw integers we keep.
    ds = pydicom.dcmread(DICOM_ECG)
    np.testing.assert_allclose(lead_ii.millivolts() * 1000, ds.waveform_array(0)[:, 1])


def test_aecg_round_trip_keeps_every_sample():
    syn = simulate(duration=5, sampling_rate=500, seed=1, patient_id="P-77")
    data = aecg.write(syn.recording)
    rec = read_files({"ecg.xml": data})
    assert rec.format == "hl7-aecg" and rec.lead_names == list(STANDARD_LEADS)
    assert rec.sampling_rate == pytest.approx(500) and rec.patient_id == "P-77"
    for a, b in zip(rec.leads, syn.recording.leads, strict=True):
        assert np.array_equal(a.digital, b.digital) and a.factor == b.factor and a.unit == b.unit


def test_wfdb_record(tmp_path):
    syn = simulate(duration=5, sampling_rate=360, seed=2)
    names = to_wfdb(syn.recording, str(tmp_path))
    rec = read_files({n: (tmp_path / n).read_bytes() for n in names})
    assert rec.format == "wfdb" and rec.sampling_rate == 360 and rec.lead_names == list(STANDARD_LEADS)
    np.testing.assert_allclose(rec.lead("V4").millivolts(), syn.recording.lead("V4").millivolts(), atol=1e-9)
    assert read_path(str(tmp_path / "rec.hea")).samples == rec.samples


def _dicom_bytes() -> bytes:
    with open(DICOM_ECG, "rb") as f:
        return f.read()


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"a.dcm": b""}, "empty"),
        ({"a.dcm": b"hello world"}, "not a DICOM waveform"),
        ({"a.dcm": _dicom_bytes()[:5000]}, "not a readable DICOM"),
        ({"a.dcm": _dicom_bytes()[:-1000]}, "DICOM"),
        ({"a.xml": b"<AnnotatedECG xmlns='urn:hl7-org:v3'><component>"}, "not well-formed"),
        ({"a.xml": b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><AnnotatedECG/>"}, "DTD"),
        ({"a.xml": b"<AnnotatedECG xmlns='urn:hl7-org:v3'></AnnotatedECG>"}, "no waveform series"),
        ({"r.hea": b"r 12 500 5000\n"}, "WFDB"),
        ({"a.scp": b"\x00" * 200}, "SCP-ECG is not supported"),
        ({"a.dcm": b"x", "b.dcm": b"y"}, "Send one"),
    ],
)
def test_refusals_say_why(files, reason):
    with pytest.raises(UnreadableRecording) as err:
        read_files(files)
    assert reason.lower() in err.value.message.lower()
    assert err.value.category.status == 422


def test_dicom_that_is_not_an_ecg():
    with pytest.raises(UnreadableRecording, match="holds no waveform"):
        read_files({"ct.dcm": open(get_testdata_file("CT_small.dcm"), "rb").read()})


def test_truncated_wfdb_signal(tmp_path):
    syn = simulate(duration=5, sampling_rate=250, seed=3)
    to_wfdb(syn.recording, str(tmp_path))
    data = (tmp_path / "rec.dat").read_bytes()
    with pytest.raises(UnreadableRecording):
        read_files({"rec.hea": (tmp_path / "rec.hea").read_bytes(), "rec.dat": data[: len(data) // 3]})


def test_dicom_with_wrong_sample_count():
    ds = pydicom.dcmread(DICOM_ECG)
    ds.WaveformSequence[0].NumberOfWaveformSamples = 20000
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(UnreadableRecording):
        read_files({"x.dcm": buf.getvalue()})
