"""Automatic measurements: beat detection scored with wfdb.processing.compare_annotations, intervals, flags."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb.processing
from pydicom.data import get_testdata_file

from telemed.ecg.analysis import analyze
from telemed.ecg.formats import read_path
from telemed.ecg.synthetic import simulate

WINDOW_S = 0.150

# (rhythm, heart rate, noise mV, baseline wander mV): records the scoring runs over.
CASES = [
    (rhythm, hr, noise, wander, seed)
    for seed, (rhythm, hr) in enumerate(
        [("sinus", 48), ("sinus", 72), ("sinus", 110), ("sinus", 150), ("af", 85), ("af", 120), ("pause", 60)]
    )  # fmt: skip
    for noise, wander in [(0.02, 0.1), (0.08, 0.4), (0.2, 1.0)]
]


def score(ref: np.ndarray, test: list[int], fs: float):
    cmp = wfdb.processing.compare_annotations(ref, np.asarray(test, dtype=np.int64), int(WINDOW_S * fs))
    return cmp.tp, cmp.fp, cmp.fn


def test_qrs_detection_accuracy_on_simulated_records(capsys):
    tp = fp = fn = 0
    for rhythm, hr, noise, wander, seed in CASES:
        syn = simulate(duration=30, sampling_rate=500, heart_rate=hr, rhythm=rhythm, noise=noise, wander=wander,
                       seed=seed)  # fmt: skip
        a, b, c = score(syn.r_peaks, analyze(syn.recording).beats, 500)
        tp, fp, fn = tp + a, fp + b, fn + c
    se, ppv = tp / (tp + fn), tp / (tp + fp)
    f1 = 2 * se * ppv / (se + ppv)
    with capsys.disabled():
        print(f"\nQRS detection on {len(CASES)} simulated 30 s records ({tp + fn} beats, window 150 ms): "
              f"Se {se:.4f}  +P {ppv:.4f}  F1 {f1:.4f}")  # fmt: skip
    assert se >= 0.99 and ppv >= 0.99 and f1 >= 0.99


def test_intervals_of_the_dicom_test_file():
    result = analyze(read_path(get_testdata_file("waveform_ecg.dcm")))
    assert result.lead == "II" and len(result.beats) == 10
    assert 58 <= result.heart_rate <= 64
    assert 110 <= result.pr <= 200 and 70 <= result.qrs <= 120 and 330 <= result.qt <= 420
    rr = 60 / result.heart_rate
    assert result.qtc_bazett == pytest.approx(result.qt / rr**0.5, abs=2)
    assert result.qtc_fridericia == pytest.approx(result.qt / rr ** (1 / 3), abs=2)
    assert 0 <= result.axis <= 90  # normal axis
    assert result.flags == []


@pytest.mark.parametrize("axis", [-45, 0, 60, 100])
def test_frontal_axis_follows_the_heart_vector(axis):
    result = analyze(simulate(duration=10, heart_rate=70, axis=axis, noise=0.01, seed=4).recording)
    assert result.axis == pytest.approx(axis, abs=15)


@pytest.mark.parametrize(
    ("rhythm", "hr", "flag"),
    [("sinus", 45, "bradycardia"), ("sinus", 130, "tachycardia"), ("af", 90, "irregular"), ("pause", 60, "pause")],
)
def test_rhythm_flags(rhythm, hr, flag):
    result = analyze(simulate(duration=20, heart_rate=hr, rhythm=rhythm, noise=0.01, seed=5).recording)
    assert flag in result.flags


def test_regular_sinus_rhythm_raises_no_flag():
    result = analyze(simulate(duration=20, heart_rate=72, noise=0.02, seed=6).recording)
    assert result.flags == [] and 68 <= result.heart_rate <= 76


def test_analysis_of_another_lead():
    rec = read_path(get_testdata_file("waveform_ecg.dcm"))
    assert analyze(rec, "v5").lead == "V5"
