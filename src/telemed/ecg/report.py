"""The ECG report: the reader confirms or corrects the machine's measurements, picks standard
statements (plus free text), and signs; the signed DiagnosticReport and its PDF (telemed.reports)
go back to the sender. A critical finding (acute STEMI, VT/VF, complete AV block, extreme QTc)
is raised to the sender at once as a ``Communication`` (priority stat) that stays open until the
sender acknowledges it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from telemed.ecg import model, paper, service
from telemed.ecg import workflow as wf
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError
from telemed.reports import (
    Figure,
    Opinion,
    PatientInfo,
    ReportDocument,
    RequestInfo,
    Signer,
    SignerInfo,
    issue_signed_report,
)

ECG_REPORT_DOC = {"coding": [model.ECG_STUDY], "text": "ECG report"}
STATEMENT_SYSTEM = f"{model.BASE}/CodeSystem/ecg-statement"
CRITICAL_URL = f"{model.BASE}/StructureDefinition/ecg-critical"
CRITICAL_QTC_MS = 500.0


@dataclass(frozen=True)
class Statement:
    zh: str
    en: str
    snomed: str | None
    critical: bool = False


# The standard statements a reader picks from (SNOMED CT codes where they are unambiguous).
STATEMENTS: dict[str, Statement] = {
    "sinus-rhythm": Statement("窦性心律", "Sinus rhythm", "426783006"),
    "sinus-bradycardia": Statement("窦性心动过缓", "Sinus bradycardia", "426627000"),
    "sinus-tachycardia": Statement("窦性心动过速", "Sinus tachycardia", "427084000"),
    "atrial-fibrillation": Statement("心房颤动", "Atrial fibrillation", "49436004"),
    "atrial-flutter": Statement("心房扑动", "Atrial flutter", "5370000"),
    "pvc": Statement("室性早搏", "Premature ventricular contractions", "427172004"),
    "first-degree-av-block": Statement("一度房室传导阻滞", "First-degree AV block", "270492004"),
    "complete-av-block": Statement("三度房室传导阻滞", "Complete AV block", "27885002", critical=True),
    "lbbb": Statement("完全性左束支传导阻滞", "Left bundle branch block", "164909002"),
    "rbbb": Statement("完全性右束支传导阻滞", "Right bundle branch block", "164907000"),
    "lvh": Statement("左心室肥厚", "Left ventricular hypertrophy", "164873001"),
    "st-elevation": Statement("ST段抬高", "ST elevation", "164931005"),
    "acute-stemi": Statement(
        "急性ST段抬高型心肌梗死", "Acute ST-elevation myocardial infarction", "401303003", critical=True
    ),  # fmt: skip
    "st-depression": Statement("ST段压低", "ST depression", "429622005"),
    "t-wave-inversion": Statement("T波倒置", "T wave inversion", "59931005"),
    "long-qt": Statement("QT间期延长", "Prolonged QT interval", "111975006"),
    "ventricular-tachycardia": Statement("室性心动过速", "Ventricular tachycardia", "25569003", critical=True),
    "ventricular-fibrillation": Statement("心室颤动", "Ventricular fibrillation", "71908006", critical=True),
}


def is_critical(statements: list[str], qtc: float | None) -> bool:
    return any(STATEMENTS[s].critical for s in statements) or (qtc is not None and qtc > CRITICAL_QTC_MS)


@dataclass
class Signed:
    document_reference: dict
    pdf: bytes
    critical: bool
    push: service.Push


def _name(resource: dict) -> str:
    n = resource.get("name")
    if isinstance(n, str):
        return n
    n = (n or [{}])[0]
    return n.get("text") or n.get("family", "") + "".join(n.get("given", []))


def _age(birth: str | None, now: datetime) -> int | None:
    if not birth or len(birth) < 10:
        return None
    b = date.fromisoformat(birth[:10])
    return now.year - b.year - ((now.month, now.day) < (b.month, b.day))


def waveform_figure(repo: Repository, ecg: str, locale: str = "zh-CN") -> Figure:
    """The first 10 s of the ECG at 25 mm/s and 10 mm/mV (3×4 + rhythm strip II) for the printed report."""
    panel = repo.read("Observation", ecg).resource
    leads, rate = {}, 500.0
    for member in panel.get("hasMember", []):
        name, rate, mv = model.lead_millivolts(repo.read("Observation", model.ref_id(member, "Observation")).resource)
        leads[name] = mv
    caption = "心电图（25 mm/s，10 mm/mV）" if locale == "zh-CN" else "ECG (25 mm/s, 10 mm/mV)"
    return Figure(caption, paper.svg(leads, rate))


def sign(repo: Repository, signer: Signer, ctx: AccessContext, now: datetime, base_url: str, ecg: str, *,
         measurements: dict[str, float | None], statements: list[str], leads: str = "", free_text: str = "",
         locale: str = "zh-CN") -> Signed:  # fmt: skip
    """Confirm/correct the measurements, write and sign the report of an ECG the reader holds."""
    unknown = [s for s in statements if s not in STATEMENTS]
    if unknown:
        raise TelemedError(Category.INCORRECT, f"Unknown ECG statement(s): {', '.join(unknown)}")
    if not statements and not free_text.strip():
        raise TelemedError(Category.UNPROCESSABLE, "Choose at least one statement or write an interpretation")
    loaded = service.load(repo, ecg)
    new = service._step(wf.report, loaded.reading, ctx.practitioner or "", False)
    me = model.ref("Practitioner", ctx.practitioner)
    values: dict[str, float | None] = {}
    for key, (_codings, _display, unit) in model.MEASUREMENTS.items():
        mid = model.measurement_id(ecg, key)
        if not repo.exists("Observation", mid):  # signed before the automatic measurements were added
            values[key] = measurements.get(key)
            continue
        obs = dict(repo.read("Observation", mid).resource)
        machine = (obs.get("valueQuantity") or {}).get("value")
        value = measurements.get(key, machine)
        values[key] = value
        obs.pop("meta", None)
        obs["performer"] = [*obs.get("performer", []), me]
        if value != machine:
            obs["status"] = "corrected"
            obs.pop("dataAbsentReason", None)
            obs["valueQuantity"] = {"value": value, "unit": unit, "system": model.UCUM, "code": unit}
            obs["note"] = [{"text": f"corrected by the reader (machine: {machine})"}]
        else:
            obs["status"] = "final"
        repo.update("Observation", mid, obs)
    critical = is_critical(statements, values.get("qtc_bazett"))
    lang = 0 if locale == "zh-CN" else 1
    words = [(STATEMENTS[s].zh, STATEMENTS[s].en)[lang] for s in statements]
    conclusion = "；".join(words) if lang == 0 else "; ".join(words)
    if leads.strip():
        conclusion += f"（{leads.strip()}）" if lang == 0 else f" ({leads.strip()})"
    if free_text.strip():
        conclusion = f"{conclusion}\n{free_text.strip()}" if conclusion else free_text.strip()
    report = dict(repo.read("DiagnosticReport", ecg).resource)
    report.pop("meta", None)
    report.update({
        "status": "final", "issued": model.iso(now), "conclusion": conclusion, "resultsInterpreter": [me],
        "conclusionCode": [{"coding": [c for c in ({"system": STATEMENT_SYSTEM, "code": s,
                                                    "display": STATEMENTS[s].en},
                                                   {"system": model.SNOMED, "code": STATEMENTS[s].snomed,
                                                    "display": STATEMENTS[s].en}) if c["code"]]}
                           for s in statements],
    })  # fmt: skip
    if not report["conclusionCode"]:
        report.pop("conclusionCode")
    if critical:
        report["extension"] = [{"url": CRITICAL_URL, "valueBoolean": True}]
    stored = repo.update("DiagnosticReport", ecg, report)

    task = loaded.task.resource
    patient = repo.read("Patient", model.ref_id(task.get("for"), "Patient")).resource
    sender = loaded.sender
    sender_name = _name(repo.read("Organization", sender).resource) if sender else None
    reader = repo.read("Practitioner", ctx.practitioner or "").resource
    centre = ctx.organization and _name(repo.read("Organization", ctx.organization).resource)
    sr = repo.read("ServiceRequest", ecg).resource
    rows = [(d, values[k], u) for k, (_c, d, u) in model.MEASUREMENTS.items()]
    table = "\n".join(f"{d}: {'—' if v is None else f'{v:g} {u}'}" for d, v, u in rows)
    question = (sr.get("note") or [{}])[0].get("text") or ("心电图诊断" if lang == 0 else "ECG")
    document = ReportDocument(
        institution=centre or "", title="心电图诊断报告" if lang == 0 else "ECG report",
        patient=PatientInfo(_name(patient), patient.get("gender"), _age(patient.get("birthDate"), now)),
        request=RequestInfo(question=question, institution=sender_name, requested=sr.get("authoredOn")),
        opinion=Opinion(impression=conclusion),
        signers=(SignerInfo(_name(reader), institution=centre),),
        locale=locale,
        extra_sections=(("测量值" if lang == 0 else "Measurements", table),),
        figures=(waveform_figure(repo, ecg, locale),),
    )  # fmt: skip
    signed = issue_signed_report(repo, signer, report=stored, document=document,
                                 author_practitioner=ctx.practitioner or "", username=ctx.user, now=now,
                                 base_url=base_url, doc_type=ECG_REPORT_DOC)  # fmt: skip
    new = wf.Reading(**{**new.__dict__, "critical": critical})
    service._apply(repo, loaded, new, None, now, None)
    repo.update("ServiceRequest", ecg, {**{k: v for k, v in sr.items() if k != "meta"}, "status": "completed"})
    if critical:
        repo.update("Communication", f"{ecg}-critical", {
            "resourceType": "Communication", "id": f"{ecg}-critical", "status": "in-progress", "priority": "stat",
            "category": [{"text": "critical-result"}], "subject": task.get("for"),
            "about": [model.ref("DiagnosticReport", ecg)], "sent": model.iso(now), "sender": me,
            "recipient": [model.ref("Organization", sender)],
            "payload": [{"contentString": conclusion}],
        })  # fmt: skip
    push = service.Push(ecg, "critical" if critical else "reported", new.priority, [], None, sender)
    return Signed(signed.document_reference, signed.pdf, critical, push)


def acknowledge(repo: Repository, ctx: AccessContext, now: datetime, ecg: str) -> None:
    """The sender confirms it has seen the (critical) report."""
    loaded = service.load(repo, ecg)
    if ctx.organization != loaded.sender:
        raise TelemedError(Category.FORBIDDEN, "Only the sending institution acknowledges the report")
    new = service._step(wf.acknowledge, loaded.reading)
    if new != loaded.reading:
        service._apply(repo, loaded, new, None, now, None)
    try:
        comm = dict(repo.read("Communication", f"{ecg}-critical").resource)
    except TelemedError:
        return
    comm.pop("meta", None)
    comm.update({"status": "completed", "received": model.iso(now)})
    repo.update("Communication", comm["id"], comm)


def unacknowledged_critical(repo: Repository, now: datetime, after: timedelta) -> list[service.Push]:
    """Critical reports the sender has not acknowledged within ``after``: alerted again."""
    pushes = []
    for c in service.find(repo, "Communication", [("status", "in-progress"), ("category:text", "critical-result")]):
        r = c.resource
        if now - datetime.fromisoformat(r["sent"]) >= after:
            ecg = model.ref_id((r.get("about") or [{}])[0], "DiagnosticReport")
            sender = model.ref_id((r.get("recipient") or [{}])[0], "Organization")
            pushes.append(service.Push(ecg, "critical", wf.URGENT, [], None, sender))
    return pushes
