"""The leads of a stored ECG for the viewer, whole or one time window at a time.

A resting ECG (10 s) goes to the browser whole. A long recording (a 30-minute Holter strip: 12 leads
× 900,000 samples at 500 Hz) would be over 100 MB of JSON, so the viewer asks for the window it
shows (and the next one) as it scrolls. The leads are parsed once (numpy, from the Observations'
``SampledData``) and kept for the few recordings being read at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from telemed.kernel.errors import Category, TelemedError

LONG_SECONDS = 60.0  # longer recordings are sent in windows
DEFAULT_WINDOW = 10.0
MAX_WINDOW = 60.0
_UNIT_TO_MV = {"uV": 0.001, "mV": 1.0, "V": 1000.0}


@dataclass(frozen=True)
class Leads:
    rate: float  # samples per second
    mv: dict[str, np.ndarray]  # lead name -> millivolts (float32)

    @property
    def samples(self) -> int:
        return max((len(v) for v in self.mv.values()), default=0)

    @property
    def duration(self) -> float:
        return self.samples / self.rate if self.rate else 0.0


def from_observations(observations: list[dict]) -> Leads:
    """The leads of an ECG's per-lead Observations (``valueSampledData``, ``code.text`` "Lead II")."""
    mv, rate = {}, 0.0
    for obs in observations:
        sd = obs["valueSampledData"]
        rate = 1000.0 / float(sd["period"])
        scale = _UNIT_TO_MV.get(sd["origin"].get("code", "uV"), 0.001)
        origin, factor = float(sd["origin"]["value"]), float(sd.get("factor", 1))
        digits = np.array(sd["data"].split(), dtype=np.float64)
        name = obs["code"].get("text", "").removeprefix("Lead ")
        mv[name] = ((origin + factor * digits) * scale).astype(np.float32)
    return Leads(rate, mv)


def window(leads: Leads, start: float | None = None, seconds: float | None = None, beats: list[int] = ()) -> dict:
    """What the viewer draws: ``leads`` in mV (4 decimals) from ``start`` for ``seconds``, the beats in
    that window (sample indices of the whole recording), the recording's rate and duration.

    Without a window a short recording comes whole and a long one as its first ``DEFAULT_WINDOW``."""
    duration = leads.duration
    if start is None and seconds is None:
        start, seconds = 0.0, (duration if duration <= LONG_SECONDS else DEFAULT_WINDOW)
    start = 0.0 if start is None else start
    seconds = DEFAULT_WINDOW if seconds is None else seconds
    if not (0 <= start <= duration) or not (0 < seconds <= MAX_WINDOW or seconds >= duration):
        raise TelemedError(Category.INCORRECT, f"A window starts within the recording ({duration:.1f} s) and lasts "
                                               f"at most {MAX_WINDOW:.0f} s")  # fmt: skip
    a = int(round(start * leads.rate))
    b = min(leads.samples, int(round((start + seconds) * leads.rate)))
    return {
        "rate": leads.rate,
        "duration": round(duration, 3),
        "start": round(a / leads.rate, 4),
        "leads": {name: np.round(v[a:b].astype(np.float64), 4).tolist() for name, v in leads.mv.items()},
        "beats": [int(x) for x in beats if a <= x < b],
    }


class LeadsCache:
    """The parsed leads of the few recordings being read (a Holter's are tens of MB)."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: OrderedDict[str, Leads] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load) -> Leads:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        leads = load()
        with self._lock:
            self._items[key] = leads
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return leads
