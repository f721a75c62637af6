"""Remote pathology cases: request, assignment or claim, report, preliminary result, signing,
acknowledgement, amendment and escalation, as functions of (repository, environment, caller, input).

No HTTP and no SQL: every read and write goes through the caller's FHIR repository (access rules,
validation, audit), in the caller's unit of work (a step writes the Task, the request, the report
and the notification outbox together or not at all).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from telemed.fhir.search.query import parse
from telemed.fhir.store import searching
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository, Stored
from telemed.kernel.errors import Category, Issue, TelemedError
from telemed.notify import Notification, Outbox, Recipient
from telemed.pathology import casemodel as m
from telemed.pathology import workflow as wf
from telemed.reports import (
    Opinion,
    PatientInfo,
    ReportDocument,
    RequestInfo,
    Signer,
    SignerInfo,
    current_documents,
    issue_signed_report,
)

MAX_TEXT = 20_000
REPORT_DOC_TYPE = {"coding": [m.SURGICAL_PATHOLOGY], "text": "Pathology report"}


@dataclass
class Env:
    clock: object  # telemed.kernel.clock.Clock
    ids: Callable[[], str]
    policy: wf.Policy = field(default_factory=wf.Policy)


@dataclass(frozen=True)
class Notice:
    """Someone must hear about a step: practitioners by id, an institution's duty line, a phone."""

    kind: str
    case: str
    practitioners: tuple[str, ...] = ()
    organization: str | None = None
    phones: tuple[str, ...] = ()
    text: str | None = None


@dataclass
class Loaded:
    case: wf.Case
    request: Stored
    task: Stored
    report: Stored | None = None
    notices: list[Notice] = field(default_factory=list)

    @property
    def patient(self) -> str:
        return m.ref_id(self.request.resource.get("subject"), "Patient") or ""

    @property
    def centre(self) -> str:
        return m.ref_id(m.ext_value(self.request.resource, m.CENTRE_URL), "Organization") or ""

    @property
    def number(self) -> str:
        return self.request.resource["identifier"][0]["value"]

    @property
    def slides(self) -> list[str]:
        return [i for i in (m.ref_id(s, "ImagingStudy") for s in self.request.resource.get("supportingInfo", [])) if i]

    @property
    def requested_at(self) -> datetime:
        return m.parse_dt(self.request.resource.get("authoredOn"))

    @property
    def deadline(self) -> datetime | None:
        return m.parse_dt(((self.task.resource.get("restriction") or {}).get("period") or {}).get("end"))

    @property
    def version(self) -> int:
        return self.task.version_id


@dataclass
class RequestForm:
    kind: str
    centre: str
    slides: list[str]
    accession: str
    site: str = ""  # specimen site/type
    history: str = ""  # clinical history
    gross: str = ""  # gross description by the grassroots hospital
    question: str = ""
    callback: str = ""  # the surgeon's side's phone for the preliminary result
    theatre: str = ""  # operating room
    patient: str | None = None  # default: the slides' patient


def actor_of(ctx: AccessContext) -> wf.Actor:
    if ctx.user == "system" and "system/*.*" in ctx.scopes:
        return wf.SYSTEM
    return wf.Actor(ctx.user, frozenset(ctx.roles), ctx.practitioner)


def _incorrect(message: str, where: str) -> TelemedError:
    return TelemedError(Category.UNPROCESSABLE, message, [Issue(message, "invalid", where)])


def find(repo: Repository, rt: str, params: list[tuple[str, str]], count: int = 200) -> list[Stored]:
    return searching.search(repo, parse(rt, [*params, ("_count", str(count))]), "").matches


def _read(repo: Repository, rt: str, id_: str) -> Stored | None:
    try:
        return repo.read(rt, id_)
    except TelemedError as exc:
        if exc.category in (Category.NOT_FOUND, Category.GONE):
            return None
        raise


def name_of(resource: dict | None) -> str:
    n = (resource or {}).get("name")
    if isinstance(n, str):
        return n
    n = (n or [{}])[0]
    return n.get("text") or n.get("family", "") + "".join(n.get("given", []))


# The directory ----------------------------------------------------------------------------------


def centres(repo: Repository) -> list[dict]:
    """Institutions that read pathology for others (Organization.type pathology-centre)."""
    return [s.resource for s in find(repo, "Organization", [("type", f"{m.ORG_TYPE_SYSTEM}|{m.PATHOLOGY_CENTRE}")])]


def pathologists(repo: Repository, centre: str) -> list[str]:
    """Practitioner ids of the centre's pathologists (PractitionerRole code pathologist)."""
    roles = find(repo, "PractitionerRole", [("organization", f"Organization/{centre}"),
                                            ("role", f"{m.ROLE_SYSTEM}|pathologist"), ("active", "true")])  # fmt: skip
    return sorted({p for p in (m.ref_id(r.resource.get("practitioner"), "Practitioner") for r in roles) if p})


# Request -----------------------------------------------------------------------------------------


def request_case(repo: Repository, env: Env, ctx: AccessContext, form: RequestForm) -> Loaded:
    """A grassroots hospital asks the centre to read a case's slides; the centre's pathologists are
    alerted at once (a frozen section: by SMS as well)."""
    if not ctx.practitioner or "requesting-doctor" not in ctx.roles:
        raise TelemedError(Category.FORBIDDEN, "Only a requesting doctor can request a pathology consultation")
    if form.kind not in wf.KINDS:
        raise _incorrect("The kind is frozen or routine", "kind")
    if not form.accession.strip():
        raise _incorrect("Give the specimen's accession number", "accession")
    if not form.slides:
        raise _incorrect("Choose at least one slide", "slides")
    for text in (form.history, form.gross, form.question, form.site):
        if len(text) > MAX_TEXT:
            raise _incorrect(f"A field is longer than {MAX_TEXT} characters", "text")
    if form.kind == wf.FROZEN and not form.callback.strip():
        raise _incorrect("A frozen section needs the surgeon's call-back number", "callback")
    if form.centre not in {c["id"] for c in centres(repo)}:
        raise _incorrect("Choose a pathology centre", "centre")
    patients = set()
    for sid in dict.fromkeys(form.slides):
        study = _read(repo, "ImagingStudy", sid)
        if study is None:
            raise _incorrect(f"No slide {sid}", "slides")
        patients.add(m.ref_id(study.resource.get("subject"), "Patient"))
    patient = form.patient or (patients.pop() if len(patients) == 1 else None)
    if not patient or (patients and patients != {patient}):
        raise _incorrect("The slides of one case belong to one known patient", "slides")
    now = env.clock.now()
    cid = env.ids()
    number = f"BL{now:%Y%m%d}-{cid[-6:].upper()}"
    slides = list(dict.fromkeys(form.slides))
    repo.update("Specimen", cid, m.specimen(cid, patient=patient, accession=form.accession.strip()[:64],
                                            site=form.site.strip(), gross=form.gross.strip(), now=now))  # fmt: skip
    sr = m.service_request(cid, kind=form.kind, patient=patient, requester=ctx.practitioner, centre=form.centre,
                           number=number, history=form.history.strip(), question=form.question.strip(),
                           slides=slides, callback=form.callback.strip() or None,
                           theatre=form.theatre.strip() or None, now=now)  # fmt: skip
    repo.update("ServiceRequest", cid, sr)
    for sid in slides:  # the slide is now part of this request
        study = dict(repo.read("ImagingStudy", sid).resource)
        study.pop("meta", None)
        based = [b for b in study.get("basedOn", []) if b.get("reference") != f"ServiceRequest/{cid}"]
        study["basedOn"] = [*based, m.ref("ServiceRequest", cid)]
        repo.update("ImagingStudy", sid, study)
    case = wf.Case(cid, form.kind, ctx.practitioner)
    deadline = env.policy.deadline(form.kind, now)
    repo.update("Task", cid, m.task(case, patient=patient, centre=form.centre, now=now, deadline=deadline,
                                    event="request", actor=ctx.user, reason=None, previous=None))  # fmt: skip
    loaded = load(repo, cid)
    loaded.notices = [Notice("new-frozen" if form.kind == wf.FROZEN else "new", cid,
                             tuple(pathologists(repo, form.centre)),
                             form.centre if form.kind == wf.FROZEN else None)]  # fmt: skip
    return loaded


# Loading -----------------------------------------------------------------------------------------


def load(repo: Repository, cid: str) -> Loaded:
    """The case as the workflow sees it; another institution's case is a 404 like a missing one."""
    sr, task = _read(repo, "ServiceRequest", cid), _read(repo, "Task", cid)
    if sr is None or task is None or m.CASE_URL not in {e.get("url") for e in task.resource.get("extension", [])}:
        raise TelemedError(Category.NOT_FOUND, f"No pathology case {cid!r}")
    return Loaded(m.case_of(task.resource), sr, task, _read(repo, "DiagnosticReport", cid))


def _check_version(loaded: Loaded, expected: int | None) -> None:
    if expected is not None and int(expected) != loaded.version:
        raise TelemedError(Category.CONFLICT, "The case was changed by someone else in the meantime; reload it",
                           [Issue("changed", "conflict", "version")])  # fmt: skip


_CATEGORY = {"forbidden": Category.FORBIDDEN, "incomplete": Category.UNPROCESSABLE}


def act(repo: Repository, env: Env, ctx: AccessContext, cid: str, event: str, *, reason: str | None = None,
        pathologist: str | None = None, expected_version: int | None = None) -> Loaded:  # fmt: skip
    """Send one workflow event and write what reflects it; a refused event is a 409 (or 403)."""
    loaded = load(repo, cid)
    _check_version(loaded, expected_version)
    reason = (reason or "").strip() or None
    if event == "assign" and pathologist and pathologist not in pathologists(repo, loaded.centre):
        raise _incorrect("Choose one of the centre's pathologists", "pathologist")
    if event == "claim" and ctx.practitioner not in pathologists(repo, loaded.centre):
        raise TelemedError(Category.FORBIDDEN, "Only a pathologist of the centre can claim this case")
    try:
        new = wf.apply(loaded.case, wf.Event(event, actor_of(ctx), reason=reason, pathologist=pathologist))
    except wf.IllegalTransition as exc:
        category = _CATEGORY.get(exc.code, Category.CONFLICT)
        raise TelemedError(category, exc.reason, [Issue(exc.reason, "business-rule", event)]) from None
    return persist(repo, env, loaded, new, event, ctx.user, reason)


def persist(repo: Repository, env: Env, loaded: Loaded, new: wf.Case, event: str, actor: str,
            reason: str | None) -> Loaded:  # fmt: skip
    now = env.clock.now()
    centre = loaded.centre
    deadline = loaded.deadline or env.policy.deadline(new.kind, loaded.requested_at or now)
    task = m.task(new, patient=loaded.patient, centre=centre, now=now, deadline=deadline, event=event, actor=actor,
                  reason=reason, previous=loaded.task.resource)  # fmt: skip
    if new.state in (wf.REPORTED, wf.ACKNOWLEDGED, wf.CANCELLED):
        period = dict(task.get("executionPeriod") or {"start": loaded.request.resource.get("authoredOn")})
        period.setdefault("end", m.iso(now))
        task["executionPeriod"] = period
    try:
        repo.update("Task", new.id, task, if_match=loaded.task.etag)  # of two concurrent steps, one loses
    except TelemedError as exc:
        if exc.category is Category.PRECONDITION_FAILED:
            raise TelemedError(Category.CONFLICT, "The case was changed by someone else in the meantime; reload it",
                               [Issue("changed", "conflict", "version")]) from None  # fmt: skip
        raise
    sr = m.service_request_for(loaded.request.resource, new, centre)
    old = {k: v for k, v in loaded.request.resource.items() if k != "meta"}
    if sr != old:
        repo.update("ServiceRequest", new.id, sr)
    out = load(repo, new.id)
    out.notices = _notices(loaded, new, event, reason)
    return out


def _notices(loaded: Loaded, new: wf.Case, event: str, reason: str | None) -> list[Notice]:
    cid = new.id
    if event == "assign" and new.pathologist:
        return [Notice("assign", cid, (new.pathologist,))]
    if event == "sign" or event == "amend":
        return [Notice("report-ready" if event == "sign" else "amended", cid, (new.requester,), text=reason)]
    if event == "cancel":
        return [Notice("cancel", cid, tuple(p for p in (new.requester, loaded.case.pathologist) if p), text=reason)]
    if event == "release":
        return [Notice("released", cid, (), loaded.centre)]
    return []


# The report --------------------------------------------------------------------------------------


def _clean_sections(sections: dict[str, str]) -> dict[str, str]:
    unknown = set(sections) - set(m.SECTION_CODES)
    if unknown:
        raise _incorrect(f"Unknown report section(s): {', '.join(sorted(unknown))}", "sections")
    out = {k: (v or "").strip() for k, v in sections.items()}
    if any(len(v) > MAX_TEXT for v in out.values()):
        raise _incorrect(f"A section is longer than {MAX_TEXT} characters", "sections")
    return out


def save_report(repo: Repository, env: Env, ctx: AccessContext, cid: str, sections: dict[str, str],
                expected_version: int | None = None) -> Loaded:  # fmt: skip
    """The pathologist holding the case writes (or rewrites) the report draft."""
    sections = _clean_sections(sections)
    if not any(sections.values()):
        raise _incorrect("The report is empty", "diagnosis")
    loaded = load(repo, cid)
    if loaded.case.state == wf.ASSIGNED or loaded.case.state != wf.READING:
        loaded = act(repo, env, ctx, cid, "draft", expected_version=expected_version)
    else:
        _check_version(loaded, expected_version)
        if not wf.may(loaded.case, "draft", actor_of(ctx)):
            raise TelemedError(Category.FORBIDDEN, "Only the pathologist holding the case writes its report")
    dr = m.diagnostic_report(cid, patient=loaded.patient, pathologist=ctx.practitioner or "", sections=sections,
                             status="preliminary", slides=loaded.slides, now=env.clock.now())  # fmt: skip
    loaded.report = repo.update("DiagnosticReport", cid, dr)
    return loaded


def send_preliminary(repo: Repository, env: Env, ctx: AccessContext, cid: str, text: str) -> Loaded:
    """A frozen section's preliminary result, to the requester at once (portal and SMS, and the
    surgeon's call-back number), before the signed report."""
    text = (text or "").strip()
    if len(text) > 2000:
        raise _incorrect("The preliminary result is at most 2000 characters", "preliminary")
    loaded = act(repo, env, ctx, cid, "preliminary", reason=text)
    c = loaded.case
    repo.update("Communication", f"{cid}-prelim-{c.preliminary}"[:64],
                m.preliminary(cid, c.preliminary, patient=loaded.patient, pathologist=ctx.practitioner or "",
                              requester=c.requester, text=text, now=env.clock.now()))  # fmt: skip
    callback = m.ext_value(loaded.request.resource, m.CALLBACK_URL)
    loaded.notices = [Notice("preliminary", cid, (c.requester,), phones=(callback,) if callback else (), text=text)]
    return loaded


def preliminaries(repo: Repository, cid: str) -> list[dict]:
    found = find(repo, "Communication", [("based-on", f"ServiceRequest/{cid}")], 50)
    return sorted((s.resource for s in found if s.resource.get("priority") == "stat"), key=lambda r: r.get("sent", ""))


def sign_report(repo: Repository, env: Env, ctx: AccessContext, cid: str, *, signer: Signer, base_url: str,
                expected_version: int | None = None) -> Loaded:  # fmt: skip
    """Sign the drafted report: DiagnosticReport final, Provenance and the PDF (telemed.reports)."""
    loaded = load(repo, cid)
    if loaded.report is None or loaded.report.resource.get("status") != "preliminary":
        raise TelemedError(Category.CONFLICT, "Write the report before signing it")
    if not m.sections_of(loaded.report.resource).get("diagnosis"):
        raise _incorrect("A signed report has a diagnosis", "diagnosis")
    loaded = act(repo, env, ctx, cid, "sign", expected_version=expected_version)
    _issue(repo, env, ctx, loaded, dict(loaded.report.resource, status="final"), signer, base_url, None)
    return loaded


def amend_report(repo: Repository, env: Env, ctx: AccessContext, cid: str, sections: dict[str, str], reason: str,
                 *, signer: Signer, base_url: str) -> Loaded:  # fmt: skip
    """A signed report changes only as an amendment with its reason: a new signed version whose PDF
    supersedes the earlier one."""
    sections = _clean_sections(sections)
    if not sections.get("diagnosis"):
        raise _incorrect("A signed report has a diagnosis", "diagnosis")
    loaded = act(repo, env, ctx, cid, "amend", reason=reason)
    dr = m.diagnostic_report(cid, patient=loaded.patient, pathologist=ctx.practitioner or "", sections=sections,
                             status="amended", slides=loaded.slides, now=env.clock.now())  # fmt: skip
    _issue(repo, env, ctx, loaded, dr, signer, base_url, (reason or "").strip())
    return loaded


def _issue(repo, env, ctx, loaded: Loaded, report: dict, signer: Signer, base_url: str, amendment: str | None):
    now = env.clock.now()
    report.pop("meta", None)
    report["issued"] = m.iso(now)
    stored = repo.update("DiagnosticReport", loaded.case.id, report)
    loaded.report = stored
    sections = m.sections_of(report)
    patient = repo.read("Patient", loaded.patient).resource
    pathologist = _read(repo, "Practitioner", ctx.practitioner or "")
    specimen = _read(repo, "Specimen", loaded.case.id)
    spec = (specimen.resource if specimen else {})
    requester = _read(repo, "Practitioner", loaded.case.requester)
    req_org = _read(repo, "Organization", m.ref_id(loaded.request.resource.get("performer", [{}])[0], "Organization")
                    or "")  # fmt: skip
    centre = _read(repo, "Organization", loaded.centre)
    kind_zh = m.KIND_NAMES[loaded.case.kind][0]
    question = "；".join(t for t in (kind_zh, (loaded.request.resource.get("reasonCode") or [{}])[0].get("text", ""),
                                    f"标本 {(spec.get('accessionIdentifier') or {}).get('value', '')}"
                                    + (f"（{spec['type']['text']}）" if spec.get("type") else "")) if t)  # fmt: skip
    extra = tuple((zh, sections[code]) for code, _l, zh, _en in m.SECTIONS
                  if code not in ("diagnosis", "comments") and sections.get(code))  # fmt: skip
    document = ReportDocument(
        institution=name_of(centre.resource) if centre else "病理诊断中心",
        title="病理诊断报告" if loaded.case.kind == wf.ROUTINE else "术中冰冻病理诊断报告",
        patient=PatientInfo(name_of(patient), patient.get("gender"), _age(patient.get("birthDate"), now),
                            loaded.number),  # fmt: skip
        request=RequestInfo(question, _requester_org(repo, loaded.case.requester) or (name_of(req_org.resource)
                                                                                     if req_org else None),
                            name_of(requester.resource) if requester else None, loaded.requested_at),  # fmt: skip
        opinion=Opinion(sections.get("diagnosis", ""), None, None, sections.get("comments") or None),
        signers=(SignerInfo(name_of(pathologist.resource) if pathologist else ctx.user, _title(pathologist),
                            name_of(centre.resource) if centre else None),),  # fmt: skip
        extra_sections=extra,
    )
    issue_signed_report(repo, signer, report=stored, document=document, author_practitioner=ctx.practitioner or "",
                        username=ctx.user, now=now, base_url=base_url, amendment_reason=amendment,
                        doc_type=REPORT_DOC_TYPE)  # fmt: skip


def _requester_org(repo: Repository, practitioner: str) -> str | None:
    roles = find(repo, "PractitionerRole", [("practitioner", f"Practitioner/{practitioner}")], 1)
    if not roles:
        return None
    org = _read(repo, "Organization", m.ref_id(roles[0].resource.get("organization"), "Organization") or "")
    return name_of(org.resource) if org else None


def _title(practitioner: Stored | None) -> str | None:
    for q in (practitioner.resource if practitioner else {}).get("qualification", []):
        for c in (q.get("code") or {}).get("coding", []):
            if c.get("display"):
                return c["display"]
    return None


def _age(birth: str | None, now: datetime) -> int | None:
    if not birth or len(birth) < 10:
        return None
    b = date.fromisoformat(birth[:10])
    return now.year - b.year - ((now.month, now.day) < (b.month, b.day))


def acknowledge(repo: Repository, env: Env, ctx: AccessContext, cid: str,
                expected_version: int | None = None) -> Loaded:  # fmt: skip
    return act(repo, env, ctx, cid, "acknowledge", expected_version=expected_version)


def documents(repo: Repository, cid: str) -> list[dict]:
    """The case's current signed report documents (the PDF is in ``content[0].attachment``)."""
    try:
        return [s.resource for s in current_documents(repo, "DiagnosticReport", cid)]
    except TelemedError:
        return []


def pdf_of(repo: Repository, cid: str, doc_id: str) -> bytes:
    load(repo, cid)
    doc = repo.read("DocumentReference", doc_id).resource
    related = [r.get("reference", "") for r in (doc.get("context") or {}).get("related", [])]
    att = doc["content"][0]["attachment"]
    ours = any(r.startswith(f"DiagnosticReport/{cid}/") for r in related)
    if not ours or att.get("contentType") != "application/pdf":
        raise TelemedError(Category.NOT_FOUND, "No such report")
    return base64.b64decode(att["data"])


# Worklists and escalation ------------------------------------------------------------------------


def _open_tasks(repo: Repository, extra: list[tuple[str, str]]) -> list[Stored]:
    codes = ",".join(f"{m.KIND_SYSTEM}|{k}" for k in wf.KINDS)
    return find(repo, "Task", [("code", codes), *extra], 500)


def worklist(repo: Repository, now: datetime, *, states=wf.OPEN) -> list[Loaded]:
    """Open cases the caller sees, frozen sections first, then by deadline."""
    statuses = ",".join(sorted({m.TASK_STATUS[s] for s in states}))
    out = []
    for t in _open_tasks(repo, [("status", statuses)]):
        try:
            loaded = load(repo, t.resource["id"])
        except TelemedError:
            continue
        if loaded.case.state in states:
            out.append(loaded)
    far = datetime.max.replace(tzinfo=now.tzinfo)
    out.sort(key=lambda c: (c.case.kind != wf.FROZEN, c.deadline or far))
    return out


def requested_by(repo: Repository, practitioner: str) -> list[Loaded]:
    out = []
    for t in _open_tasks(repo, [("requester", f"Practitioner/{practitioner}"), ("_sort", "-_lastUpdated")]):
        try:
            out.append(load(repo, t.resource["id"]))
        except TelemedError:
            continue
    return out


def escalate_due(repo: Repository, env: Env, now: datetime | None = None) -> list[Notice]:
    """Raise every open frozen section to the level its time calls for (platform's repository);
    level 1 alerts every pathologist of the centre, level 2 and above the centre's duty line and
    the requester too."""
    now = now or env.clock.now()
    notices: list[Notice] = []
    for loaded in worklist(repo, now):
        c = loaded.case
        due = env.policy.escalation_level(c, loaded.requested_at, now)
        if due <= c.escalation:
            continue
        new = c
        while new.escalation < due:
            new = wf.apply(new, wf.Event("escalate", wf.SYSTEM))
        out = persist(repo, env, loaded, new, "escalate", "system", None)
        minutes = int(((loaded.deadline or now) - now).total_seconds() // 60)
        holder = (c.pathologist,) if c.pathologist else ()
        if due == 1:
            notices.append(Notice("due-soon", c.id, tuple(dict.fromkeys((*holder, *pathologists(repo, loaded.centre)))),
                                  text=str(minutes)))  # fmt: skip
        else:
            notices.append(Notice("overdue", c.id, tuple(dict.fromkeys((*holder, *pathologists(repo, loaded.centre),
                                                                        c.requester))),
                                  loaded.centre, text=str(-minutes)))  # fmt: skip
        out.notices = []
    return notices


# Notifications -----------------------------------------------------------------------------------

TEXTS = {
    "new": ("新的病理会诊申请", "病理会诊 {number} 已提交，请认领或分配。"),
    "new-frozen": ("【术中冰冻】新的冰冻会诊", "术中冰冻 {number} 已提交，请立即认领阅片（时限 {minutes} 分钟）。"),
    "assign": ("您有新的病理会诊任务", "您被分配为病理会诊 {number} 的诊断医师，请阅片。"),
    "released": ("病理会诊退回待认领", "病理会诊 {number} 已退回待认领，请重新分配。"),
    "preliminary": ("【术中冰冻】初步结果", "术中冰冻 {number} 初步结果：{text}（正式报告随后签发）"),
    "report-ready": ("病理报告已签发", "病理会诊 {number} 的报告已签发，请查看并确认。"),
    "amended": ("病理报告已修订", "病理会诊 {number} 的报告已修订：{text}"),
    "cancel": ("病理会诊已取消", "病理会诊 {number} 已取消：{text}"),
    "due-soon": ("【术中冰冻】即将超时", "术中冰冻 {number} 还剩 {text} 分钟，尚未发出结果，请尽快处理。"),
    "overdue": ("【术中冰冻】已超时", "术中冰冻 {number} 已超时 {text} 分钟，尚未发出结果，请立即处理。"),
}


def _contact(resource: dict) -> tuple[str | None, str | None]:
    email = phone = None
    for t in resource.get("telecom", []):
        if t.get("system") == "email" and not email:
            email = t.get("value")
        if t.get("system") in ("phone", "sms") and not phone:
            phone = t.get("value")
    return email, phone


def enqueue(repo: Repository, outbox: Outbox, notices: list[Notice], base_url: str, env: Env | None = None) -> int:
    """Queue the notices' portal notices, emails and text messages in the caller's transaction."""
    queued = 0
    minutes = int((env.policy if env else wf.Policy()).frozen.total_seconds() // 60)
    for n in notices:
        subject, body = TEXTS.get(n.kind, ("病理会诊通知", "病理会诊 {number} 有新的进展。"))
        number = n.case
        sr = _read(repo, "ServiceRequest", n.case)
        if sr is not None:
            number = sr.resource["identifier"][0]["value"]
        text = body.format(number=number, text=n.text or "", minutes=minutes)
        link = f"{base_url.rstrip('/')}/portal/pathology/cases/{n.case}"
        recipients: list[Recipient] = []
        for p in n.practitioners:
            res = _read(repo, "Practitioner", p)
            email, phone = _contact(res.resource) if res else (None, None)
            recipients.append(Recipient(p, name_of(res.resource) if res else p, email, phone))
        if n.organization:
            org = _read(repo, "Organization", n.organization)
            email, phone = _contact(org.resource) if org else (None, None)
            if email or phone:
                recipients.append(Recipient(None, name_of(org.resource), email, phone))
        recipients += [Recipient(None, phone, None, phone) for phone in n.phones if phone]
        for r in recipients:
            outbox.enqueue(repo.conn, Notification(f"pathology.{n.kind}", r, subject, text, link))
            queued += 1
    return queued
