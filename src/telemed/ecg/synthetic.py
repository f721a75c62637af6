"""Synthetic 12-lead ECGs with known beat positions (tests, accuracy scoring, benchmarks, demo data).

One beat of ``neurokit2.ecg_simulate`` (ECGSYN, noise-free) is the template; it is placed at
R-peak positions drawn from a rhythm (regular sinus, irregular like atrial fibrillation, with a
pause), so the true beat positions are known exactly. The limb leads follow Einthoven's and
Goldberger's equations from a frontal axis; the chest leads are scaled and inverted copies. Noise,
baseline wander and mains hum come from ``neurokit2.signal_distort``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from telemed.ecg.recording import STANDARD_LEADS, Lead, Recording

# Chest-lead gains relative to the template (V1 mostly negative, V4 the tallest R).
_CHEST = {"V1": -0.5, "V2": -0.2, "V3": 0.5, "V4": 1.2, "V5": 1.0, "V6": 0.7}


@cache
def beat_template(sampling_rate: int, heart_rate: int = 60) -> tuple[np.ndarray, int]:
    """One noise-free ECGSYN beat (mV) at ``heart_rate`` (its QT follows the rate) and its R-peak index."""
    import neurokit2 as nk

    sig = nk.ecg_simulate(duration=12, sampling_rate=sampling_rate, heart_rate=heart_rate, heart_rate_std=0,
                          noise=0, method="ecgsyn", random_state=7)  # fmt: skip
    rr = 60.0 / heart_rate
    centre, half = len(sig) // 2, int(rr * sampling_rate / 2)
    r = centre - half + int(np.argmax(sig[centre - half : centre + half]))
    lo, hi = r - int(0.4 * rr * sampling_rate), r + int(0.6 * rr * sampling_rate)
    beat = np.asarray(sig[lo:hi], dtype=float)
    beat = beat - np.linspace(beat[0], beat[-1], len(beat))  # flat ends so placed beats join smoothly
    return beat, r - lo


def rr_intervals(rhythm: str, duration: float, heart_rate: float, rng: np.random.Generator) -> list[float]:
    """RR intervals in seconds for ``rhythm``: ``sinus`` | ``af`` | ``pause``."""
    rrs: list[float] = []
    mean = 60.0 / heart_rate
    while sum(rrs) < duration:
        if rhythm == "af":
            # Irregularly irregular, never faster than ~170/min for a single interval.
            rrs.append(max(0.35, float(rng.uniform(0.55, 1.45) * mean)))
        else:
            rrs.append(float(rng.normal(mean, 0.02 * mean)))
    if rhythm == "pause" and len(rrs) > 4:
        rrs[len(rrs) // 2] = 2.6
    return rrs


@dataclass
class Synthetic:
    recording: Recording
    r_peaks: np.ndarray  # true R-peak sample indexes


def simulate(duration: float = 10.0, sampling_rate: int = 500, heart_rate: float = 70.0, rhythm: str = "sinus",
             noise: float = 0.0, wander: float = 0.0, axis: float = 60.0, seed: int = 0,
             patient_id: str | None = None, device: str | None = "Telemed synthetic") -> Synthetic:  # fmt: skip
    """A 12-lead recording in µV (factor 1 µV, like many carts at 500 Hz)."""
    import neurokit2 as nk

    rng = np.random.default_rng(seed)
    beat, r_at = beat_template(sampling_rate, int(round(heart_rate)))
    n = int(duration * sampling_rate)
    base = np.zeros(n)
    peaks = []
    t = 0.4 + float(rng.uniform(0, 0.3))
    for rr in rr_intervals(rhythm, duration, heart_rate, rng):
        r = int(round(t * sampling_rate))
        if r >= n - int(0.1 * sampling_rate):
            break
        lo = r - r_at
        a, b = max(lo, 0), min(lo + len(beat), n)
        base[a:b] += beat[a - lo : b - lo]
        peaks.append(r)
        t += rr
    theta = math.radians(axis)
    # Frontal-plane projections: lead I at 0°, aVF at +90°, II at +60°, III at +120°.
    proj = {"I": math.cos(theta), "aVF": math.sin(theta)}
    proj["II"] = math.cos(theta - math.radians(60))
    proj["III"] = math.cos(theta - math.radians(120))
    proj["aVR"] = math.cos(theta - math.radians(-150))
    proj["aVL"] = math.cos(theta - math.radians(-30))
    leads = []
    for i, name in enumerate(STANDARD_LEADS):
        sig = base * (proj[name] if name in proj else _CHEST[name])
        if noise or wander:
            with np.errstate(all="ignore"):
                sig = nk.signal_distort(sig, sampling_rate=sampling_rate, noise_amplitude=noise, noise_frequency=40,
                                        powerline_amplitude=noise / 2, powerline_frequency=50,
                                        random_state=seed * 100 + i, silent=True)  # fmt: skip
            if wander:
                phase = float(rng.uniform(0, 2 * math.pi))
                tt = np.arange(n) / sampling_rate
                sig = (
                    sig + wander * np.sin(2 * math.pi * 0.3 * tt + phase) + wander / 2 * np.sin(2 * math.pi * 0.07 * tt)
                )
        leads.append(Lead(name, np.round(np.asarray(sig) * 1000).astype(np.int32), 1.0, 0.0, "uV"))
    rec = Recording("synthetic", float(sampling_rate), tuple(leads), patient_id=patient_id, device=device,
                    notes={"rhythm": rhythm, "heart_rate": heart_rate})  # fmt: skip
    return Synthetic(rec, np.asarray(peaks, dtype=np.int64))


def to_wfdb(recording: Recording, folder: str, name: str = "rec") -> list[str]:
    """Write ``recording`` as a WFDB record (format 16, gain 1000/mV); returns the file names."""
    import wfdb

    mv = np.column_stack([lead.millivolts() for lead in recording.leads])
    wfdb.wrsamp(name, fs=recording.sampling_rate, units=["mV"] * len(recording.leads),
                sig_name=recording.lead_names, p_signal=mv, fmt=["16"] * len(recording.leads),
                adc_gain=[1000.0] * len(recording.leads), baseline=[0] * len(recording.leads),
                write_dir=folder)  # fmt: skip
    return [f"{name}.hea", f"{name}.dat"]
