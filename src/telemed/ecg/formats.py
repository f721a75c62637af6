"""Which reader a file (or set of files) needs, decided from its content, not its name alone."""

from __future__ import annotations

from pathlib import Path

from telemed.ecg import aecg, dicom, wfdb_record
from telemed.ecg.recording import Recording, UnreadableRecording

SCP_HINT = "SCP-ECG is not supported: no maintained Python parser exists; export DICOM or HL7 aECG instead"


def read_files(files: dict[str, bytes]) -> Recording:
    """The recording in ``files`` (name -> bytes): one DICOM or aECG file, or a WFDB record's files."""
    if not files:
        raise UnreadableRecording("No file was sent")
    if wfdb_record.looks_like(files):
        return wfdb_record.read(files)
    if len(files) != 1:
        raise UnreadableRecording("Send one DICOM or aECG file, or the .hea and signal files of one WFDB record")
    ((name, data),) = files.items()
    if not data:
        raise UnreadableRecording(f"{name} is empty")
    if dicom.looks_like(data):
        return dicom.read(data)
    if aecg.looks_like(data):
        return aecg.read(data)
    if name.lower().endswith(".scp"):
        raise UnreadableRecording(SCP_HINT)
    raise UnreadableRecording(f"{name} is not a DICOM waveform, an HL7 aECG document or a WFDB record")


def read_path(path: str) -> Recording:
    """A recording from disk (the CLI): a WFDB ``.hea`` brings the signal files its header names."""
    p = Path(path)
    if not p.is_file():
        raise UnreadableRecording(f"{path}: no such file")
    if p.suffix.lower() != ".hea":
        return read_files({p.name: p.read_bytes()})
    files = {p.name: p.read_bytes()}
    for line in files[p.name].decode("ascii", errors="replace").splitlines()[1:]:
        fields = line.split()
        if fields and not line.startswith("#"):
            signal_file = p.parent / Path(fields[0]).name
            if signal_file.is_file():
                files[signal_file.name] = signal_file.read_bytes()
    return wfdb_record.read(files)
