"""Automatic ECG measurements with neurokit2: R peaks, rate, RR variability, intervals, axis, rhythm flags.

What neurokit2 does well is left to it: cleaning (``ecg_clean``), QRS detection (``ecg_peaks``),
wave delineation (``ecg_delineate``, its peak method: on the devices' and ECGSYN's morphologies it
finds P onset, Q, S and T offset reliably where the wavelet method misses many offsets) and heart-rate variability
(``hrv_time``). This module only chooses the lead, takes medians over beats, applies the QT
corrections (Bazett: QT/√RR; Fridericia: QT/∛RR, RR in seconds) and the frontal-plane axis
(the angle of the net QRS vector from leads I and aVF), and raises rhythm flags. Every result is a
suggestion for the reader to confirm or correct.

Intervals are medians over beats in the analysed lead: PR from P onset to the Q wave, QRS from
the Q to the S wave (the peak method gives no QRS onset/offset, so this reads 10-20 ms short of a
caliper measurement), QT from the Q wave to the end of T.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from telemed.ecg.recording import Recording

PAUSE_SECONDS = 2.0
BRADY_BPM, TACHY_BPM = 60.0, 100.0
IRREGULAR_CV = 0.10  # coefficient of variation of RR above which the rhythm is called irregular
LONG_QTC_MS = 500.0
MIN_QRS_FRACTION = 0.3  # detections with a QRS smaller than this share of the median are noise
ANALYSIS_LEADS = ("II", "I", "V5", "V2", "III", "aVF")


@dataclass
class Analysis:
    lead: str
    sampling_rate: float
    beats: list[int]  # sample index of each detected QRS (R peak) in the analysed lead
    heart_rate: float | None = None  # /min
    rr_mean: float | None = None  # ms
    sdnn: float | None = None  # ms
    rmssd: float | None = None  # ms
    pr: float | None = None  # ms
    qrs: float | None = None  # ms
    qt: float | None = None  # ms
    qtc_bazett: float | None = None  # ms
    qtc_fridericia: float | None = None  # ms
    axis: float | None = None  # degrees, frontal plane QRS axis
    longest_rr: float | None = None  # ms
    flags: list[str] = field(default_factory=list)  # bradycardia, tachycardia, irregular, pause, long-qtc
    software: str = ""

    def measurements(self) -> dict[str, float | None]:
        keys = ("heart_rate", "rr_mean", "sdnn", "rmssd", "pr", "qrs", "qt", "qtc_bazett", "qtc_fridericia", "axis")
        return {k: getattr(self, k) for k in keys}

    def as_dict(self) -> dict:
        return asdict(self)


def _nk():
    import neurokit2 as nk

    return nk


def choose_lead(recording: Recording, wanted: str | None = None) -> str:
    if wanted:
        return recording.lead(wanted).name
    names = recording.lead_names
    return next((n for n in ANALYSIS_LEADS if n in names), names[0])


def detect_beats(signal_mv: np.ndarray, sampling_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(cleaned signal, R-peak sample indexes) with neurokit2's default cleaning and detector."""
    nk = _nk()
    cleaned = nk.ecg_clean(signal_mv, sampling_rate=int(round(sampling_rate)), method="neurokit")
    _, info = nk.ecg_peaks(cleaned, sampling_rate=int(round(sampling_rate)), method="neurokit")
    peaks = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
    return cleaned, _drop_small(cleaned, peaks, sampling_rate)


def _drop_small(cleaned: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """Drop detections whose QRS is far smaller than the others: in a long pause the detector's
    adaptive threshold sinks until it takes noise for a beat."""
    if len(peaks) < 4:
        return peaks
    half = max(1, int(0.05 * fs))
    p2p = np.array([np.ptp(cleaned[max(p - half, 0) : p + half + 1]) for p in peaks])
    return peaks[p2p >= MIN_QRS_FRACTION * float(np.median(p2p))]


def _median_ms(a, b, fs: float, lo: float, hi: float) -> float | None:
    """Median of (b - a) over beats where both are found, in ms, within plausible bounds."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = min(len(a), len(b))
    d = (b[:n] - a[:n]) * 1000.0 / fs
    d = d[np.isfinite(d) & (d >= lo) & (d <= hi)]
    return round(float(np.median(d)), 1) if len(d) else None


def _delineate(cleaned: np.ndarray, peaks: np.ndarray, fs: float) -> dict:
    nk = _nk()
    if len(peaks) < 3:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, waves = nk.ecg_delineate(cleaned, peaks, sampling_rate=int(round(fs)), method="peak")
    except (ValueError, IndexError, ZeroDivisionError, KeyError):
        return {}
    return waves


def _net_qrs(signal_mv: np.ndarray, peaks: np.ndarray, fs: float) -> float:
    """Median over beats of the net QRS deflection (max + min around R, baseline removed)."""
    before, after = int(0.06 * fs), int(0.06 * fs)
    nets = []
    for p in peaks:
        if p - before - int(0.04 * fs) < 0 or p + after >= len(signal_mv):
            continue
        base = float(np.median(signal_mv[p - before - int(0.04 * fs) : p - before]))
        seg = signal_mv[p - before : p + after] - base
        nets.append(float(seg.max() + seg.min()))
    return float(np.median(nets)) if nets else 0.0


def frontal_axis(recording: Recording, peaks: np.ndarray) -> float | None:
    """QRS axis in degrees (-180..180] from the net QRS in I and aVF (aVF derived from II and III if absent)."""
    nk = _nk()
    names = set(recording.lead_names)
    fs = recording.sampling_rate
    mv = {}

    def clean(name):
        if name not in mv:
            mv[name] = nk.ecg_clean(recording.lead(name).millivolts(), sampling_rate=int(round(fs)), method="neurokit")
        return mv[name]

    if "I" in names and "aVF" in names:
        lead_i, lead_avf = clean("I"), clean("aVF")
    elif {"II", "III"} <= names:
        lead_i, lead_avf = clean("II") - clean("III"), (clean("II") + clean("III")) / 2
    else:
        return None
    x, y = _net_qrs(lead_i, peaks, fs), _net_qrs(lead_avf, peaks, fs)
    if abs(x) < 1e-6 and abs(y) < 1e-6:
        return None
    return round(math.degrees(math.atan2(y, x)), 0)


def analyze(recording: Recording, lead: str | None = None) -> Analysis:
    nk = _nk()
    name = choose_lead(recording, lead)
    fs = recording.sampling_rate
    cleaned, peaks = detect_beats(recording.lead(name).millivolts(), fs)
    result = Analysis(
        lead=name, sampling_rate=fs, beats=[int(p) for p in peaks], software=f"neurokit2 {nk.__version__}"
    )
    if len(peaks) < 2:
        result.flags.append("no-rhythm-detected")
        return result
    rr = np.diff(peaks) * 1000.0 / fs
    result.rr_mean = round(float(rr.mean()), 1)
    result.heart_rate = round(60000.0 / float(np.median(rr)), 0)
    result.longest_rr = round(float(rr.max()), 0)
    if len(peaks) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hrv = nk.hrv_time(peaks, sampling_rate=int(round(fs)))
        result.sdnn = round(float(hrv["HRV_SDNN"].iloc[0]), 1)
        result.rmssd = round(float(hrv["HRV_RMSSD"].iloc[0]), 1)
    waves = _delineate(cleaned, peaks, fs)
    if waves:
        q, s = waves.get("ECG_Q_Peaks", []), waves.get("ECG_S_Peaks", [])
        result.pr = _median_ms(waves.get("ECG_P_Onsets", []), q, fs, 60, 400)
        result.qrs = _median_ms(q, s, fs, 30, 250)
        result.qt = _median_ms(q, waves.get("ECG_T_Offsets", []), fs, 200, 700)
    if result.qt is not None:
        rr_s = float(np.median(rr)) / 1000.0
        result.qtc_bazett = round(result.qt / math.sqrt(rr_s), 0)
        result.qtc_fridericia = round(result.qt / rr_s ** (1 / 3), 0)
    result.axis = frontal_axis(recording, peaks)
    if result.heart_rate < BRADY_BPM:
        result.flags.append("bradycardia")
    if result.heart_rate > TACHY_BPM:
        result.flags.append("tachycardia")
    if len(rr) >= 4 and float(np.std(rr) / np.mean(rr)) > IRREGULAR_CV and float(rr.max()) < PAUSE_SECONDS * 1000:
        result.flags.append("irregular")
    if float(rr.max()) >= PAUSE_SECONDS * 1000:
        result.flags.append("pause")
    if (result.qtc_bazett or 0) > LONG_QTC_MS:
        result.flags.append("long-qtc")
    return result
