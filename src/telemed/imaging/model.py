"""DICOM instances as the platform sees them: checked, indexed, described in DICOM JSON and FHIR.

- :func:`parse_instance` reads a DICOM Part 10 file (PS3.10 §7) and refuses what is not a
  conformant composite instance (missing or malformed UIDs, pixel data shorter than its
  description, bytes that do not parse), before anything is stored.
- :func:`metadata_json` is the instance's DICOM JSON (PS3.18 §F.2) with bulk data replaced by
  ``BulkDataURI`` (PS3.18 §F.2.6) relative to a placeholder that the web layer fills in.
- :func:`imaging_study` builds the FHIR R4 ``ImagingStudy`` of a study from the index.
"""

from __future__ import annotations

import base64
import io
import struct
from dataclasses import dataclass, field

import orjson
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

# pydicom warns about values outside their VR while reading; the checks below decide what is refused,
# and a warning per odd value of a busy modality would flood the log.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

# The placeholder in stored BulkDataURIs; the DICOMweb layer replaces it with its base URL.
BASE_PLACEHOLDER = b"@@DICOMWEB@@"
BULK_THRESHOLD = 1024
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UID_SYSTEM = "urn:dicom:uid"
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"
AE_TITLE_SYSTEM = "urn:telemed:dicom-ae-title"


class NonConformant(Exception):
    """An instance the platform refuses; ``status`` is the C-STORE failure status (PS3.4 B.2.3)."""

    def __init__(self, message: str, status: int = 0xA900):
        super().__init__(message)
        self.status = status  # 0xA900 "Dataset does not match SOP Class", 0xC000 "Cannot understand"


@dataclass
class ParsedInstance:
    raw: bytes  # the Part 10 file: preamble, File Meta Information, the dataset exactly as received
    dataset: Dataset
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    index: dict = field(default_factory=dict)  # study/series/instance/patient attributes (below)


# Attributes are read from the raw element bytes where possible: asking pydicom (``ds.get``) converts
# the element in place, and a converted element then costs the DICOM JSON encoder below ~30 µs
# instead of ~2 µs (a CT image: ~25 such elements, ~1 ms an instance).
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN"})


def _raw_value(ds: Dataset, keyword: str):
    """The value of ``keyword`` as pydicom would give it (a str for text, else pydicom's value), or None."""
    tag = tag_for_keyword(keyword)
    elem = ds._dict.get(tag) if tag is not None else None
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and elem.VR is not None:
        vr = elem.VR
        raw = elem.value
        if raw is None:
            return None
        if vr in _STRING_VRS or vr in ("DS", "IS", "PN"):
            encoding = _encoding(ds) if vr in _TEXT_VRS else "latin-1"
            if encoding is not None:
                text = raw.decode(encoding, "replace")
                if vr in ("DS", "IS"):
                    return text.strip(" \x00")
                return (
                    text.rstrip(" \x00")
                    if vr in _SINGLE_VALUE
                    else "\\".join(p.rstrip(" \x00") for p in text.split("\\"))
                )
        elif vr in ("US", "SS") and len(raw) >= 2:
            little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
            return struct.unpack(("<" if little else ">") + _NUMBERS[vr], raw[:2])[0]
    value = ds[tag].value  # anything else: as pydicom converts it
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return value


def _text(ds: Dataset, keyword: str, limit: int = 255) -> str | None:
    value = _raw_value(ds, keyword)
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    value = _raw_value(ds, keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _uid(ds: Dataset, keyword: str) -> str:
    value = _raw_value(ds, keyword)
    if not value:
        raise NonConformant(f"{keyword} is missing")
    uid = UID(str(value))
    if not uid.is_valid:
        raise NonConformant(f"{keyword} {str(value)[:70]!r} is not a valid UID")
    return str(uid)


def _check_pixels(ds: Dataset, transfer_syntax: UID) -> None:
    """Native pixel data must be at least as long as Rows x Columns x samples x bytes x frames."""
    if "PixelData" not in ds:
        return
    try:
        rows, cols = int(_raw_value(ds, "Rows")), int(_raw_value(ds, "Columns"))  # type: ignore[arg-type]
        bits = int(_raw_value(ds, "BitsAllocated"))  # type: ignore[arg-type]
        samples = _int(ds, "SamplesPerPixel") or 1
    except (AttributeError, TypeError, ValueError):
        raise NonConformant("Pixel Data without Rows, Columns and Bits Allocated") from None
    frames = _int(ds, "NumberOfFrames") or 1
    elem = ds._dict[0x7FE00010]
    value = elem.value if isinstance(elem, RawDataElement) else ds.PixelData
    if transfer_syntax.is_encapsulated:
        if not isinstance(value, bytes) or value[:4] != b"\xfe\xff\x00\xe0":
            raise NonConformant("Encapsulated Pixel Data does not start with a Basic Offset Table item")
        return
    expected = (rows * cols * samples * frames * bits + 7) // 8
    if len(value) < expected:
        raise NonConformant(f"Pixel Data holds {len(value)} bytes; Rows, Columns and frames need {expected}")


def _check_complete(ds: Dataset, size: int) -> None:
    """pydicom stops quietly at an element cut short: the last element must end where the file ends."""
    end = 0
    for elem in ds._dict.values():
        if not isinstance(elem, RawDataElement) or elem.value_tell is None:
            continue  # already decoded (Specific Character Set): the others tell where the data set ends
        length = len(elem.value or b"") + 8 if elem.length == 0xFFFFFFFF else elem.length
        end = max(end, elem.value_tell + length)
    if end and end != size:
        raise NonConformant(f"The data set and the file differ by {size - end} bytes (truncated or garbled)", 0xC000)


def parse_instance(raw: bytes) -> ParsedInstance:
    """Read and check a Part 10 file; raises :class:`NonConformant` for what must not be stored."""
    try:
        ds = dcmread(io.BytesIO(raw))
    except (
        InvalidDicomError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        NotImplementedError,
        OSError,
        UserWarning,
    ) as exc:
        # (UserWarning: where warnings are errors, pydicom's "found implicit VR" and the like refuse too)
        raise NonConformant(f"The instance cannot be read: {exc}", 0xC000) from None
    meta = ds.file_meta
    ts = UID(str(meta.get("TransferSyntaxUID") or ""))
    if not ts.is_valid:
        raise NonConformant("The File Meta Information has no valid Transfer Syntax UID", 0xC000)
    if not ts.is_deflated:
        _check_complete(ds, len(raw))
    parsed = ParsedInstance(
        raw=raw,
        dataset=ds,
        sop_class_uid=_uid(ds, "SOPClassUID"),
        sop_instance_uid=_uid(ds, "SOPInstanceUID"),
        study_uid=_uid(ds, "StudyInstanceUID"),
        series_uid=_uid(ds, "SeriesInstanceUID"),
        transfer_syntax=str(ts),
    )
    _check_pixels(ds, ts)
    try:
        parsed.index = index_attributes(ds)
    except (ValueError, TypeError) as exc:
        raise NonConformant(f"Malformed attribute: {exc}") from None
    return parsed


def _person_name(ds: Dataset, keyword: str) -> str | None:
    value = _raw_value(ds, keyword)
    if not value:
        return None
    return str(value)[:255]


def index_attributes(ds: Dataset) -> dict:
    """The attributes C-FIND and QIDO-RS match on, by level."""
    return {
        "patient": {
            "patient_id": (_text(ds, "PatientID", 64) or ""),
            "patient_name": _person_name(ds, "PatientName"),
            "birth_date": _text(ds, "PatientBirthDate", 8),
            "sex": _text(ds, "PatientSex", 16),
        },
        "study": {
            "study_date": _text(ds, "StudyDate", 8),
            "study_time": _text(ds, "StudyTime", 16),
            "accession_number": _text(ds, "AccessionNumber", 16),
            "study_id": _text(ds, "StudyID", 16),
            "referring_physician": _person_name(ds, "ReferringPhysicianName"),
            "description": _text(ds, "StudyDescription"),
        },
        "series": {
            "modality": _text(ds, "Modality", 16),
            "series_number": _int(ds, "SeriesNumber"),
            "description": _text(ds, "SeriesDescription"),
            "body_part": _text(ds, "BodyPartExamined", 64),
        },
        "instance": {
            "instance_number": _int(ds, "InstanceNumber"),
            "rows": _int(ds, "Rows"),
            "columns": _int(ds, "Columns"),
            "frames": _int(ds, "NumberOfFrames") or (1 if 0x7FE00010 in ds._dict else None),
        },
    }


def instance_path(study: str, series: str, instance: str) -> str:
    return f"studies/{study}/series/{series}/instances/{instance}"


def metadata_json(parsed: ParsedInstance) -> bytes:
    """DICOM JSON of one instance (PS3.18 §F.2); bulk data (pixel data, large values) by BulkDataURI."""
    ds = parsed.dataset
    base = BASE_PLACEHOLDER.decode() + "/" + instance_path(parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid)
    out = dataset_json(ds, base, _encoding(ds))
    if "7FE00010" in out:  # Pixel Data: frames are the useful retrieval (PS3.18 §10.4.1.1.3)
        vr = "OB" if UID(parsed.transfer_syntax).is_encapsulated else out["7FE00010"]["vr"]  # (PS3.5 §8.2)
        out["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base}/frames/1"}
    # Retrieve needs the transfer syntax of what is stored (PS3.18 §10.4.1.1 "AvailableTransferSyntaxUID").
    out["00083002"] = {"vr": "UI", "Value": [parsed.transfer_syntax]}
    return orjson.dumps(out)


# -- a fast DICOM JSON encoder ---------------------------------------------------------------------
# pydicom's Dataset.to_json_dict converts every element to a DataElement first (~45 ms for a CT
# image with its private groups); this works on the raw element bytes as read (~1 ms).
_STRING_VRS = frozenset("AE AS CS DA DT LO LT SH ST TM UC UI UR UT".split())
_SINGLE_VALUE = frozenset({"LT", "ST", "UT", "UR"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_BINARY = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_CHARSETS = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
    "GB18030": "gb18030",
    "GBK": "gbk",
}


def _encoding(ds: Dataset) -> str | None:
    """The Python codec of the dataset's Specific Character Set; None when only pydicom can decode it."""
    raw = ds.get("SpecificCharacterSet") or ""
    values = [raw] if isinstance(raw, str) else list(raw)
    values = [v.strip() for v in values if v and v.strip()] or [""]
    return _CHARSETS.get(values[0]) if len(values) == 1 else None


def _vr_of(tag: int, vr: str | None, signed: bool) -> str:
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return "UN"
    if vr == "UN" and tag >> 16 & 1 == 0:  # a public element sent as UN: its dictionary VR (as pydicom does)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return "UN"
    if " or " in vr:  # ambiguous (PS3.5 §6.2): US/SS by Pixel Representation, OB/OW as words
        vr = "OW" if vr.startswith("OB") else ("SS" if signed else "US")
    return vr


_KEYS: dict[int, str] = {}  # tag -> its DICOM JSON key ("0020000D"), formatted once


def dataset_json(ds: Dataset, base: str, encoding: str | None) -> dict:
    out: dict = {}
    little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
    signed = _raw_value(ds, "PixelRepresentation") == 1  # (read raw: ds.get would convert it)
    keys = _KEYS
    for tag, elem in ds._dict.items():
        t = int(tag)
        if t >> 16 == 0x0002 or not t & 0xFFFF:
            continue  # file meta and group lengths (PS3.18 §F.2.1: not in the JSON model)
        key = keys.get(t)
        if key is None:
            key = f"{t:08X}"
            if len(keys) < 100_000:  # (private tags vary: bounded)
                keys[t] = key
        if not isinstance(elem, RawDataElement) or encoding is None:
            out[key] = ds[tag].to_json_dict(lambda e: f"{base}/bulkdata/{int(e.tag):08X}", BULK_THRESHOLD)
            continue
        vr = elem.VR
        if vr is None or vr == "UN" or " or " in vr:
            vr = _vr_of(t, vr, signed)
        value = elem.value
        if vr == "SQ":
            out[key] = {"vr": "SQ", "Value": [dataset_json(item, base, encoding) for item in ds[tag].value]}
            continue
        doc: dict = {"vr": vr}
        if not value:
            out[key] = doc
            continue
        if vr in _STRING_VRS or vr in ("DS", "IS", "PN"):
            text = value.decode(encoding if vr in ("LO", "LT", "SH", "ST", "UC", "UT", "PN") else "latin-1")
            parts = [text] if vr in _SINGLE_VALUE else text.split("\\")
            parts = [p.rstrip(" \x00") if vr != "UI" else p.rstrip("\x00 ") for p in parts]
            if vr in ("DS", "IS"):
                doc["Value"] = [_number(p, vr) for p in parts]
            elif vr == "PN":
                doc["Value"] = [_pn(p) for p in parts]
            else:
                doc["Value"] = [p if p != "" else None for p in parts]
        elif vr in _NUMBERS:
            fmt = _NUMBERS[vr]
            n = len(value) // struct.calcsize(fmt)
            doc["Value"] = list(struct.unpack(("<" if little else ">") + fmt * n, value[: n * struct.calcsize(fmt)]))
        elif vr == "AT":
            n = len(value) // 4
            words = struct.unpack(("<" if little else ">") + "H" * (2 * n), value[: 4 * n])
            doc["Value"] = [f"{words[2 * i]:04X}{words[2 * i + 1]:04X}" for i in range(n)]
        elif vr in _BINARY:
            if len(value) > BULK_THRESHOLD:
                doc["BulkDataURI"] = f"{base}/bulkdata/{key}"
            else:
                doc["InlineBinary"] = base64.b64encode(value).decode()
        else:  # anything unforeseen: let pydicom do it
            doc = ds[tag].to_json_dict(lambda e: f"{base}/bulkdata/{int(e.tag):08X}", BULK_THRESHOLD)
        out[key] = doc
    return out


def _number(text: str, vr: str):
    text = text.strip()
    if text == "":
        return None
    try:
        return int(text) if vr == "IS" else (int(text) if text.lstrip("+-").isdigit() else float(text))
    except ValueError:
        return text


def _pn(text: str) -> dict | None:
    if not text:
        return None
    groups = text.split("=")
    out = {}
    for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            out[name] = group
    return out


def coding(code: str) -> dict:
    return {"system": DCM, "code": code}


def imaging_study(
    study: dict, patient_fhir_id: str, series: list[dict], instances: dict[str, list[dict]], endpoint_id: str | None
) -> dict:
    """FHIR R4 ImagingStudy (§ImagingStudy) of one study, from its index rows."""
    res: dict = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": UID_SYSTEM, "value": f"urn:oid:{study['study_uid']}"}],
        "status": "available",
        "subject": {"reference": f"Patient/{patient_fhir_id}"},
        "numberOfSeries": len(series),
        "numberOfInstances": sum(len(instances.get(s["series_uid"], [])) for s in series),
    }
    if study.get("accession_number"):
        res["identifier"].append(
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": study["accession_number"],
            }
        )
    started = _fhir_datetime(study.get("study_date"), study.get("study_time"))
    if started:
        res["started"] = started
    modalities = sorted({s["modality"] for s in series if s.get("modality")})
    if modalities:
        res["modality"] = [coding(m) for m in modalities]
    if study.get("description"):
        res["description"] = study["description"]
    if endpoint_id:
        res["endpoint"] = [{"reference": f"Endpoint/{endpoint_id}"}]
    res["series"] = []
    for s in series:
        entry: dict = {"uid": s["series_uid"], "modality": coding(s.get("modality") or "OT")}
        if s.get("series_number") is not None:
            entry["number"] = s["series_number"]
        if s.get("description"):
            entry["description"] = s["description"]
        insts = instances.get(s["series_uid"], [])
        entry["numberOfInstances"] = len(insts)
        if s.get("body_part"):
            entry["bodySite"] = {"system": DCM, "code": s["body_part"], "display": s["body_part"]}
        entry["instance"] = []
        for i in insts:
            item: dict = {
                "uid": i["sop_instance_uid"],
                "sopClass": {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{i['sop_class_uid']}"},
            }
            if i.get("instance_number") is not None:
                item["number"] = i["instance_number"]
            entry["instance"].append(item)
        res["series"].append(entry)
    return res


def _fhir_datetime(da: str | None, tm: str | None) -> str | None:
    if not da or len(da) != 8 or not da.isdigit():
        return None
    out = f"{da[:4]}-{da[4:6]}-{da[6:]}"
    tm = (tm or "").strip()
    if len(tm) >= 6 and tm[:6].isdigit():
        return f"{out}T{tm[:2]}:{tm[2:4]}:{tm[4:6]}+08:00"  # DICOM times are local; the platform is in China
    return out


def patient_resource(org: str | None, attrs: dict, identifier_system: str) -> dict:
    """A FHIR Patient for a DICOM Patient ID not yet known at the sending institution."""
    res: dict = {"resourceType": "Patient", "active": True}
    if attrs.get("patient_id"):
        res["identifier"] = [{"use": "usual", "system": identifier_system, "value": attrs["patient_id"]}]
    name = _fhir_name(attrs.get("patient_name"))
    if name:
        res["name"] = [name]
    sex = {"M": "male", "F": "female", "O": "other"}.get((attrs.get("sex") or "").upper())
    if sex:
        res["gender"] = sex
    bd = attrs.get("birth_date")
    if bd and len(bd) == 8 and bd.isdigit():
        res["birthDate"] = f"{bd[:4]}-{bd[4:6]}-{bd[6:]}"
    if org:
        res["managingOrganization"] = {"reference": f"Organization/{org}"}
    return res


def _fhir_name(pn: str | None) -> dict | None:
    """PS3.5 §6.2.1 Person Name: alphabetic=ideographic=phonetic groups, each family^given^middle^prefix^suffix."""
    if not pn:
        return None
    groups = pn.split("=")
    chosen = next((g for g in (groups[1:2] + groups[:1]) if g.strip("^ ")), "")
    if not chosen:
        return None
    parts = chosen.split("^")
    name: dict = {"use": "official"}
    if parts[0].strip():
        name["family"] = parts[0].strip()
    given = [p.strip() for p in parts[1:3] if p.strip()]
    if given:
        name["given"] = given
    ideographic = len(groups) > 1 and chosen is groups[1]
    name["text"] = "".join(parts[:2]) if ideographic else " ".join(given + [parts[0].strip()]).strip()
    return name
