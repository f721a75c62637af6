"""PhysioNet WFDB records (a ``.hea`` header and its signal files) through the ``wfdb`` package.

A record arrives as several files; they are written to a private temporary folder under their own
base names (never a path from the upload) and read back with ``wfdb.rdrecord(physical=False)``,
which keeps the ADC values: ``physical = (digital - baseline) / adc_gain``.
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import wfdb

from telemed.ecg.recording import Lead, Recording, UnreadableRecording, lead_name, ucum

_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


def looks_like(files: dict[str, bytes]) -> bool:
    return any(name.lower().endswith(".hea") for name in files)


def read(files: dict[str, bytes]) -> Recording:
    headers = [n for n in files if n.lower().endswith(".hea")]
    if len(headers) != 1:
        raise UnreadableRecording("A WFDB record needs exactly one .hea header among its files")
    for name in files:
        if not _SAFE.match(Path(name).name):
            raise UnreadableRecording(f"File name {name!r} is not a WFDB file name")
    with tempfile.TemporaryDirectory(prefix="telemed-wfdb-") as tmp:
        for name, data in files.items():
            (Path(tmp) / Path(name).name).write_bytes(data)
        record_name = Path(headers[0]).name[: -len(".hea")]
        try:
            rec = wfdb.rdrecord(str(Path(tmp) / record_name), physical=False)
        except FileNotFoundError as exc:
            raise UnreadableRecording(
                f"The WFDB record is missing a signal file: {Path(exc.filename or '').name}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - wfdb raises anything from ValueError to IndexError on bad input
            raise UnreadableRecording(f"Not a readable WFDB record: {exc.__class__.__name__}: {exc}") from None
    signals = rec.d_signal
    if signals is None or signals.ndim != 2 or signals.shape[1] != len(rec.sig_name or []):
        raise UnreadableRecording("The WFDB record holds no signal")
    leads = []
    for j, name in enumerate(rec.sig_name):
        gain = float(rec.adc_gain[j]) or 200.0  # WFDB: a gain of 0 means "uncalibrated", 200/unit by convention
        baseline = float(rec.baseline[j])
        leads.append(
            Lead(
                lead_name(name),
                signals[:, j].astype(np.int32),
                1.0 / gain,
                -baseline / gain,
                ucum(rec.units[j] or "mV"),
            )
        )
    start = datetime.combine(rec.base_date, rec.base_time) if rec.base_date and rec.base_time else None
    comments = " ".join(rec.comments or [])
    return Recording(
        format="wfdb",
        sampling_rate=float(rec.fs),
        leads=tuple(leads),
        start=start,
        source_uid=record_name,
        notes={"comments": comments} if comments else {},
    )
