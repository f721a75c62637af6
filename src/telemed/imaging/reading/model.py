"""How a remote imaging reading lives in FHIR R4, and back.

One reading with id ``X`` is (all under the same id, since FHIR ids are per type):

- ``ServiceRequest/X``: the request (LOINC 18748-4 diagnostic imaging study), priority routine /
  urgent / stat, the patient, the requesting doctor, the clinical question (``reasonCode``) and
  history (``note``), the study (``supportingInfo`` → ``ImagingStudy`` once it is here, and always
  the Study Instance UID as an extension, so a request can come before its images), modality and
  body part (``orderDetail``, ``bodySite``); ``performer`` is the reading centre and, once claimed,
  the radiologist: that is what opens the patient's record to them (telemed.fhir.store.access).
- ``Task/X``: the workflow state (``businessStatus``), whose move it is (``owner``: the centre's
  worklist, the radiologist, then the requester), the deadline (``restriction.period.end``, set
  when the reading reaches the worklist), modality and body part as ``input`` (the worklist
  filters), and on every version the transition that made it, so ``Task/X/_history`` is the
  timeline.
- ``DiagnosticReport/X``: the structured report (technique, findings, impression,
  recommendation as section extensions, so the signature covers them all; ``conclusion`` is the
  impression), ``imagingStudy`` the study; signed through ``Provenance`` with its PDF as a
  ``DocumentReference`` (telemed.reports).
- ``Communication/X-critical-N``: each critical finding (危急值), priority ``stat``, ``status``
  in-progress until the requester acknowledges it (then completed, with who and when).
"""

from __future__ import annotations

from datetime import datetime

from telemed.imaging.reading import templates
from telemed.imaging.reading import workflow as wf

BASE = "https://telemed.example.cn/fhir"
READING_SYSTEM = f"{BASE}/CodeSystem/imaging-reading"
STATE_SYSTEM = f"{BASE}/CodeSystem/imaging-reading-state"
READING_URL = f"{BASE}/StructureDefinition/imaging-reading"
TRANSITION_URL = f"{BASE}/StructureDefinition/imaging-reading-transition"
SECTION_URL = f"{BASE}/StructureDefinition/imaging-report-section"
CENTRE_URL = f"{BASE}/StructureDefinition/target-centre"
STUDY_UID_URL = f"{BASE}/StructureDefinition/study-instance-uid"
CRITICAL_URL = f"{BASE}/StructureDefinition/critical-finding"
NUMBER_SYSTEM = f"{BASE}/sid/imaging-reading-number"
ROLE_SYSTEM = f"{BASE}/CodeSystem/practitioner-role"
ORG_TYPE_SYSTEM = f"{BASE}/CodeSystem/organization-role"
COMM_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/communication-category"
READING_CENTRE = "imaging-centre"
RADIOLOGIST_ROLE = {"system": ROLE_SYSTEM, "code": "radiologist", "display": "Radiologist"}
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
IMAGING_STUDY_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
RAD_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
TASK_CODE = {"system": READING_SYSTEM, "code": "imaging-reading", "display": "Remote imaging reading"}

PRIORITY_NAMES = {wf.STAT: ("急诊（STAT）", "Stat"), wf.URGENT: ("加急", "Urgent"), wf.ROUTINE: ("常规", "Routine")}
TASK_STATUS = {
    wf.AWAITING: "on-hold",
    wf.REQUESTED: "requested",
    wf.CLAIMED: "accepted",
    wf.READING: "in-progress",
    wf.REPORTED: "completed",
    wf.ACKNOWLEDGED: "completed",
    wf.CANCELLED: "cancelled",
}
REQUEST_STATUS = {wf.REPORTED: "completed", wf.ACKNOWLEDGED: "completed", wf.CANCELLED: "revoked"}


def ref(rt: str, id_: str | None) -> dict | None:
    return {"reference": f"{rt}/{id_}"} if id_ else None


def ref_id(reference: dict | None, rt: str) -> str | None:
    value = (reference or {}).get("reference", "")
    return value[len(rt) + 1 :].split("/_history", 1)[0] if value.startswith(f"{rt}/") else None


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def parse_dt(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def ext_value(resource: dict, url: str):
    for e in resource.get("extension", []):
        if e.get("url") == url:
            return next((v for k, v in e.items() if k.startswith("value")), None)
    return None


def study_uid(study: dict) -> str | None:
    for i in study.get("identifier", []):
        if i.get("system") == "urn:dicom:uid":
            return i.get("value", "").removeprefix("urn:oid:")
    return None


def study_modality(study: dict) -> str:
    codes = [c.get("code") for c in study.get("modality", []) if c.get("code")]
    codes += [(s.get("modality") or {}).get("code") for s in study.get("series", [])]
    preferred = [c for c in codes if c and c not in ("SR", "PR", "KO", "SEG")]
    return (preferred or codes or ["OT"])[0]


def study_body_part(study: dict) -> str:
    for s in study.get("series", []):
        code = (s.get("bodySite") or {}).get("code")
        if code:
            return code
    return ""


def service_request(rid: str, *, priority: str, patient: str, requester: str, centre: str, number: str,
                    uid: str, study: str | None, modality: str, body_part: str, question: str, history: str,
                    now: datetime) -> dict:  # fmt: skip
    sr: dict = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "identifier": [{"system": NUMBER_SYSTEM, "value": number}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}],
                      "text": "远程影像诊断"}],  # fmt: skip
        "priority": priority,
        "code": {"coding": [IMAGING_STUDY_CODE], "text": "远程影像阅片"},
        "orderDetail": [{"coding": [{"system": DCM, "code": modality}], "text": modality}],
        "subject": ref("Patient", patient),
        "authoredOn": iso(now),
        "requester": ref("Practitioner", requester),
        "performer": [ref("Organization", centre)],
        "extension": [{"url": CENTRE_URL, "valueReference": ref("Organization", centre)},
                      {"url": STUDY_UID_URL, "valueOid": f"urn:oid:{uid}"}],
    }  # fmt: skip
    if body_part:
        sr["bodySite"] = [{"coding": [{"system": DCM, "code": body_part}], "text": body_part}]
    if study:
        sr["supportingInfo"] = [ref("ImagingStudy", study)]
    if question:
        sr["reasonCode"] = [{"text": question}]
    if history:
        sr["note"] = [{"text": history}]
    return sr


def reading_of(task: dict) -> wf.Reading:
    counters = {}
    for e in task.get("extension", []):
        if e.get("url") == READING_URL:
            for p in e.get("extension", []):
                counters[p["url"]] = next((v for k, v in p.items() if k.startswith("value")), None)
    return wf.Reading(
        id=task["id"],
        priority=task.get("priority", wf.ROUTINE),
        requester=ref_id(task.get("requester"), "Practitioner") or "",
        state=task["businessStatus"]["coding"][0]["code"],
        radiologist=counters.get("radiologist"),
        versions=int(counters.get("versions") or 0),
    )


def task_inputs(task: dict) -> dict[str, str]:
    return {(i.get("type") or {}).get("text", ""): i.get("valueString", "") for i in task.get("input", [])}


def task(r: wf.Reading, *, patient: str, centre: str, now: datetime, deadline: datetime | None, modality: str,
         body_part: str, event: str | None, actor: str | None, reason: str | None,
         previous: dict | None) -> dict:  # fmt: skip
    out = dict(previous or {})
    out.pop("meta", None)
    if r.state in (wf.AWAITING, wf.REQUESTED):
        owner = ref("Organization", centre)
    elif r.state in (wf.CLAIMED, wf.READING):
        owner = ref("Practitioner", r.radiologist)
    elif r.state == wf.REPORTED:
        owner = ref("Practitioner", r.requester)
    else:
        owner = None
    counters = [{"url": "radiologist", "valueString": r.radiologist}] if r.radiologist else []
    counters.append({"url": "versions", "valueInteger": r.versions})
    out.update({
        "resourceType": "Task",
        "id": r.id,
        "status": TASK_STATUS[r.state],
        "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": r.state}]},
        "intent": "order",
        "priority": r.priority,
        "code": {"coding": [TASK_CODE], "text": "远程影像阅片"},
        "focus": ref("ServiceRequest", r.id),
        "for": ref("Patient", patient),
        "requester": ref("Practitioner", r.requester),
        "lastModified": iso(now),
        "input": [{"type": {"text": "modality"}, "valueString": modality},
                  {"type": {"text": "body-part"}, "valueString": body_part or "-"}],
        "extension": [{"url": READING_URL, "extension": counters}],
    })  # fmt: skip
    out.setdefault("authoredOn", iso(now))
    if deadline:
        period = {"start": (out.get("restriction") or {}).get("period", {}).get("start") or iso(now),
                  "end": iso(deadline)}  # fmt: skip
        out["restriction"] = {"period": period}
    if owner:
        out["owner"] = owner
    else:
        out.pop("owner", None)
    out.pop("statusReason", None)
    if event:
        parts = [{"url": "event", "valueCode": event}, {"url": "actor", "valueString": actor or ""}]
        if reason:
            parts.append({"url": "reason", "valueString": reason})
            out["statusReason"] = {"text": reason}
        out["extension"].append({"url": TRANSITION_URL, "extension": parts})
    return out


def service_request_for(sr: dict, r: wf.Reading, centre: str, study: str | None) -> dict:
    out = dict(sr)
    out.pop("meta", None)
    out["status"] = REQUEST_STATUS.get(r.state, "active")
    performers = [ref("Organization", centre)]
    if r.radiologist and r.state != wf.CANCELLED:
        performers.append(ref("Practitioner", r.radiologist))
    out["performer"] = performers
    if study:
        out["supportingInfo"] = [ref("ImagingStudy", study)]
    return out


def diagnostic_report(rid: str, *, patient: str, radiologist: str, sections: dict[str, str], status: str,
                      study: str | None, template: str, now: datetime) -> dict:  # fmt: skip
    exts = [{"url": SECTION_URL, "extension": [{"url": "code", "valueCode": "template"},
                                               {"url": "text", "valueString": template}]}]  # fmt: skip
    for code, loinc, zh, _en in templates.SECTION_INFO:
        text = (sections.get(code) or "").strip()
        if text:
            exts.append({"url": SECTION_URL, "extension": [
                {"url": "code", "valueCode": code}, {"url": "title", "valueString": zh},
                {"url": "loinc", "valueCoding": {"system": LOINC, "code": loinc}},
                {"url": "text", "valueString": text}]})  # fmt: skip
    out: dict = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": status,
        "category": [{"coding": [RAD_CATEGORY]}],
        "code": {"coding": [IMAGING_STUDY_CODE], "text": "影像诊断报告"},
        "subject": ref("Patient", patient),
        "basedOn": [ref("ServiceRequest", rid)],
        "issued": iso(now),
        "resultsInterpreter": [ref("Practitioner", radiologist)],
        "extension": exts,
    }
    if study:
        out["imagingStudy"] = [ref("ImagingStudy", study)]
    if (sections.get("impression") or "").strip():
        out["conclusion"] = sections["impression"].strip()
    return out


def sections_of(report: dict | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in (report or {}).get("extension", []):
        if e.get("url") == SECTION_URL:
            parts = {p["url"]: next((v for k, v in p.items() if k.startswith("value")), None)
                     for p in e.get("extension", [])}  # fmt: skip
            if parts.get("code"):
                out[parts["code"]] = parts.get("text") or ""
    return out


def critical_finding(rid: str, n: int, *, patient: str, radiologist: str, requester: str, text: str,
                     now: datetime) -> dict:  # fmt: skip
    return {
        "resourceType": "Communication",
        "id": f"{rid}-critical-{n}"[:64],
        "status": "in-progress",
        "category": [{"coding": [{"system": COMM_CATEGORY_SYSTEM, "code": "critical-finding"}], "text": "危急值"}],
        "priority": "stat",
        "basedOn": [ref("ServiceRequest", rid)],
        "partOf": [ref("Task", rid)],
        "subject": ref("Patient", patient),
        "sender": ref("Practitioner", radiologist),
        "recipient": [ref("Practitioner", requester)],
        "sent": iso(now),
        "payload": [{"contentString": text}],
        "extension": [{"url": CRITICAL_URL, "extension": [{"url": "level", "valueInteger": 0}]}],
    }


def critical_parts(comm: dict) -> dict:
    for e in comm.get("extension", []):
        if e.get("url") == CRITICAL_URL:
            return {p["url"]: next((v for k, v in p.items() if k.startswith("value")), None)
                    for p in e.get("extension", [])}  # fmt: skip
    return {}


def with_critical_parts(comm: dict, **parts) -> dict:
    out = {k: v for k, v in comm.items() if k != "meta"}
    merged = {**critical_parts(comm), **parts}
    values = []
    for k, v in merged.items():
        if v is None:
            continue
        values.append({"url": k, "valueInteger": v} if isinstance(v, int) else {"url": k, "valueString": str(v)})
    out["extension"] = [e for e in out.get("extension", []) if e.get("url") != CRITICAL_URL]
    out["extension"].append({"url": CRITICAL_URL, "extension": values})
    return out
