"""HL7 v3 annotated ECG (aECG, ANSI/HL7 V3 ECG R1-2004): reading, and writing for tests, demos and export.

The rhythm waveforms are the ``series`` whose code is ``RHYTHM``; in its ``sequenceSet`` the
``TIME_ABSOLUTE`` (or ``TIME_RELATIVE``) sequence gives the sampling increment, and each
``MDC_ECG_LEAD_*`` sequence is a ``SLIST_PQ``: ``origin`` + ``scale`` × ``digits``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime

import numpy as np

from telemed.ecg.recording import MDC_REFIDS, Lead, Recording, UnreadableRecording, lead_name, ucum

NS = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_N = {"h": NS}
MDC_OID = "2.16.840.1.113883.6.24"
_TIME_UNITS = {"s": 1.0, "ms": 0.001, "us": 1e-6}


def looks_like(data: bytes) -> bool:
    head = data[:4096].lstrip()
    return head.startswith(b"<") and b"AnnotatedECG" in head


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    digits = re.sub(r"[^0-9]", "", value.split(".")[0].split("+")[0])[:14]
    for fmt, n in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12), ("%Y%m%d", 8)):
        if len(digits) >= n:
            try:
                return datetime.strptime(digits[:n], fmt)
            except ValueError:
                return None
    return None


def read(data: bytes) -> Recording:
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise UnreadableRecording("The aECG file declares a DTD or entities, which are not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise UnreadableRecording(f"The aECG file is not well-formed XML: {exc}") from None
    if root.tag != f"{{{NS}}}AnnotatedECG":
        raise UnreadableRecording(f"Not an HL7 aECG document (root element {root.tag!r})")
    series = None
    for s in root.iterfind(".//h:series", _N):
        code = s.find("h:code", _N)
        if code is not None and code.get("code") == "RHYTHM":
            series = s
            break
    if series is None:
        series = root.find(".//h:series", _N)
    if series is None:
        raise UnreadableRecording("The aECG document has no waveform series")
    rate = None
    leads = []
    try:
        for seq in series.iterfind("h:component/h:sequenceSet/h:component/h:sequence", _N):
            code = (seq.find("h:code", _N).get("code") or "") if seq.find("h:code", _N) is not None else ""
            value = seq.find("h:value", _N)
            if value is None:
                continue
            if code.startswith("TIME_"):
                inc = value.find("h:increment", _N)
                if inc is not None:
                    rate = 1.0 / (float(inc.get("value")) * _TIME_UNITS.get(inc.get("unit", "s"), 1.0))
                continue
            origin, scale = value.find("h:origin", _N), value.find("h:scale", _N)
            digits = value.find("h:digits", _N)
            if digits is None or scale is None:
                raise UnreadableRecording(f"Lead {code} has no digits or scale")
            samples = np.array(digits.text.split(), dtype=np.int64)
            unit = ucum(scale.get("unit", "uV"))
            origin_value = float(origin.get("value", 0)) if origin is not None else 0.0
            origin_unit = ucum(origin.get("unit", unit)) if origin is not None else unit
            if origin_unit != unit:
                raise UnreadableRecording(f"Lead {code}: origin in {origin_unit}, scale in {unit}")
            leads.append(Lead(lead_name(code), samples.astype(np.int32), float(scale.get("value")), origin_value, unit))
    except (ValueError, TypeError, AttributeError) as exc:
        raise UnreadableRecording(f"The aECG waveform is damaged: {exc}") from None
    if rate is None:
        raise UnreadableRecording("The aECG series gives no sampling increment")
    eff = root.find("h:effectiveTime/h:low", _N)
    pid = root.find(".//h:subject/h:trialSubject/h:id", _N)
    person = root.find(".//h:subject/h:trialSubject/h:subjectDemographicPerson", _N)
    name = person.find("h:name", _N) if person is not None else None
    sex = person.find("h:administrativeGenderCode", _N) if person is not None else None
    birth = person.find("h:birthTime", _N) if person is not None else None
    model = root.find(".//h:author/h:seriesAuthor/h:manufacturedSeriesDevice/h:manufacturerModelName", _N)
    org = root.find(".//h:author/h:seriesAuthor/h:manufacturerOrganization/h:name", _N)
    device = " ".join(x.text for x in (org, model) if x is not None and x.text) or None
    ident = root.find("h:id", _N)
    return Recording(
        format="hl7-aecg",
        sampling_rate=rate,
        leads=tuple(leads),
        start=_ts(eff.get("value") if eff is not None else None),
        device=device,
        patient_id=(pid.get("extension") or pid.get("root")) if pid is not None else None,
        patient_name=name.text if name is not None and name.text else None,
        patient_sex=sex.get("code") if sex is not None else None,
        patient_birth_date=birth.get("value") if birth is not None else None,
        source_uid=ident.get("root") if ident is not None else None,
    )


def write(recording: Recording, uid: str = "2.25.1") -> bytes:
    """An aECG document holding ``recording`` as one RHYTHM series (used by tests, the demo and export)."""
    ET.register_namespace("", NS)
    ET.register_namespace("xsi", XSI)

    def el(parent, tag, text=None, **attrs):
        e = ET.SubElement(parent, f"{{{NS}}}{tag}", {k.replace("xsi_", f"{{{XSI}}}"): str(v) for k, v in attrs.items()})
        if text is not None:
            e.text = text
        return e

    root = ET.Element(f"{{{NS}}}AnnotatedECG")
    el(root, "id", root=recording.source_uid or uid)
    el(root, "code", code="93000", codeSystem="2.16.840.1.113883.6.12", codeSystemName="CPT-4")
    start = (recording.start or datetime(2026, 1, 1)).strftime("%Y%m%d%H%M%S")
    eff = el(root, "effectiveTime")
    el(eff, "low", value=start)
    subj = el(el(el(el(root, "componentOf"), "timepointEvent"), "componentOf"), "subjectAssignment")
    ts = el(el(subj, "subject"), "trialSubject")
    el(ts, "id", root="2.25.2", extension=recording.patient_id or "unknown")
    person = el(ts, "subjectDemographicPerson")
    if recording.patient_name:
        el(person, "name", recording.patient_name)
    if recording.patient_sex:
        el(person, "administrativeGenderCode", code=recording.patient_sex, codeSystem="2.16.840.1.113883.5.1")
    if recording.patient_birth_date:
        el(person, "birthTime", value=recording.patient_birth_date)
    series = el(el(root, "component"), "series")
    el(series, "code", code="RHYTHM", codeSystem="2.16.840.1.113883.5.4")
    author = el(el(series, "author"), "seriesAuthor")
    el(el(author, "manufacturedSeriesDevice"), "manufacturerModelName", recording.device or "Telemed")
    el(el(author, "manufacturerOrganization"), "name", "Telemed")
    sset = el(el(series, "component"), "sequenceSet")
    tseq = el(el(sset, "component"), "sequence")
    el(tseq, "code", code="TIME_ABSOLUTE", codeSystem="2.16.840.1.113883.5.4")
    tval = el(tseq, "value", xsi_type="GLIST_TS")
    el(tval, "head", value=start)
    el(tval, "increment", value=repr(1.0 / recording.sampling_rate), unit="s")
    for lead in recording.leads:
        seq = el(el(sset, "component"), "sequence")
        el(seq, "code", code=MDC_REFIDS.get(lead.name, lead.name), codeSystem=MDC_OID)
        val = el(seq, "value", xsi_type="SLIST_PQ")
        el(val, "origin", value=repr(lead.origin), unit=lead.unit)
        el(val, "scale", value=repr(lead.factor), unit=lead.unit)
        el(val, "digits", " ".join(str(int(v)) for v in lead.digital))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
