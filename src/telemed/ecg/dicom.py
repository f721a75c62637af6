"""DICOM waveform ECGs (PS3.3 A.34: 12-Lead ECG, General ECG, Ambulatory ECG Waveform IODs) through pydicom.

The first multiplex group whose label is not a median/representative beat is the recording
(PS3.3 C.10.9: a 12-lead object may also carry a MEDIAN BEAT group). Channel sources are read from
the SCP-ECG code (``5.6.3-9-<n>``) or the MDC code (``2:<n>``), else from their meaning.
"""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.waveforms.numpy_handler import generate_multiplex

from telemed.ecg.recording import Lead, Recording, UnreadableRecording, lead_from_scp_number, lead_name, ucum

ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG",
}


def looks_like(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def _channel_name(ch) -> str:
    src = (ch.get("ChannelSourceSequence") or [None])[0]
    if src is None:
        return ch.get("ChannelLabel") or "?"
    code, scheme = str(src.get("CodeValue", "")), str(src.get("CodingSchemeDesignator", ""))
    number = None
    if scheme.upper() == "SCPECG" and code.startswith("5.6.3-9-"):
        number = code.rsplit("-", 1)[1]
    elif scheme.upper() == "MDC" and code.startswith("2:"):
        number = code.split(":", 1)[1]
    if number and number.isdigit() and lead_from_scp_number(int(number)):
        return lead_from_scp_number(int(number))
    return lead_name(str(src.get("CodeMeaning") or ch.get("ChannelLabel") or code))


def _start(ds) -> datetime | None:
    text = str(ds.get("AcquisitionDateTime") or "")
    if not text:
        text = str(ds.get("ContentDate") or "") + str(ds.get("ContentTime") or "")
    text = text.split(".")[0].split("+")[0]
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d"):
        try:
            return datetime.strptime(text[: len(datetime(2000, 1, 1).strftime(fmt))], fmt)
        except ValueError:
            continue
    return None


def read(data: bytes) -> Recording:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as exc:
        raise UnreadableRecording(f"Not a readable DICOM file: {exc}") from None
    sop = str(ds.get("SOPClassUID", ""))
    if "WaveformSequence" not in ds:
        what = ECG_SOP_CLASSES.get(sop) or (ds.SOPClassUID.name if sop else "no SOP class")
        raise UnreadableRecording(f"The DICOM object ({what}) holds no waveform")
    if sop and sop not in ECG_SOP_CLASSES:
        raise UnreadableRecording(f"The DICOM waveform is a {ds.SOPClassUID.name}, not an ECG")
    groups = list(ds.WaveformSequence)
    index = next((i for i, g in enumerate(groups) if "MEDIAN" not in str(g.get("MultiplexGroupLabel", "")).upper()), 0)
    group = groups[index]
    try:
        arrays = list(generate_multiplex(ds, as_raw=True))
        raw = np.asarray(arrays[index])
    except (ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        raise UnreadableRecording(f"The DICOM waveform data is damaged: {exc}") from None
    expected = (int(group.NumberOfWaveformSamples), int(group.NumberOfWaveformChannels))
    if raw.shape != expected:
        raise UnreadableRecording(f"The DICOM waveform holds {raw.shape} samples, its header says {expected}")
    leads = []
    for j, ch in enumerate(group.ChannelDefinitionSequence):
        units = (ch.get("ChannelSensitivityUnitsSequence") or [None])[0]
        unit = ucum(str(units.CodeValue)) if units is not None else "uV"
        factor = float(ch.get("ChannelSensitivity", 1.0)) * float(ch.get("ChannelSensitivityCorrectionFactor", 1.0))
        leads.append(
            Lead(_channel_name(ch), raw[:, j].astype(np.int32), factor, float(ch.get("ChannelBaseline", 0.0)), unit)
        )
    device = " ".join(str(x) for x in (ds.get("Manufacturer"), ds.get("ManufacturerModelName")) if x) or None
    return Recording(
        format="dicom",
        sampling_rate=float(group.SamplingFrequency),
        leads=tuple(leads),
        start=_start(ds),
        device=device,
        patient_id=str(ds.get("PatientID") or "") or None,
        patient_name=str(ds.get("PatientName") or "") or None,
        patient_sex=str(ds.get("PatientSex") or "") or None,
        patient_birth_date=str(ds.get("PatientBirthDate") or "") or None,
        source_uid=str(ds.get("SOPInstanceUID") or "") or None,
        notes={"sop_class": ECG_SOP_CLASSES.get(sop, sop)},
    )
