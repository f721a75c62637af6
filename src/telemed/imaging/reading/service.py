"""Remote imaging readings: request, arrival of the images, claim, report, signing,
acknowledgement and amendment, as functions of (repository, environment, caller, input).

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
from telemed.imaging.reading import model as m
from telemed.imaging.reading import templates
from telemed.imaging.reading import workflow as wf
from telemed.kernel.errors import Category, Issue, TelemedError
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
REPORT_DOC_TYPE = {"coding": [m.IMAGING_STUDY_CODE], "text": "Imaging report"}


@dataclass
class Env:
    clock: object  # telemed.kernel.clock.Clock
    ids: Callable[[], str]
    policy: wf.Policy = field(default_factory=wf.Policy)


@dataclass(frozen=True)
class Notice:
    """Someone must hear about a step: practitioners by id, an institution's duty line."""

    kind: str
    reading: str
    practitioners: tuple[str, ...] = ()
    organization: str | None = None
    text: str | None = None


@dataclass
class Loaded:
    reading: wf.Reading
    request: Stored
    task: Stored
    report: Stored | None = None
    notices: list[Notice] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.reading.id

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
    def study(self) -> str | None:
        return next((i for i in (m.ref_id(s, "ImagingStudy") for s in self.request.resource.get("supportingInfo", []))
                     if i), None)  # fmt: skip

    @property
    def study_uid(self) -> str:
        return (m.ext_value(self.request.resource, m.STUDY_UID_URL) or "").removeprefix("urn:oid:")

    @property
    def modality(self) -> str:
        return m.task_inputs(self.task.resource).get("modality", "OT")

    @property
    def body_part(self) -> str:
        value = m.task_inputs(self.task.resource).get("body-part", "")
        return "" if value == "-" else value

    @property
    def requested_at(self) -> datetime | None:
        return m.parse_dt(self.request.resource.get("authoredOn"))

    @property
    def deadline(self) -> datetime | None:
        return m.parse_dt(((self.task.resource.get("restriction") or {}).get("period") or {}).get("end"))

    @property
    def version(self) -> int:
        return self.task.version_id


@dataclass
class RequestForm:
    centre: str
    priority: str = wf.ROUTINE
    study: str | None = None  # an ImagingStudy id the requester sees
    study_uid: str | None = None  # or the Study Instance UID of images still on their way
    patient: str | None = None  # required with study_uid alone
    modality: str = ""  # default: the study's
    body_part: str = ""  # default: the study's
    question: str = ""
    history: str = ""


def actor_of(ctx: AccessContext) -> wf.Actor:
    if ctx.user == "system" and "system/*.*" in ctx.scopes:
        return wf.SYSTEM
    return wf.Actor(ctx.user, frozenset(ctx.roles), ctx.practitioner)


def incorrect(message: str, where: str) -> TelemedError:
    return TelemedError(Category.UNPROCESSABLE, message, [Issue(message, "invalid", where)])


def find(repo: Repository, rt: str, params: list[tuple[str, str]], count: int = 200) -> list[Stored]:
    return searching.search(repo, parse(rt, [*params, ("_count", str(count))]), "").matches


def read(repo: Repository, rt: str, id_: str) -> Stored | None:
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


def study_by_uid(repo: Repository, uid: str) -> Stored | None:
    found = find(repo, "ImagingStudy", [("identifier", f"urn:dicom:uid|urn:oid:{uid}")], 1)
    return found[0] if found else None


# The directory ----------------------------------------------------------------------------------


def centres(repo: Repository) -> list[dict]:
    """Institutions that read images for others (Organization.type imaging-centre)."""
    return [s.resource for s in find(repo, "Organization", [("type", f"{m.ORG_TYPE_SYSTEM}|{m.READING_CENTRE}")])]


def radiologists(repo: Repository, centre: str) -> list[str]:
    """Practitioner ids of the centre's radiologists (PractitionerRole code radiologist)."""
    roles = find(repo, "PractitionerRole", [("organization", f"Organization/{centre}"),
                                            ("role", f"{m.ROLE_SYSTEM}|radiologist"), ("active", "true")])  # fmt: skip
    return sorted({p for p in (m.ref_id(r.resource.get("practitioner"), "Practitioner") for r in roles) if p})


# Request and arrival -----------------------------------------------------------------------------


def request_reading(repo: Repository, env: Env, ctx: AccessContext, form: RequestForm) -> Loaded:
    """A county hospital asks the centre to read a study. With the study here, the reading goes on
    the centre's worklist at once; otherwise it waits for the images (:func:`match_arrivals`)."""
    if not ctx.practitioner or "requesting-doctor" not in ctx.roles:
        raise TelemedError(Category.FORBIDDEN, "Only a requesting doctor can request a remote reading")
    if form.priority not in wf.PRIORITIES:
        raise incorrect("The priority is routine, urgent or stat", "priority")
    if len(form.question) > MAX_TEXT or len(form.history) > MAX_TEXT:
        raise incorrect(f"A field is longer than {MAX_TEXT} characters", "question")
    if form.centre not in {c["id"] for c in centres(repo)}:
        raise incorrect("Choose a reading centre", "centre")
    study: Stored | None = None
    uid = (form.study_uid or "").strip()
    if form.study:
        study = read(repo, "ImagingStudy", form.study)
        if study is None:
            raise incorrect(f"No study {form.study}", "study")
        uid = m.study_uid(study.resource) or ""
    elif uid:
        if len(uid) > 64 or not all(p.isdigit() for p in uid.split(".")):
            raise incorrect("A Study Instance UID is digits separated by dots (at most 64 characters)", "study_uid")
        study = study_by_uid(repo, uid)
    else:
        raise incorrect("Choose a study (or give the Study Instance UID of images on their way)", "study")
    patient = m.ref_id(study.resource.get("subject"), "Patient") if study else form.patient
    if not patient or read(repo, "Patient", patient) is None:
        raise incorrect("Choose the patient of the study", "patient")
    if study and form.patient and form.patient != patient:
        raise incorrect("The study belongs to another patient", "study")
    modality = (form.modality or (m.study_modality(study.resource) if study else "") or "OT").upper()[:16]
    body_part = (form.body_part or (m.study_body_part(study.resource) if study else "")).upper()[:64]
    now = env.clock.now()
    rid = env.ids()
    number = f"YX{now:%Y%m%d}-{rid[-6:].upper()}"
    repo.update("ServiceRequest", rid, m.service_request(
        rid, priority=form.priority, patient=patient, requester=ctx.practitioner, centre=form.centre, number=number,
        uid=uid, study=study.resource["id"] if study else None, modality=modality, body_part=body_part,
        question=form.question.strip(), history=form.history.strip(), now=now))  # fmt: skip
    reading = wf.Reading(rid, form.priority, ctx.practitioner)
    repo.update("Task", rid, m.task(reading, patient=patient, centre=form.centre, now=now, deadline=None,
                                    modality=modality, body_part=body_part, event="request", actor=ctx.user,
                                    reason=None, previous=None))  # fmt: skip
    loaded = load(repo, rid)
    if study:
        loaded = _arrive(repo, env, loaded, study)
    return loaded


def _arrive(repo: Repository, env: Env, loaded: Loaded, study: Stored) -> Loaded:
    new = wf.apply(loaded.reading, wf.Event("arrive", wf.SYSTEM))
    out = persist(repo, env, loaded, new, "arrive", "system", None, study=study.resource["id"])
    out.notices = [Notice("new-" + new.priority, new.id, tuple(radiologists(repo, out.centre)),
                          out.centre if new.priority == wf.STAT else None)]  # fmt: skip
    return out


def match_arrivals(repo: Repository, env: Env) -> list[Loaded]:
    """Readings waiting for their images whose study is now stored go on the worklist (run with the
    platform's repository: by the DICOM service after a C-STORE, and by the background watcher)."""
    out = []
    for t in find(repo, "Task", [("code", f"{m.READING_SYSTEM}|imaging-reading"), ("status", "on-hold")], 500):
        try:
            loaded = load(repo, t.resource["id"])
        except TelemedError:
            continue
        if loaded.reading.state != wf.AWAITING or not loaded.study_uid:
            continue
        study = study_by_uid(repo, loaded.study_uid)
        if study is not None:
            out.append(_arrive(repo, env, loaded, study))
    return out


# Loading and steps -------------------------------------------------------------------------------


def load(repo: Repository, rid: str) -> Loaded:
    """The reading as the workflow sees it; another institution's reading is a 404 like a missing one."""
    sr, task = read(repo, "ServiceRequest", rid), read(repo, "Task", rid)
    if sr is None or task is None or m.READING_URL not in {e.get("url") for e in task.resource.get("extension", [])}:
        raise TelemedError(Category.NOT_FOUND, f"No imaging reading {rid!r}")
    return Loaded(m.reading_of(task.resource), sr, task, read(repo, "DiagnosticReport", rid))


def _check_version(loaded: Loaded, expected: int | None) -> None:
    if expected is not None and int(expected) != loaded.version:
        raise TelemedError(Category.CONFLICT, "The reading was changed by someone else in the meantime; reload it",
                           [Issue("changed", "conflict", "version")])  # fmt: skip


def act(repo: Repository, env: Env, ctx: AccessContext, rid: str, event: str, *, reason: str | None = None,
        expected_version: int | None = None) -> Loaded:  # fmt: skip
    """Send one workflow event and write what reflects it; a refused event is a 409 (or 403)."""
    loaded = load(repo, rid)
    _check_version(loaded, expected_version)
    reason = (reason or "").strip() or None
    if event == "claim" and ctx.practitioner not in radiologists(repo, loaded.centre):
        raise TelemedError(Category.FORBIDDEN, "Only a radiologist of the reading centre can claim this study")
    try:
        new = wf.apply(loaded.reading, wf.Event(event, actor_of(ctx), reason=reason))
    except wf.IllegalTransition as exc:
        category = Category.FORBIDDEN if exc.code == "forbidden" else Category.CONFLICT
        raise TelemedError(category, exc.reason, [Issue(exc.reason, "business-rule", event)]) from None
    return persist(repo, env, loaded, new, event, ctx.user, reason)


def persist(repo: Repository, env: Env, loaded: Loaded, new: wf.Reading, event: str, actor: str,
            reason: str | None, study: str | None = None) -> Loaded:  # fmt: skip
    now = env.clock.now()
    deadline = loaded.deadline
    if event == "arrive":
        deadline = env.policy.deadline(new.priority, now)
    task = m.task(new, patient=loaded.patient, centre=loaded.centre, now=now, deadline=deadline,
                  modality=loaded.modality, body_part=loaded.body_part, event=event, actor=actor, reason=reason,
                  previous=loaded.task.resource)  # fmt: skip
    if event == "claim":
        task["executionPeriod"] = {"start": m.iso(now)}
    if new.state in (wf.REPORTED, wf.CANCELLED) and event != "amend":
        period = dict(task.get("executionPeriod") or {"start": m.iso(now)})
        period["end"] = m.iso(now)
        task["executionPeriod"] = period
    try:  # two radiologists claiming at once: both wrote If-Match n, the store lets one through
        repo.update("Task", new.id, task, if_match=loaded.task.etag)
    except TelemedError as exc:
        if exc.category is Category.PRECONDITION_FAILED:
            raise TelemedError(Category.CONFLICT, "Someone else changed this reading first (already claimed?)",
                               [Issue("changed", "conflict", event)]) from None  # fmt: skip
        raise
    sr = m.service_request_for(loaded.request.resource, new, loaded.centre, study or loaded.study)
    if sr != {k: v for k, v in loaded.request.resource.items() if k != "meta"}:
        repo.update("ServiceRequest", new.id, sr)
    out = load(repo, new.id)
    out.notices = _notices(loaded, new, event, reason)
    return out


def _notices(loaded: Loaded, new: wf.Reading, event: str, reason: str | None) -> list[Notice]:
    if event in ("sign", "amend"):
        return [Notice("report-ready" if event == "sign" else "amended", new.id, (new.requester,), text=reason)]
    if event == "cancel":
        return [Notice("cancel", new.id, tuple(p for p in (new.requester, loaded.reading.radiologist) if p),
                       text=reason)]  # fmt: skip
    if event == "release":
        return [Notice("released", new.id, (), loaded.centre)]
    return []


# The report --------------------------------------------------------------------------------------


def clean_sections(sections: dict[str, str]) -> dict[str, str]:
    unknown = set(sections) - set(templates.SECTIONS)
    if unknown:
        raise incorrect(f"Unknown report section(s): {', '.join(sorted(unknown))}", "sections")
    out = {k: (v or "").strip() for k, v in sections.items()}
    if any(len(v) > MAX_TEXT for v in out.values()):
        raise incorrect(f"A section is longer than {MAX_TEXT} characters", "sections")
    return out


def save_report(repo: Repository, env: Env, ctx: AccessContext, rid: str, sections: dict[str, str],
                expected_version: int | None = None) -> Loaded:  # fmt: skip
    """The radiologist holding the reading writes (or rewrites) the report draft."""
    sections = clean_sections(sections)
    if not any(sections.values()):
        raise incorrect("The report is empty", "findings")
    loaded = load(repo, rid)
    if loaded.reading.state == wf.CLAIMED:
        loaded = act(repo, env, ctx, rid, "draft", expected_version=expected_version)
    else:
        _check_version(loaded, expected_version)
        if not wf.may(loaded.reading, "draft", actor_of(ctx)):
            raise TelemedError(Category.FORBIDDEN, "Only the radiologist holding the reading writes its report")
    template = templates.for_modality(loaded.modality).code
    dr = m.diagnostic_report(rid, patient=loaded.patient, radiologist=ctx.practitioner or "", sections=sections,
                             status="preliminary", study=loaded.study, template=template,
                             now=env.clock.now())  # fmt: skip
    loaded.report = repo.update("DiagnosticReport", rid, dr)
    return loaded


def _require_signable(sections: dict[str, str]) -> None:
    if not sections.get("findings") or not sections.get("impression") or sections["impression"] in ("1.",):
        raise incorrect("A signed report has findings and an impression", "impression")


def sign_report(repo: Repository, env: Env, ctx: AccessContext, rid: str, *, signer: Signer, base_url: str,
                expected_version: int | None = None) -> Loaded:  # fmt: skip
    """Sign the drafted report: DiagnosticReport final, Provenance and the PDF (telemed.reports)."""
    loaded = load(repo, rid)
    if loaded.report is None or loaded.report.resource.get("status") != "preliminary":
        raise TelemedError(Category.CONFLICT, "Write the report before signing it")
    _require_signable(m.sections_of(loaded.report.resource))
    loaded = act(repo, env, ctx, rid, "sign", expected_version=expected_version)
    _issue(repo, env, ctx, loaded, dict(loaded.report.resource, status="final"), signer, base_url, None)
    return loaded


def amend_report(repo: Repository, env: Env, ctx: AccessContext, rid: str, sections: dict[str, str], reason: str,
                 *, signer: Signer, base_url: str) -> Loaded:  # fmt: skip
    """A signed report changes only as an amendment with its reason: a new signed version whose PDF
    supersedes the earlier one."""
    sections = clean_sections(sections)
    _require_signable(sections)
    loaded = act(repo, env, ctx, rid, "amend", reason=reason)
    template = templates.for_modality(loaded.modality).code
    dr = m.diagnostic_report(rid, patient=loaded.patient, radiologist=ctx.practitioner or "", sections=sections,
                             status="amended", study=loaded.study, template=template, now=env.clock.now())  # fmt: skip
    _issue(repo, env, ctx, loaded, dr, signer, base_url, (reason or "").strip())
    return loaded


def _issue(repo, env, ctx, loaded: Loaded, report: dict, signer: Signer, base_url: str, amendment: str | None):
    now = env.clock.now()
    report.pop("meta", None)
    report["issued"] = m.iso(now)
    stored = repo.update("DiagnosticReport", loaded.id, report)
    loaded.report = stored
    sections = m.sections_of(report)
    patient = repo.read("Patient", loaded.patient).resource
    radiologist = read(repo, "Practitioner", ctx.practitioner or "")
    requester = read(repo, "Practitioner", loaded.reading.requester)
    centre = read(repo, "Organization", loaded.centre)
    sr = loaded.request.resource
    question = "；".join(t for t in (
        f"{loaded.modality} {loaded.body_part}".strip(), m.PRIORITY_NAMES[loaded.reading.priority][0],
        (sr.get("reasonCode") or [{}])[0].get("text", ""), f"Study UID {loaded.study_uid}") if t)  # fmt: skip
    extra = tuple((zh, sections[code]) for code, _l, zh, _en in templates.SECTION_INFO
                  if code in ("technique", "findings") and sections.get(code))  # fmt: skip
    document = ReportDocument(
        institution=name_of(centre.resource) if centre else "影像诊断中心",
        title="影像诊断报告",
        patient=PatientInfo(name_of(patient), patient.get("gender"), _age(patient.get("birthDate"), now),
                            loaded.number),  # fmt: skip
        request=RequestInfo(question, _org_of(repo, loaded.reading.requester),
                            name_of(requester.resource) if requester else None, loaded.requested_at),  # fmt: skip
        opinion=Opinion(sections.get("impression", ""), sections.get("recommendation") or None),
        signers=(SignerInfo(name_of(radiologist.resource) if radiologist else ctx.user, _title(radiologist),
                            name_of(centre.resource) if centre else None),),  # fmt: skip
        extra_sections=extra,
    )
    issue_signed_report(repo, signer, report=stored, document=document, author_practitioner=ctx.practitioner or "",
                        username=ctx.user, now=now, base_url=base_url, amendment_reason=amendment,
                        doc_type=REPORT_DOC_TYPE)  # fmt: skip


def _org_of(repo: Repository, practitioner: str) -> str | None:
    roles = find(repo, "PractitionerRole", [("practitioner", f"Practitioner/{practitioner}")], 1)
    if not roles:
        return None
    org = read(repo, "Organization", m.ref_id(roles[0].resource.get("organization"), "Organization") or "")
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


def acknowledge(repo: Repository, env: Env, ctx: AccessContext, rid: str,
                expected_version: int | None = None) -> Loaded:  # fmt: skip
    return act(repo, env, ctx, rid, "acknowledge", expected_version=expected_version)


def documents(repo: Repository, rid: str) -> list[dict]:
    """The reading's current signed report documents (the PDF is in ``content[0].attachment``)."""
    try:
        return [s.resource for s in current_documents(repo, "DiagnosticReport", rid)]
    except TelemedError:
        return []


def pdf_of(repo: Repository, rid: str, doc_id: str) -> bytes:
    load(repo, rid)
    doc = repo.read("DocumentReference", doc_id).resource
    related = [r.get("reference", "") for r in (doc.get("context") or {}).get("related", [])]
    att = doc["content"][0]["attachment"]
    ours = any(r.startswith(f"DiagnosticReport/{rid}/") for r in related)
    if not ours or att.get("contentType") != "application/pdf":
        raise TelemedError(Category.NOT_FOUND, "No such report")
    return base64.b64decode(att["data"])


# Worklists ---------------------------------------------------------------------------------------


def _tasks(repo: Repository, extra: list[tuple[str, str]]) -> list[Stored]:
    return find(repo, "Task", [("code", f"{m.READING_SYSTEM}|imaging-reading"), *extra], 500)


def worklist(repo: Repository, now: datetime, *, modality: str = "", body_part: str = "",
             states=wf.WORKLIST) -> list[Loaded]:  # fmt: skip
    """Readings on the worklist the caller sees (a centre's radiologists: those sent to their
    centre), stat first, then urgent, then by deadline; optionally of one modality / body part."""
    statuses = ",".join(sorted({m.TASK_STATUS[s] for s in states}))
    out = []
    for t in _tasks(repo, [("status", statuses)]):
        try:
            loaded = load(repo, t.resource["id"])
        except TelemedError:
            continue
        if loaded.reading.state not in states:
            continue
        if modality and loaded.modality != modality.upper():
            continue
        if body_part and loaded.body_part != body_part.upper():
            continue
        out.append(loaded)
    far = datetime.max.replace(tzinfo=now.tzinfo)
    out.sort(key=lambda x: (wf.PRIORITIES.index(x.reading.priority), x.deadline or far))
    return out


def requested_by(repo: Repository, practitioner: str) -> list[Loaded]:
    out = []
    for t in _tasks(repo, [("requester", f"Practitioner/{practitioner}"), ("_sort", "-_lastUpdated")]):
        try:
            out.append(load(repo, t.resource["id"]))
        except TelemedError:
            continue
    return out
