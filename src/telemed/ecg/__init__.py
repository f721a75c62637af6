"""Remote ECG (远程心电): ingest of DICOM/HL7 aECG/WFDB recordings, automatic measurements, reading pools,
signed reports.

Public API for the other packages (the portal, the demo, the CLI): nothing else in this package is
imported from outside it.
"""

from telemed.ecg import aecg, analysis, formats, synthetic
from telemed.ecg.analysis import Analysis, analyze
from telemed.ecg.formats import read_files, read_path
from telemed.ecg.recording import STANDARD_LEADS, Lead, Recording, UnreadableRecording

__all__ = [
    "STANDARD_LEADS",
    "Analysis",
    "Lead",
    "Recording",
    "UnreadableRecording",
    "aecg",
    "analysis",
    "analyze",
    "formats",
    "read_files",
    "read_path",
    "synthetic",
]
