"""``telemed ecg analyze``."""

from __future__ import annotations

import json

from pydicom.data import get_testdata_file

from telemed.__main__ import main
from telemed.ecg import aecg
from telemed.ecg.synthetic import simulate, to_wfdb


def test_json_on_each_format(tmp_path, capsys):
    syn = simulate(duration=10, sampling_rate=500, heart_rate=80, noise=0.02, seed=9)
    to_wfdb(syn.recording, str(tmp_path), "r1")
    (tmp_path / "e.xml").write_bytes(aecg.write(syn.recording))
    for path in (get_testdata_file("waveform_ecg.dcm"), str(tmp_path / "r1.hea"), str(tmp_path / "e.xml")):
        assert main(["ecg", "analyze", path, "--format", "json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["lead"] == "II" and len(doc["beats"]) >= 8
        assert set(doc["measurements"]) >= {"heart_rate", "pr", "qrs", "qt", "qtc_bazett", "qtc_fridericia", "axis"}
    assert abs(doc["measurements"]["heart_rate"] - 80) <= 3
    assert all(abs(b - r) < 20 for b, r in zip(doc["beats"], syn.r_peaks, strict=False))


def test_text_output_and_lead_choice(capsys):
    assert main(["ecg", "analyze", get_testdata_file("waveform_ecg.dcm"), "--lead", "V5"]) == 0
    out = capsys.readouterr().out
    assert "analysed lead V5" in out and "beats (10):" in out and "QTc Fridericia" in out


def test_unreadable_file_is_an_error(tmp_path, capsys):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"nonsense")
    assert main(["ecg", "analyze", str(bad)]) == 2
    assert "not a DICOM waveform" in capsys.readouterr().err
    assert main(["ecg", "analyze", get_testdata_file("waveform_ecg.dcm"), "--lead", "X9"]) == 2
