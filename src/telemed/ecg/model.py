"""How a remote ECG lives in FHIR R4. One ECG with id ``X`` is:

- ``DocumentReference/X``: the file(s) as the device sent them, unchanged in the blob store
  (``content.attachment.url`` = ``urn:telemed:blob:<sha256>``, with size and SHA-1 hash).
- ``Observation/X-<lead>``: one per lead, ``valueSampledData`` with the device's integers, its
  sampling period, gain (``factor``) and zero (``origin``, with the unit), coded with the
  ISO/IEEE 11073-10102 lead code (MDC_ECG_LEAD_*); ``Observation/X`` (LOINC 11524-6 EKG study)
  groups them (``hasMember``) with the device and the sender (``performer``).
- ``Observation/X-m-<key>``: the automatic measurements (LOINC where one exists), tagged
  machine-generated and ``preliminary`` until a reader confirms or corrects them.
- ``ServiceRequest/X``: the request for a reading, ``performer`` the reading centre (that opens
  the patient's ECG to its readers), ``priority`` routine/urgent.
- ``Task/X``: the reading (``businessStatus`` = workflow state, ``owner`` the pool ``Group`` or the
  reader who claimed it); claims update it with If-Match so that one reader wins.
- ``DiagnosticReport/X``: the interpretation, preliminary until signed (telemed.reports).

A pool is a ``Group`` (practitioners) managed by the reading centre, listing the institutions it
serves as ``characteristic`` ``serves``; readers are on duty by ``PractitionerRole.availableTime``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from telemed.ecg import workflow as wf
from telemed.ecg.analysis import Analysis
from telemed.ecg.recording import MDC_LEAD_CODES, MDC_REFIDS, UNIT_MV, Recording

BASE = "https://telemed.example.cn/fhir"
CHINA = ZoneInfo("Asia/Shanghai")
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
MDC = "urn:oid:2.16.840.1.113883.6.24"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
STATE_SYSTEM = f"{BASE}/CodeSystem/ecg-reading-state"
MEASURE_SYSTEM = f"{BASE}/CodeSystem/ecg-measurement"
FLAG_SYSTEM = f"{BASE}/CodeSystem/ecg-rhythm-flag"
ORIGIN_TAG = {"system": f"{BASE}/CodeSystem/result-origin", "code": "machine-generated",
              "display": "Machine-generated, to be confirmed by a reader"}  # fmt: skip
POOL_CODE = {"system": f"{BASE}/CodeSystem/group-kind", "code": "ecg-reading-pool", "display": "ECG reading pool"}
READER_ROLE = {"system": f"{BASE}/CodeSystem/practitioner-role", "code": "ecg-reader", "display": "ECG reader"}
SERVES = {"coding": [{"system": f"{BASE}/CodeSystem/group-characteristic", "code": "serves"}]}
ESCALATION_URL = f"{BASE}/StructureDefinition/ecg-escalation"
BEATS_URL = f"{BASE}/StructureDefinition/ecg-beats"
ECG_STUDY = {"system": LOINC, "code": "11524-6", "display": "EKG study"}
ECG_PROCEDURE = {"system": SNOMED, "code": "29303009", "display": "Electrocardiographic procedure"}
BLOB_URL = "urn:telemed:blob:"

TASK_STATUS = {wf.WAITING: "requested", wf.CLAIMED: "accepted", wf.REPORTED: "completed",
               wf.ACKNOWLEDGED: "completed", wf.CANCELLED: "cancelled"}  # fmt: skip

# key -> (codings, display, UCUM unit). LOINC where a code exists, the MDC code for the QTc formulas.
MEASUREMENTS = {
    "heart_rate": ([{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "Heart rate", "/min"),
    "rr_mean": ([{"system": MEASURE_SYSTEM, "code": "rr-mean"}], "Mean RR interval", "ms"),
    "sdnn": ([{"system": LOINC, "code": "80404-7", "display": "R-R interval.standard deviation"}], "SDNN", "ms"),
    "rmssd": ([{"system": MEASURE_SYSTEM, "code": "rmssd"}], "RMSSD", "ms"),
    "pr": ([{"system": LOINC, "code": "8625-6", "display": "P-R Interval"}], "PR interval", "ms"),
    "qrs": ([{"system": LOINC, "code": "8633-0", "display": "QRS duration"}], "QRS duration", "ms"),
    "qt": ([{"system": LOINC, "code": "8634-8", "display": "Q-T interval"}], "QT interval", "ms"),
    "qtc_bazett": ([{"system": LOINC, "code": "8636-3", "display": "Q-T interval corrected"},
                    {"system": MDC, "code": str((2 << 16) + 15880), "display": "QTc global using Bazett formula"}],
                   "QTc (Bazett)", "ms"),
    "qtc_fridericia": ([{"system": LOINC, "code": "8636-3", "display": "Q-T interval corrected"},
                        {"system": MDC, "code": str((2 << 16) + 15892),
                         "display": "QTc global using Fridericia formula"}], "QTc (Fridericia)", "ms"),
    "axis": ([{"system": LOINC, "code": "8632-2", "display": "QRS axis"}], "QRS axis", "deg"),
}  # fmt: skip
QTC_METHOD = {"qtc_bazett": {"system": DCM, "code": "122730", "display": "Bazett QTc Algorithm"},
              "qtc_fridericia": {"system": DCM, "code": "122732", "display": "Fridericia QTc Algorithm"}}  # fmt: skip
FLAGS = {"bradycardia": "Bradycardia", "tachycardia": "Tachycardia",
         "irregular": "Irregular rhythm (suggests atrial fibrillation)", "pause": "Pause",
         "long-qtc": "Long QTc", "no-rhythm-detected": "No rhythm detected"}  # fmt: skip
RHYTHM = {"system": LOINC, "code": "8884-9", "display": "Heart rate rhythm"}


def ref(rt: str, id_: str | None, display: str | None = None) -> dict | None:
    if not id_:
        return None
    out = {"reference": f"{rt}/{id_}"}
    if display:
        out["display"] = display
    return out


def ref_id(reference: dict | None, rt: str) -> str | None:
    value = (reference or {}).get("reference", "")
    return value[len(rt) + 1 :] if value.startswith(f"{rt}/") else None


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def lead_id(ecg: str, lead: str) -> str:
    return f"{ecg}-{lead}"[:64]


def measurement_id(ecg: str, key: str) -> str:
    return f"{ecg}-m-{key.replace('_', '-')}"[:64]


def original_document(ecg: str, patient: str, sender: str, files: list[tuple[str, bytes, str, str]],
                      recording: Recording, now: datetime) -> dict:  # fmt: skip
    """``files``: (name, bytes, content type, blob key) as received."""
    return {
        "resourceType": "DocumentReference", "id": ecg, "status": "current",
        "type": {"coding": [ECG_STUDY], "text": "ECG recording"},
        "subject": ref("Patient", patient), "date": iso(now), "custodian": ref("Organization", sender),
        "description": f"{recording.format} {len(recording.leads)} leads {recording.sampling_rate:g} Hz",
        "content": [
            {"attachment": {"contentType": ctype, "url": BLOB_URL + key, "size": len(data), "title": name,
                            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(), "creation": iso(now)},
             "format": {"system": f"{BASE}/CodeSystem/ecg-format", "code": recording.format}}
            for name, data, ctype, key in files
        ],
    }  # fmt: skip


def effective(recording: Recording, now: datetime) -> str:
    """When the ECG was recorded; a device clock without a zone is China Standard Time (the devices
    of this network are set to local time)."""
    if recording.start is None:
        return iso(now)
    start = recording.start
    return iso(start if start.tzinfo else start.replace(tzinfo=CHINA))


def lead_observation(ecg: str, patient: str, sender: str, recording: Recording, index: int, now: datetime) -> dict:
    lead = recording.leads[index]
    coding = [{"system": MDC, "code": MDC_LEAD_CODES[lead.name], "display": MDC_REFIDS[lead.name]}] \
        if lead.name in MDC_LEAD_CODES else []  # fmt: skip
    return {
        "resourceType": "Observation", "id": lead_id(ecg, lead.name), "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "procedure"}]}],
        "code": {"coding": coding, "text": f"Lead {lead.name}"},
        "subject": ref("Patient", patient), "performer": [ref("Organization", sender)],
        "effectiveDateTime": effective(recording, now),
        "derivedFrom": [ref("DocumentReference", ecg)],
        "valueSampledData": {
            "origin": {"value": lead.origin, "unit": lead.unit, "system": UCUM, "code": lead.unit},
            "period": 1000.0 / recording.sampling_rate, "factor": lead.factor, "dimensions": 1,
            "data": " ".join(map(str, lead.digital.tolist())),
        },
    }  # fmt: skip


def lead_millivolts(obs: dict) -> tuple[str, float, np.ndarray]:
    """(lead name, sampling rate in Hz, samples in mV) of a lead Observation written by :func:`lead_observation`."""
    sd = obs["valueSampledData"]
    scale = UNIT_MV.get(sd["origin"].get("code", "uV"), 0.001)
    digital = np.array(sd["data"].split(), dtype=np.float64)
    mv = (float(sd["origin"]["value"]) + float(sd.get("factor", 1)) * digital) * scale
    return obs["code"].get("text", "").removeprefix("Lead "), 1000.0 / float(sd["period"]), mv


def ecg_observation(ecg: str, patient: str, sender: str, recording: Recording, now: datetime) -> dict:
    obs = {
        "resourceType": "Observation", "id": ecg, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "procedure"}]}],
        "code": {"coding": [ECG_STUDY], "text": "ECG"},
        "subject": ref("Patient", patient), "performer": [ref("Organization", sender)],
        "effectiveDateTime": effective(recording, now),
        "hasMember": [ref("Observation", lead_id(ecg, n)) for n in recording.lead_names],
        "derivedFrom": [ref("DocumentReference", ecg)],
        "component": [
            {"code": {"text": "sampling-rate"}, "valueQuantity": {"value": recording.sampling_rate, "unit": "Hz",
                                                                  "system": UCUM, "code": "Hz"}},
            {"code": {"text": "duration"}, "valueQuantity": {"value": round(recording.duration, 3), "unit": "s",
                                                             "system": UCUM, "code": "s"}},
        ],
    }  # fmt: skip
    if recording.device:
        obs["device"] = {"display": recording.device}
    if recording.source_uid:
        obs["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{recording.source_uid}"}] \
            if recording.format == "dicom" else [{"value": recording.source_uid}]  # fmt: skip
    return obs


def measurement_observations(ecg: str, patient: str, sender: str, analysis: Analysis, effective: str) -> list[dict]:
    out = []
    common = {"resourceType": "Observation", "status": "preliminary", "meta": {"tag": [ORIGIN_TAG]},
              "subject": ref("Patient", patient), "performer": [ref("Organization", sender)],
              "effectiveDateTime": effective, "derivedFrom": [ref("Observation", ecg)],
              "device": {"display": analysis.software}}  # fmt: skip
    for key, value in analysis.measurements().items():
        codings, display, unit = MEASUREMENTS[key]
        obs = {**common, "id": measurement_id(ecg, key), "code": {"coding": codings, "text": display}}
        if value is None:
            obs["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                   "code": "error", "display": "Not measurable"}]}  # fmt: skip
        else:
            obs["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
        if key in QTC_METHOD:
            obs["method"] = {"coding": [QTC_METHOD[key]]}
        out.append(obs)
    rhythm = {**common, "id": measurement_id(ecg, "rhythm"), "code": {"coding": [RHYTHM], "text": "Rhythm flags"},
              "component": [{"code": {"coding": [{"system": FLAG_SYSTEM, "code": f, "display": FLAGS.get(f, f)}]},
                             "valueBoolean": True} for f in analysis.flags],
              "note": [{"text": f"lead {analysis.lead}; beats {len(analysis.beats)}"}],
              "extension": [{"url": BEATS_URL, "valueString": json.dumps(analysis.beats)}]}  # fmt: skip
    if not analysis.flags:
        del rhythm["component"]
        rhythm["valueString"] = "no flag"
    out.append(rhythm)
    return out


def service_request(ecg: str, patient: str, sender: str, requester: str | None, centre: str, priority: str,
                    now: datetime, note: str | None, readers: list[str] = ()) -> dict:  # fmt: skip
    """``performer``: the reading centre and every reader of the pool (a regional pool's readers may
    work at several institutions; each is granted the patient's ECG while the request is open)."""
    sr = {
        "resourceType": "ServiceRequest", "id": ecg, "status": "active", "intent": "order",
        "priority": "urgent" if priority == wf.URGENT else "routine",
        "code": {"coding": [ECG_PROCEDURE], "text": "ECG reading"},
        "subject": ref("Patient", patient), "authoredOn": iso(now),
        "requester": ref("Practitioner", requester) or ref("Organization", sender),
        "performer": [ref("Organization", centre), *(ref("Practitioner", r) for r in readers)],
        "supportingInfo": [ref("Observation", ecg), ref("DocumentReference", ecg)],
    }  # fmt: skip
    if note:
        sr["note"] = [{"text": note}]
    return sr


def diagnostic_report(ecg: str, patient: str, sender: str, measurement_ids: list[str], effective: str,
                      now: datetime) -> dict:  # fmt: skip
    """``measurement_ids`` empty: the report before the automatic measurements are added."""
    report = {
        "resourceType": "DiagnosticReport", "id": ecg, "status": "preliminary",
        "basedOn": [ref("ServiceRequest", ecg)],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "EC",
                                  "display": "Electrocardiac (e.g., EKG, EEC, Holter)"}]}],
        "code": {"coding": [ECG_STUDY], "text": "ECG report"},
        "subject": ref("Patient", patient), "effectiveDateTime": effective, "issued": iso(now),
        "performer": [ref("Organization", sender)],
        "result": [ref("Observation", m) for m in measurement_ids],
    }  # fmt: skip
    if not measurement_ids:
        del report["result"]
    return report


def task(ecg: str, patient: str, sender: str, pool: str | None, reading: wf.Reading, now: datetime,
         previous: dict | None = None) -> dict:  # fmt: skip
    t = dict(previous) if previous else {
        "resourceType": "Task", "id": ecg, "intent": "order", "authoredOn": iso(now),
        "code": {"coding": [ECG_PROCEDURE], "text": "ECG reading"},
        "basedOn": [ref("ServiceRequest", ecg)], "focus": ref("DiagnosticReport", ecg),
        "for": ref("Patient", patient), "requester": ref("Organization", sender),
        "input": [{"type": {"text": "ecg"}, "valueReference": ref("Observation", ecg)}],
    }  # fmt: skip
    t.pop("meta", None)
    t["status"] = TASK_STATUS[reading.state]
    t["businessStatus"] = {"coding": [{"system": STATE_SYSTEM, "code": reading.state}]}
    t["priority"] = "urgent" if reading.priority == wf.URGENT else "routine"
    t["lastModified"] = iso(now)
    # executionPeriod: the first claim and the report (the statistics' turnaround times).
    period = dict(t.get("executionPeriod") or {})
    if reading.state in (wf.CLAIMED, wf.REPORTED, wf.ACKNOWLEDGED) and "start" not in period:
        period["start"] = iso(now)
    if reading.state == wf.REPORTED and "end" not in period:
        period["end"] = iso(now)
    if period:
        t["executionPeriod"] = period
    if reading.reader:
        t["owner"] = ref("Practitioner", reading.reader)
    elif pool:
        t["owner"] = ref("Group", pool)
    else:
        t.pop("owner", None)
    ext = [e for e in t.get("extension", []) if e.get("url") != ESCALATION_URL]
    if reading.escalation:
        ext.append({"url": ESCALATION_URL, "valueInteger": reading.escalation})
    if ext:
        t["extension"] = ext
    else:
        t.pop("extension", None)
    return t


def reading_of(task_resource: dict) -> wf.Reading:
    state = next((c["code"] for c in (task_resource.get("businessStatus") or {}).get("coding", [])
                  if c.get("system") == STATE_SYSTEM), wf.WAITING)  # fmt: skip
    escalation = next((e.get("valueInteger", 0) for e in task_resource.get("extension", [])
                       if e.get("url") == ESCALATION_URL), 0)  # fmt: skip
    return wf.Reading(
        state=state, reader=ref_id(task_resource.get("owner"), "Practitioner"),
        priority=wf.URGENT if task_resource.get("priority") in ("urgent", "asap", "stat") else wf.ROUTINE,
        escalation=escalation,
    )  # fmt: skip


def pool_group(pool_id: str, name: str, centre: str, members: list[str], serves: list[str]) -> dict:
    return {
        "resourceType": "Group", "id": pool_id, "type": "practitioner", "actual": True, "active": True,
        "code": {"coding": [POOL_CODE]}, "name": name, "managingEntity": ref("Organization", centre),
        "member": [{"entity": ref("Practitioner", p)} for p in members],
        "characteristic": [{"code": SERVES, "valueReference": ref("Organization", o), "exclude": False}
                           for o in serves],
    }  # fmt: skip


def reader_role(role_id: str, practitioner: str, centre: str, duty: list[dict] | None = None) -> dict:
    """``duty``: FHIR availableTime entries (daysOfWeek, availableStartTime/EndTime, allDay) in China time."""
    role = {"resourceType": "PractitionerRole", "id": role_id, "active": True,
            "practitioner": ref("Practitioner", practitioner), "organization": ref("Organization", centre),
            "code": [{"coding": [READER_ROLE]}]}  # fmt: skip
    if duty:
        role["availableTime"] = duty
    return role
