"""How a teleconsultation lives in FHIR R4: what the workflow state is made of, and back.

One consultation with id ``X`` is (all under the same id, since FHIR ids are per type):

- ``ServiceRequest/X``: the invitation (R4 §12.11 Request pattern): patient, purpose
  (``reasonCode``), clinical summary (``note``), requested time (``occurrenceDateTime``),
  priority, kind (``category``), wanted specialty (``performerType``), attachments and consent
  (``supportingInfo``). ``performer`` lists the telemedicine centre that handles it and the
  assigned experts: that is what opens the patient's record to them (telemed.fhir.store.access).
- ``Task/X``: the workflow state (R4 §12.1 Task: ``status`` + ``businessStatus``), its current
  owner, its deadline (``restriction.period.end``), and on every version the transition that made
  it (extension ``transition``: event, actor, reason), so ``Task/X/_history`` is the timeline.
- ``Task/X-<practitioner>``: one sub-task per expert (``partOf`` Task/X, ``owner`` the expert):
  ready (assigned), rejected (declined), in-progress (writing), completed (signed). An expert's
  worklist is a search on ``owner``.
- ``Appointment/X`` and ``Encounter/X`` (class VR, virtual): the scheduled session and its room.
- ``Composition/X-<practitioner>``: each expert's opinion (LOINC 11488-4 consult note), signed
  through ``Provenance``; the report PDF is a ``DocumentReference`` (telemed.reports).
- ``Consent/X``: the patient's informed consent, ``Communication``: messages in the case.

Another FHIR client can follow a consultation through these resources alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape, unescape

from telemed.consultation import workflow as wf

BASE = "https://telemed.example.cn/fhir"
STATE_SYSTEM = f"{BASE}/CodeSystem/consultation-state"
KIND_SYSTEM = f"{BASE}/CodeSystem/consultation-kind"
SECTION_SYSTEM = f"{BASE}/CodeSystem/consultation-opinion-section"
EVENT_SYSTEM = f"{BASE}/CodeSystem/consultation-event"
TRANSITION_URL = f"{BASE}/StructureDefinition/consultation-transition"
SLA_URL = f"{BASE}/StructureDefinition/consultation-overdue"
RATING_URL = f"{BASE}/StructureDefinition/consultation-satisfaction"
ROOM_SYSTEM = f"{BASE}/sid/virtual-room"
REQUEST_NUMBER_SYSTEM = f"{BASE}/sid/consultation-number"
IDEMPOTENCY_SYSTEM = f"{BASE}/sid/idempotency-key"
ORG_TYPE_SYSTEM = f"{BASE}/CodeSystem/organization-role"
CENTRE_TYPE = "telemedicine-centre"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CONSULTATION_CODE = {"system": SNOMED, "code": "11429006", "display": "Consultation"}
CONSULT_NOTE = {"system": LOINC, "code": "11488-4", "display": "Consult note"}

KIND_NAMES = {wf.ROUTINE: ("普通会诊", "Routine"), wf.URGENT: ("急会诊", "Urgent"), wf.MDT: ("多学科会诊", "MDT")}

# Task.status for each workflow state (R4 task-status); businessStatus carries the exact state.
TASK_STATUS = {
    wf.DRAFT: "draft",
    wf.SUBMITTED: "requested",
    wf.RETURNED: "on-hold",
    wf.ACCEPTED: "accepted",
    wf.ASSIGNED: "ready",
    wf.SCHEDULED: "ready",
    wf.IN_SESSION: "in-progress",
    wf.OPINION_DRAFTED: "in-progress",
    wf.CONCLUDED: "completed",
    wf.ACKNOWLEDGED: "completed",
    wf.ARCHIVED: "completed",
    wf.CANCELLED: "cancelled",
}
# ServiceRequest.status (R4 request-status) for each workflow state.
REQUEST_STATUS = {
    wf.DRAFT: "draft",
    wf.RETURNED: "on-hold",
    wf.CONCLUDED: "completed",
    wf.ACKNOWLEDGED: "completed",
    wf.ARCHIVED: "completed",
    wf.CANCELLED: "revoked",
}
EXPERT_TASK_STATUS = {
    wf.EXPERT_ASSIGNED: "ready",
    wf.EXPERT_DECLINED: "rejected",
    wf.EXPERT_DRAFTING: "in-progress",
    wf.EXPERT_SIGNED: "completed",
}
EXPERT_STATE = {v: k for k, v in EXPERT_TASK_STATUS.items()}

# Opinion sections (Composition.section), in report order.
SECTIONS = (
    ("impression", "会诊意见", "Impression"),
    ("diagnosis", "诊断", "Diagnosis"),
    ("recommendations", "处理建议", "Recommendations"),
    ("follow-up", "随访建议", "Follow-up"),
)


@dataclass
class RequestDetails:
    """What the requesting doctor fills in (the invitation of the 2018 rules)."""

    patient: str  # Patient id
    kind: str = wf.ROUTINE
    purpose: str = ""  # 会诊目的
    summary: str = ""  # 病历摘要
    question: str = ""  # the question for the expert
    specialty: str | None = None  # SNOMED practice-setting code wanted
    preferred_experts: tuple[str, ...] = ()  # Practitioner ids suggested to triage
    requested_time: datetime | None = None
    attachments: tuple[str, ...] = ()  # DocumentReference ids
    consent_attachment: dict | None = None  # an Attachment (scanned/signed form), or
    consent_verbal_by: str | None = None  # ... the name of who witnessed verbal consent


def ref(rt: str, id_: str | None, display: str | None = None) -> dict | None:
    if not id_:
        return None
    out = {"reference": f"{rt}/{id_}"}
    if display:
        out["display"] = display
    return out


def ref_id(reference: dict | None, rt: str) -> str | None:
    value = (reference or {}).get("reference", "")
    prefix = f"{rt}/"
    return value[len(prefix) :].split("/_history", 1)[0] if value.startswith(prefix) else None


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def parse_dt(value: str | None) -> datetime | None:
    """A FHIR date, dateTime or instant as a datetime; partial dates (``1995``, ``1995-03``) start
    at their first day, and anything unreadable is None rather than an error page."""
    if not value:
        return None
    if len(value) == 4:
        value += "-01-01"
    elif len(value) == 7:
        value += "-01"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def expert_task_id(consultation_id: str, practitioner: str) -> str:
    return f"{consultation_id}-{practitioner}"[:64]


def service_request(
    cid: str,
    details: RequestDetails,
    *,
    requester: str,
    number: str,
    now: datetime,
    idempotency_key: str | None = None,
    consent_id: str | None = None,
) -> dict:
    identifiers = [{"system": REQUEST_NUMBER_SYSTEM, "value": number}]
    if idempotency_key:
        identifiers.append({"system": IDEMPOTENCY_SYSTEM, "value": idempotency_key})
    zh, en = KIND_NAMES[details.kind]
    sr: dict = {
        "resourceType": "ServiceRequest",
        "id": cid,
        "identifier": identifiers,
        "status": "draft",
        "intent": "order",
        "category": [{"coding": [{"system": KIND_SYSTEM, "code": details.kind, "display": en}], "text": zh}],
        "priority": "urgent" if details.kind == wf.URGENT else "routine",
        "code": {"coding": [CONSULTATION_CODE], "text": "远程会诊"},
        "subject": ref("Patient", details.patient),
        "authoredOn": iso(now),
        "requester": ref("Practitioner", requester),
    }
    if details.requested_time:
        sr["occurrenceDateTime"] = iso(details.requested_time)
    if details.specialty:
        sr["performerType"] = {"coding": [{"system": SNOMED, "code": details.specialty}]}
    if details.purpose:
        sr["reasonCode"] = [{"text": details.purpose}]
    notes = [{"text": t} for t in (details.summary, details.question) if t]
    if notes:
        sr["note"] = notes
    support = [ref("DocumentReference", d) for d in details.attachments]
    if consent_id:
        support.append(ref("Consent", consent_id))
    if support:
        sr["supportingInfo"] = support
    if details.preferred_experts:
        sr["extension"] = [
            {"url": f"{BASE}/StructureDefinition/preferred-expert", "valueReference": ref("Practitioner", p)}
            for p in details.preferred_experts
        ]
    return sr


def details_of(sr: dict) -> RequestDetails:
    notes = [n.get("text", "") for n in sr.get("note", [])]
    return RequestDetails(
        patient=ref_id(sr.get("subject"), "Patient") or "",
        kind=kind_of(sr),
        purpose=(sr.get("reasonCode") or [{}])[0].get("text", ""),
        summary=notes[0] if notes else "",
        question=notes[1] if len(notes) > 1 else "",
        specialty=((sr.get("performerType") or {}).get("coding") or [{}])[0].get("code"),
        preferred_experts=tuple(
            ref_id(e.get("valueReference"), "Practitioner") or ""
            for e in sr.get("extension", [])
            if e.get("url", "").endswith("/preferred-expert")
        ),
        requested_time=parse_dt(sr.get("occurrenceDateTime")),
        attachments=tuple(i for i in (ref_id(s, "DocumentReference") for s in sr.get("supportingInfo", [])) if i),
    )


def kind_of(sr: dict) -> str:
    for cat in sr.get("category", []):
        for c in cat.get("coding", []):
            if c.get("system") == KIND_SYSTEM:
                return c["code"]
    return wf.ROUTINE


def consent(cid: str, patient: str, organization: str | None, now: datetime, details: RequestDetails) -> dict:
    """The patient's informed consent to the teleconsultation (R4 Consent, scope treatment)."""
    out: dict = {
        "resourceType": "Consent",
        "id": cid,
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Consent Document"}]}],
        "patient": ref("Patient", patient),
        "dateTime": iso(now),
        "policyRule": {"text": "远程医疗服务管理规范（试行）2018 — 知情同意"},
        "provision": {"type": "permit", "purpose": [{"system": SNOMED, "code": "11429006", "display": "Consultation"}]},
    }
    if organization:
        out["organization"] = [ref("Organization", organization)]
    if details.consent_attachment:
        out["sourceAttachment"] = details.consent_attachment
    elif details.consent_verbal_by:
        out["extension"] = [{"url": f"{BASE}/StructureDefinition/verbal-consent-witness",
                             "valueString": details.consent_verbal_by}]  # fmt: skip
    return out


def transition_extension(t: wf.Transition) -> dict:
    parts = [
        {"url": "event", "valueCode": t.event},
        {"url": "actor", "valueString": t.actor},
        {"url": "from", "valueCode": t.from_state},
    ]
    if t.reason:
        parts.append({"url": "reason", "valueString": t.reason})
    return {"url": TRANSITION_URL, "extension": parts}


def read_transition(task: dict) -> dict | None:
    for ext in task.get("extension", []):
        if ext.get("url") == TRANSITION_URL:
            parts = {}
            for p in ext.get("extension", []):
                parts[p["url"]] = next((v for k, v in p.items() if k.startswith("value")), None)
            return parts
    return None


def task(
    c: wf.Consultation,
    *,
    patient: str,
    centre: str | None,
    now: datetime,
    deadline: datetime | None,
    last: wf.Transition | None,
    previous: dict | None = None,
) -> dict:
    """Task/X for the consultation's current state (``previous``: the stored Task, whose other
    fields are kept)."""
    out = dict(previous or {})
    out.update(
        {
            "resourceType": "Task",
            "id": c.id,
            "status": TASK_STATUS[c.state],
            "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": c.state}]},
            "intent": "order",
            "priority": "urgent" if c.kind == wf.URGENT else "routine",
            "code": {"coding": [{"system": KIND_SYSTEM, "code": c.kind, "display": KIND_NAMES[c.kind][1]}]},
            "focus": ref("ServiceRequest", c.id),
            "for": ref("Patient", patient),
            "requester": ref("Practitioner", c.requester),
            "lastModified": iso(now),
        }
    )
    out.setdefault("authoredOn", iso(now))
    owner = _owner(c, centre)
    if owner:
        out["owner"] = owner
    else:
        out.pop("owner", None)
    if deadline:
        out["restriction"] = {"period": {"end": iso(deadline)}}
    else:
        out.pop("restriction", None)
    out.pop("statusReason", None)
    out["extension"] = [e for e in out.get("extension", []) if e.get("url") not in (TRANSITION_URL, SLA_URL)]
    if last:
        out["extension"].append(transition_extension(last))
        if last.reason:
            out["statusReason"] = {"text": last.reason}
    out["output"] = [
        {"type": {"text": "signed-versions"}, "valueInteger": c.signed_versions}
    ] if c.signed_versions else []  # fmt: skip
    if not out["output"]:
        del out["output"]
    if not out["extension"]:
        del out["extension"]
    return out


def _owner(c: wf.Consultation, centre: str | None) -> dict | None:
    """Whose move it is: the requester's, the centre's (QC, triage) or the experts'."""
    if c.state in (wf.DRAFT, wf.RETURNED, wf.CONCLUDED):
        return ref("Practitioner", c.requester)
    if c.state in (wf.SUBMITTED, wf.ACCEPTED, wf.ACKNOWLEDGED):
        return ref("Organization", centre)
    active = c.active_experts
    if c.state in wf.WITH_EXPERTS and len(active) == 1:
        return ref("Practitioner", active[0].practitioner)
    return ref("Organization", centre)


def expert_task(c: wf.Consultation, e: wf.Expert, patient: str, now: datetime, previous: dict | None) -> dict:
    out = dict(previous or {})
    out.update(
        {
            "resourceType": "Task",
            "id": expert_task_id(c.id, e.practitioner),
            "status": EXPERT_TASK_STATUS[e.state],
            "intent": "order",
            "priority": "urgent" if c.kind == wf.URGENT else "routine",
            "code": {"coding": [{"system": KIND_SYSTEM, "code": c.kind}], "text": "会诊专家任务"},
            "partOf": [ref("Task", c.id)],
            "focus": ref("ServiceRequest", c.id),
            "for": ref("Patient", patient),
            "owner": ref("Practitioner", e.practitioner),
            "lastModified": iso(now),
        }
    )
    out.setdefault("authoredOn", iso(now))
    if e.external:
        out["input"] = [{"type": {"text": "external-expert"}, "valueBoolean": True}]
    if e.reason:
        out["statusReason"] = {"text": e.reason}
    return out


def service_request_for_state(sr: dict, c: wf.Consultation, centre: str | None) -> dict:
    """The ServiceRequest's status and performers (who may see the patient) for the current state."""
    out = dict(sr)
    out["status"] = REQUEST_STATUS.get(c.state, "active")
    performers = []
    if c.state != wf.DRAFT and centre:
        performers.append(ref("Organization", centre))
    if c.state != wf.CANCELLED:
        performers += [ref("Practitioner", e.practitioner) for e in c.active_experts]
    if performers:
        out["performer"] = performers
    else:
        out.pop("performer", None)
    return out


def appointment(c: wf.Consultation, patient: str, minutes: int, previous: dict | None) -> dict:
    start = c.scheduled_start
    out = dict(previous or {})
    out.update(
        {
            "resourceType": "Appointment",
            "id": c.id,
            "status": "cancelled" if c.state == wf.CANCELLED else "booked",
            "serviceType": [{"coding": [CONSULTATION_CODE], "text": "远程会诊"}],
            "appointmentType": {"text": KIND_NAMES[c.kind][0]},
            "basedOn": [ref("ServiceRequest", c.id)],
            "start": iso(start),
            "end": iso(start + timedelta(minutes=minutes)),
            "participant": [
                {"actor": ref("Patient", patient), "status": "accepted"},
                {"actor": ref("Practitioner", c.requester), "status": "accepted"},
            ]
            + [{"actor": ref("Practitioner", e.practitioner), "status": "accepted"} for e in c.active_experts],
        }
    )
    return out


def encounter(c: wf.Consultation, patient: str, centre: str | None, previous: dict | None, now: datetime) -> dict:
    status = {wf.SCHEDULED: "planned", wf.IN_SESSION: "in-progress"}.get(c.state, "finished")
    if c.state == wf.CANCELLED:
        status = "cancelled"
    out = dict(previous or {})
    out.update(
        {
            "resourceType": "Encounter",
            "id": c.id,
            "identifier": [{"system": ROOM_SYSTEM, "value": c.room}] if c.room else [],
            "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
            "serviceType": {"coding": [CONSULTATION_CODE]},
            "subject": ref("Patient", patient),
            "basedOn": [ref("ServiceRequest", c.id)],
            "appointment": [ref("Appointment", c.id)],
            # The team, then who attended (entries with a period, recorded by telemed.video) kept as they were.
            "participant": [{"individual": ref("Practitioner", e.practitioner)} for e in c.active_experts]
            + [p for p in out.get("participant", []) if p.get("period")],
        }
    )
    if centre:
        out["serviceProvider"] = ref("Organization", centre)
    if not out["identifier"]:
        del out["identifier"]
    period = dict(out.get("period") or {})
    if status == "in-progress" and "start" not in period:
        period["start"] = iso(now)
    if status == "finished" and "start" in period and "end" not in period:
        period["end"] = iso(now)
    if period:
        out["period"] = period
    return out


def opinion(
    cid: str, practitioner: str, patient: str, sections: dict[str, str], status: str, now: datetime, title: str
) -> dict:
    """One expert's opinion as a Composition (R4 §2.42, consult note) with the report's sections."""
    secs = []
    for code, zh, _en in SECTIONS:
        text = (sections.get(code) or "").strip()
        if text:
            div = '<div xmlns="http://www.w3.org/1999/xhtml">' + escape(text).replace("\n", "<br/>") + "</div>"
            coding = {"system": SECTION_SYSTEM, "code": code}
            secs.append({"title": zh, "code": {"coding": [coding]}, "text": {"status": "generated", "div": div}})
    return {
        "resourceType": "Composition",
        "id": expert_task_id(cid, practitioner),
        "status": status,
        "type": {"coding": [CONSULT_NOTE]},
        "subject": ref("Patient", patient),
        "encounter": ref("Encounter", cid),
        "date": iso(now),
        "author": [ref("Practitioner", practitioner)],
        "title": title,
        "event": [{"detail": [ref("ServiceRequest", cid)]}],
        "section": secs,
    }


def sections_of(composition: dict) -> dict[str, str]:
    out = {}
    for s in composition.get("section", []):
        code = ((s.get("code") or {}).get("coding") or [{}])[0].get("code")
        div = (s.get("text") or {}).get("div", "")
        text = re.sub(r"<br\s*/?>", "\n", div)
        out[code] = unescape(re.sub(r"<[^>]+>", "", text))
    return out
