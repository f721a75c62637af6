"""An ECG drawn as on ECG paper, in SVG whose user unit is the millimetre (``width``/``height`` in mm
and a ``viewBox`` in mm), so it prints at scale: 25 mm/s and 10 mm/mV by default, a 1 mm grid with
a heavier line every 5 mm, a 1 mV calibration pulse at the start of each row.

Twelve standard leads: the standard 3×4 layout (I, II, III | aVR, aVL, aVF | V1–V3 | V4–V6, 2.5 s
per column at 25 mm/s, each column the time span it shows) and a rhythm strip of lead II over the
full 10 s. Any other set of leads: one full-width strip per lead (up to eight).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

import numpy as np

from telemed.ecg.recording import STANDARD_LEADS

COLUMNS = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))
SECONDS = 10.0  # what one page shows
CAL_MM = 10.0  # room left of the traces for the calibration pulse
GRID_MINOR = "#f4b6b6"
GRID_MAJOR = "#e06666"
TRACE = "#000000"


def _f(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _trace(mv: np.ndarray, rate: float, x0: float, baseline: float, speed: float, gain: float, top: float,
           bottom: float) -> str:  # fmt: skip
    """An SVG path of ``mv`` starting at x0 (mm) on ``baseline`` (mm), clamped to [top, bottom]."""
    if not len(mv):
        return ""
    x = x0 + np.arange(len(mv)) * (speed / rate)
    y = np.clip(baseline - mv * gain, top, bottom)
    pts = " ".join(f"{_f(a)} {_f(b)}" for a, b in zip(x.tolist(), y.tolist(), strict=True))
    return f'<path d="M{pts}" fill="none" stroke="{TRACE}" stroke-width="0.25" stroke-linejoin="round"/>'


def _label(x: float, y: float, text: str) -> str:
    return f'<text x="{_f(x)}" y="{_f(y)}" font-size="3" font-family="DejaVu Sans, sans-serif">{escape(text)}</text>'


def _calibration(x: float, baseline: float, gain: float, speed: float) -> str:
    """The 1 mV pulse: 0.2 s wide at ``speed``, ``gain`` mm high."""
    w = 0.2 * speed
    return (f'<path d="M{_f(x)} {_f(baseline)} h1 v{_f(-gain)} h{_f(w)} v{_f(gain)} h1" fill="none" '
            f'stroke="{TRACE}" stroke-width="0.25"/>')  # fmt: skip


def svg(leads: Mapping[str, np.ndarray], rate: float, *, speed: float = 25.0, gain: float = 10.0,
        rhythm: str = "II", row_mm: float = 35.0) -> str:  # fmt: skip
    """``leads``: name -> millivolts, all sampled at ``rate`` Hz. Returns an ``<svg>`` element."""
    n = int(round(min(SECONDS, min(len(v) for v in leads.values()) / rate) * rate)) if leads else 0
    seconds = n / rate if rate else 0.0
    twelve = all(name in leads for name in STANDARD_LEADS)
    if twelve:
        rows = 4
    else:
        names = [name for name in leads][:8]
        rows = max(1, len(names))
        row_mm = min(row_mm, 160.0 / rows)
    width = CAL_MM + SECONDS * speed
    height = rows * row_mm
    minor = " ".join(f"M{i} 0V{_f(height)}" for i in range(int(width) + 1) if i % 5) + " " + " ".join(
        f"M0 {i}H{_f(width)}" for i in range(int(height) + 1) if i % 5
    )  # fmt: skip
    major = " ".join(f"M{i} 0V{_f(height)}" for i in range(0, int(width) + 1, 5)) + " " + " ".join(
        f"M0 {i}H{_f(width)}" for i in range(0, int(height) + 1, 5)
    )  # fmt: skip
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ecg-paper" width="{_f(width)}mm" height="{_f(height)}mm" '
        f'viewBox="0 0 {_f(width)} {_f(height)}" data-speed="{_f(speed)}" data-gain="{_f(gain)}">',
        f'<rect width="{_f(width)}" height="{_f(height)}" fill="#ffffff"/>',
        f'<path class="grid-minor" d="{minor}" stroke="{GRID_MINOR}" stroke-width="0.06" fill="none"/>',
        f'<path class="grid-major" d="{major}" stroke="{GRID_MAJOR}" stroke-width="0.15" fill="none"/>',
    ]  # fmt: skip

    def baseline(row: int) -> float:
        return row * row_mm + row_mm * 0.6

    def strip(row: int, name: str, start: int, stop: int, x0: float) -> None:
        b = baseline(row)
        parts.append(_trace(leads[name][start:stop], rate, x0, b, speed, gain, row * row_mm, (row + 1) * row_mm))
        parts.append(_label(x0 + 1, row * row_mm + 4, name))

    for row in range(rows):
        parts.append(_calibration(1.0, baseline(row), gain, speed))
    if twelve:
        per = n // len(COLUMNS)
        for c, column in enumerate(COLUMNS):
            x0 = CAL_MM + c * per / rate * speed
            for row, name in enumerate(column):
                strip(row, name, c * per, (c + 1) * per, x0)
                if c:  # the boundary tick between columns
                    b = baseline(row)
                    parts.append(f'<path d="M{_f(x0)} {_f(b - 3)}V{_f(b + 3)}" stroke="{TRACE}" stroke-width="0.25"/>')
        strip(3, rhythm if rhythm in leads else "II", 0, n, CAL_MM)
    else:
        for row, name in enumerate(names):
            strip(row, name, 0, n, CAL_MM)
    parts.append(f"<desc>{_f(seconds)} s, {_f(speed)} mm/s, {_f(gain)} mm/mV</desc></svg>")
    return "".join(p for p in parts if p)
