"""How a remote pathology case lives in FHIR R4, and back.

One case with id ``X`` is (all under the same id, since FHIR ids are per type):

- ``ServiceRequest/X``: the request (category: frozen section or routine, priority ``stat`` for a
  frozen section), the patient, the requesting doctor, the clinical history (``note``) and
  question (``reasonCode``), the specimen (``specimen``) and the slides (``supportingInfo`` →
  ``ImagingStudy``); ``performer`` is the pathology centre and, once assigned, the pathologist:
  that is what opens the patient's record to them (telemed.fhir.store.access). The surgeon's
  call-back number and the operating room of a frozen section are extensions.
- ``Specimen/X``: accession number, site/type, gross description (``note``).
- ``Task/X``: the workflow state (``businessStatus``), whose move it is (``owner``: the centre for
  the pool, the pathologist, then the requester), the deadline (``restriction.period.end``), the
  case's counters (pathologist, preliminary results, signed versions, escalation level) and on
  every version the transition that made it, so ``Task/X/_history`` is the timeline.
- ``DiagnosticReport/X``: the structured report (LOINC 11529-5 surgical pathology study): gross
  description, microscopic findings, diagnosis (also ``conclusion``), comments and an optional
  immunohistochemistry recommendation as section extensions, so the signature covers them all;
  signed through ``Provenance`` with its PDF as a ``DocumentReference`` (telemed.reports).
- ``Communication/X-prelim-N``: each preliminary result of a frozen section (priority ``stat``).
"""

from __future__ import annotations

from datetime import datetime

from telemed.pathology import workflow as wf

BASE = "https://telemed.example.cn/fhir"
KIND_SYSTEM = f"{BASE}/CodeSystem/pathology-request-kind"
STATE_SYSTEM = f"{BASE}/CodeSystem/pathology-case-state"
CASE_URL = f"{BASE}/StructureDefinition/pathology-case"
TRANSITION_URL = f"{BASE}/StructureDefinition/pathology-transition"
SECTION_URL = f"{BASE}/StructureDefinition/pathology-report-section"
CALLBACK_URL = f"{BASE}/StructureDefinition/surgeon-callback"
THEATRE_URL = f"{BASE}/StructureDefinition/operating-room"
CENTRE_URL = f"{BASE}/StructureDefinition/target-centre"
NUMBER_SYSTEM = f"{BASE}/sid/pathology-case-number"
ROLE_SYSTEM = f"{BASE}/CodeSystem/practitioner-role"
ORG_TYPE_SYSTEM = f"{BASE}/CodeSystem/organization-role"
PATHOLOGY_CENTRE = "pathology-centre"
PATHOLOGIST_ROLE = {"system": ROLE_SYSTEM, "code": "pathologist", "display": "Pathologist"}
LOINC = "http://loinc.org"
SURGICAL_PATHOLOGY = {"system": LOINC, "code": "11529-5", "display": "Surgical pathology study"}
PATHOLOGY_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "SP",
                      "display": "Surgical Pathology"}  # fmt: skip

KIND_NAMES = {wf.FROZEN: ("术中冰冻", "Frozen section"), wf.ROUTINE: ("常规病理会诊", "Routine")}

# Report sections in report order: (code, LOINC or None, zh title, en title).
SECTIONS = (
    ("gross", "22634-0", "大体描述", "Gross description"),
    ("microscopic", "22635-7", "镜下所见", "Microscopic findings"),
    ("diagnosis", "22637-3", "病理诊断", "Diagnosis"),
    ("ihc", None, "免疫组化建议", "Immunohistochemistry recommended"),
    ("comments", "22638-1", "备注", "Comments"),
)
SECTION_CODES = tuple(s[0] for s in SECTIONS)

TASK_STATUS = {
    wf.REQUESTED: "requested",
    wf.ASSIGNED: "accepted",
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


def _ext(url: str, **value) -> dict:
    return {"url": url, **value}


def ext_value(resource: dict, url: str):
    for e in resource.get("extension", []):
        if e.get("url") == url:
            return next((v for k, v in e.items() if k.startswith("value")), None)
    return None


def service_request(cid: str, *, kind: str, patient: str, requester: str, centre: str, number: str,
                    history: str, question: str, slides: list[str], callback: str | None, theatre: str | None,
                    now: datetime) -> dict:  # fmt: skip
    zh, en = KIND_NAMES[kind]
    sr: dict = {
        "resourceType": "ServiceRequest",
        "id": cid,
        "identifier": [{"system": NUMBER_SYSTEM, "value": number}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": KIND_SYSTEM, "code": kind, "display": en}], "text": zh}],
        "priority": "stat" if kind == wf.FROZEN else "routine",
        "code": {"coding": [SURGICAL_PATHOLOGY], "text": "远程病理会诊" if kind == wf.ROUTINE else "术中冰冻会诊"},
        "subject": ref("Patient", patient),
        "authoredOn": iso(now),
        "requester": ref("Practitioner", requester),
        "performer": [ref("Organization", centre)],
        "specimen": [ref("Specimen", cid)],
        "extension": [_ext(CENTRE_URL, valueReference=ref("Organization", centre))],
    }
    if history:
        sr["note"] = [{"text": history}]
    if question:
        sr["reasonCode"] = [{"text": question}]
    if slides:
        sr["supportingInfo"] = [ref("ImagingStudy", s) for s in slides]
    if callback:
        sr["extension"].append(_ext(CALLBACK_URL, valueString=callback))
    if theatre:
        sr["extension"].append(_ext(THEATRE_URL, valueString=theatre))
    return sr


def specimen(cid: str, *, patient: str, accession: str, site: str, gross: str, now: datetime) -> dict:
    out: dict = {
        "resourceType": "Specimen",
        "id": cid,
        "accessionIdentifier": {"value": accession},
        "status": "available",
        "subject": ref("Patient", patient),
        "request": [ref("ServiceRequest", cid)],
        "receivedTime": iso(now),
    }
    if site:
        out["type"] = {"text": site}
    if gross:
        out["note"] = [{"text": gross}]
    return out


def kind_of(resource: dict) -> str:
    for c in [*(resource.get("code") or {}).get("coding", []),
              *(cc for cat in resource.get("category", []) for cc in cat.get("coding", []))]:  # fmt: skip
        if c.get("system") == KIND_SYSTEM:
            return c["code"]
    return wf.ROUTINE


def case_of(task: dict) -> wf.Case:
    counters = {}
    for e in task.get("extension", []):
        if e.get("url") == CASE_URL:
            for p in e.get("extension", []):
                counters[p["url"]] = next((v for k, v in p.items() if k.startswith("value")), None)
    return wf.Case(
        id=task["id"],
        kind=kind_of(task),
        requester=ref_id(task.get("requester"), "Practitioner") or "",
        state=task["businessStatus"]["coding"][0]["code"],
        pathologist=counters.get("pathologist"),
        preliminary=int(counters.get("preliminary") or 0),
        versions=int(counters.get("versions") or 0),
        escalation=int(counters.get("escalation") or 0),
    )


def task(c: wf.Case, *, patient: str, centre: str, now: datetime, deadline: datetime, event: str | None,
         actor: str | None, reason: str | None, previous: dict | None) -> dict:  # fmt: skip
    out = dict(previous or {})
    out.pop("meta", None)
    if c.state in (wf.REQUESTED,):
        owner = ref("Organization", centre)
    elif c.state in (wf.ASSIGNED, wf.READING):
        owner = ref("Practitioner", c.pathologist)
    elif c.state == wf.REPORTED:
        owner = ref("Practitioner", c.requester)
    else:
        owner = None
    counters = [{"url": "pathologist", "valueString": c.pathologist}] if c.pathologist else []
    counters += [{"url": k, "valueInteger": v} for k, v in
                 (("preliminary", c.preliminary), ("versions", c.versions), ("escalation", c.escalation))]  # fmt: skip
    out.update({
        "resourceType": "Task",
        "id": c.id,
        "status": TASK_STATUS[c.state],
        "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": c.state}]},
        "intent": "order",
        "priority": "stat" if c.kind == wf.FROZEN else "routine",
        "code": {"coding": [{"system": KIND_SYSTEM, "code": c.kind, "display": KIND_NAMES[c.kind][1]}],
                 "text": KIND_NAMES[c.kind][0]},
        "focus": ref("ServiceRequest", c.id),
        "for": ref("Patient", patient),
        "requester": ref("Practitioner", c.requester),
        "lastModified": iso(now),
        "restriction": {"period": {"end": iso(deadline)}},
        "extension": [{"url": CASE_URL, "extension": counters}],
    })  # fmt: skip
    out.setdefault("authoredOn", iso(now))
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


def service_request_for(sr: dict, c: wf.Case, centre: str) -> dict:
    out = dict(sr)
    out.pop("meta", None)
    out["status"] = REQUEST_STATUS.get(c.state, "active")
    performers = [ref("Organization", centre)]
    if c.pathologist and c.state != wf.CANCELLED:
        performers.append(ref("Practitioner", c.pathologist))
    out["performer"] = performers
    return out


def diagnostic_report(cid: str, *, patient: str, pathologist: str, sections: dict[str, str], status: str,
                      slides: list[str], now: datetime) -> dict:  # fmt: skip
    exts = []
    for code, loinc, zh, _en in SECTIONS:
        text = (sections.get(code) or "").strip()
        if text:
            coding = {"system": LOINC, "code": loinc} if loinc else {"system": f"{BASE}/CodeSystem/pathology-section",
                                                                       "code": code}  # fmt: skip
            exts.append({"url": SECTION_URL, "extension": [
                {"url": "code", "valueCode": code}, {"url": "title", "valueString": zh},
                {"url": "loinc", "valueCoding": coding}, {"url": "text", "valueString": text}]})  # fmt: skip
    out: dict = {
        "resourceType": "DiagnosticReport",
        "id": cid,
        "status": status,
        "category": [{"coding": [PATHOLOGY_CATEGORY]}],
        "code": {"coding": [SURGICAL_PATHOLOGY], "text": "病理诊断报告"},
        "subject": ref("Patient", patient),
        "basedOn": [ref("ServiceRequest", cid)],
        "specimen": [ref("Specimen", cid)],
        "issued": iso(now),
        "resultsInterpreter": [ref("Practitioner", pathologist)],
        "extension": exts,
    }
    if slides:
        out["imagingStudy"] = [ref("ImagingStudy", s) for s in slides]
    if (sections.get("diagnosis") or "").strip():
        out["conclusion"] = sections["diagnosis"].strip()
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


def preliminary(cid: str, n: int, *, patient: str, pathologist: str, requester: str, text: str,
                now: datetime) -> dict:  # fmt: skip
    return {
        "resourceType": "Communication",
        "id": f"{cid}-prelim-{n}"[:64],
        "status": "completed",
        "category": [{"coding": [{"system": f"{BASE}/CodeSystem/communication-category",
                                  "code": "preliminary-result"}], "text": "冰冻初步结果"}],  # fmt: skip
        "priority": "stat",
        "basedOn": [ref("ServiceRequest", cid)],
        "partOf": [ref("Task", cid)],
        "subject": ref("Patient", patient),
        "sender": ref("Practitioner", pathologist),
        "recipient": [ref("Practitioner", requester)],
        "sent": iso(now),
        "payload": [{"contentString": text}],
    }
