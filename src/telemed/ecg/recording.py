"""The :class:`Recording`: an ECG as the device sent it, whatever the file format.

Samples are kept as the device's integers (``digital``) with the scale that turns them into
physical values (``physical = origin + factor * digital``, the FHIR R4 ``SampledData`` rule, §2.24.0.16),
so storing and re-reading a recording never loses or rounds a sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from telemed.kernel.errors import Category, TelemedError

# The standard 12 leads in display order, with their ISO/IEEE 11073-10102 (MDC) codes
# (MDC_ECG_LEAD_<name>, partition 2: 0x20100 + the SCP-ECG lead number).
STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SCP_LEAD_NUMBERS = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
                    "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}  # fmt: skip
MDC_LEAD_CODES = {name: str(0x20100 + n) for name, n in SCP_LEAD_NUMBERS.items()}
MDC_REFIDS = {name: f"MDC_ECG_LEAD_{name.upper() if not name.startswith('a') else 'a' + name[1:].upper()}"
              for name in SCP_LEAD_NUMBERS}  # fmt: skip
_BY_NUMBER = {n: name for name, n in SCP_LEAD_NUMBERS.items()}
_CANONICAL = {name.lower(): name for name in STANDARD_LEADS}

# Physical units as UCUM codes, with their value in millivolts.
UNIT_MV = {"uV": 0.001, "mV": 1.0, "V": 1000.0, "nV": 1e-6}


class UnreadableRecording(TelemedError):
    """A file that is not an ECG we can read (corrupt, truncated, unsupported): a 422 with the reason."""

    def __init__(self, message: str):
        super().__init__(Category.UNPROCESSABLE, message)


def lead_name(label: str) -> str:
    """The canonical name (I, II, ..., aVR, V1) for a lead label as devices write it, else the label."""
    text = label.strip()
    m = re.fullmatch(r"(?:MDC_ECG_LEAD_|Lead\s+)?([A-Za-z0-9]+)(?:\s*\(.*\))?", text, flags=re.IGNORECASE)
    key = (m.group(1) if m else text).lower()
    return _CANONICAL.get(key, text)


def lead_from_scp_number(number: int) -> str | None:
    return _BY_NUMBER.get(number)


def ucum(unit: str) -> str:
    """UCUM code for the unit strings found in ECG files (``uV``, ``µV``, ``mV``, DICOM code values)."""
    u = unit.strip().replace("µ", "u").replace("μ", "u")
    low = u.lower()
    return {"uv": "uV", "mv": "mV", "v": "V", "nv": "nV"}.get(low, u)


@dataclass(frozen=True)
class Lead:
    name: str
    digital: np.ndarray  # integers as recorded
    factor: float  # physical units per digital step
    origin: float = 0.0  # physical value of digital 0
    unit: str = "uV"  # UCUM

    def millivolts(self) -> np.ndarray:
        scale = UNIT_MV.get(self.unit)
        if scale is None:
            raise UnreadableRecording(f"Lead {self.name} is in {self.unit!r}, not a unit of voltage")
        return (self.origin + self.factor * self.digital.astype(np.float64)) * scale


@dataclass(frozen=True)
class Recording:
    """One ECG: leads sampled together at one rate, with what the file says about device and patient."""

    format: str  # "dicom" | "hl7-aecg" | "wfdb"
    sampling_rate: float  # Hz
    leads: tuple[Lead, ...]
    start: datetime | None = None
    device: str | None = None  # manufacturer and model as the file names them
    patient_id: str | None = None  # the id the file carries (not the platform's Patient id)
    patient_name: str | None = None
    patient_sex: str | None = None
    patient_birth_date: str | None = None
    source_uid: str | None = None  # SOP Instance UID, aECG id, or record name
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.leads:
            raise UnreadableRecording("The file holds no ECG leads")
        if not (self.sampling_rate and 50 <= self.sampling_rate <= 20000):
            raise UnreadableRecording(f"Sampling rate {self.sampling_rate!r} Hz is not a plausible ECG rate")
        lengths = {len(lead.digital) for lead in self.leads}
        if len(lengths) != 1:
            raise UnreadableRecording(f"The leads have different lengths: {sorted(lengths)}")
        if lengths.pop() < self.sampling_rate:
            raise UnreadableRecording("The recording is shorter than one second")

    @property
    def samples(self) -> int:
        return len(self.leads[0].digital)

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.samples / self.sampling_rate

    @property
    def lead_names(self) -> list[str]:
        return [lead.name for lead in self.leads]

    def lead(self, name: str) -> Lead:
        wanted = lead_name(name)
        for lead in self.leads:
            if lead.name == wanted or lead.name.lower() == name.lower():
                return lead
        raise TelemedError(
            Category.INCORRECT, f"No lead {name!r} in this recording (it has {', '.join(self.lead_names)})"
        )

    def millivolts(self) -> dict[str, np.ndarray]:
        return {lead.name: lead.millivolts() for lead in self.leads}
