"""Teleconsultation use cases: functions of (repository, environment, caller, input).

No HTTP and no SQL here: every read and write goes through the caller's FHIR repository, so the
store's access rules, validation and audit apply to the workflow exactly as to any FHIR client,
and the caller's unit of work makes each step all-or-nothing (a transition writes the Task, the
ServiceRequest, the expert tasks, the appointment and the notification outbox together).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from telemed.consultation import availability, model
from telemed.consultation import workflow as wf
from telemed.consultation.lookup import find, read_if_exists
from telemed.consultation.sla import SlaPolicy
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository, Stored
from telemed.kernel.errors import Category, Issue, TelemedError


@dataclass
class Env:
    """What the use cases need besides the repository (injected: tests pass their own clock)."""

    clock: object  # telemed.kernel.clock.Clock
    ids: Callable[[], str]
    sla: SlaPolicy = field(default_factory=SlaPolicy)
    session_minutes: int = 30


@dataclass(frozen=True)
class Notice:
    """Someone must hear about a step: practitioners by id, or a role at an institution."""

    kind: str  # the event, or "report-ready" / "overdue"
    consultation: str
    practitioners: tuple[str, ...] = ()
    role: str | None = None
    organization: str | None = None
    reason: str | None = None


@dataclass
class Loaded:
    consultation: wf.Consultation
    request: Stored
    task: Stored
    experts: dict[str, Stored]
    appointment: Stored | None = None
    encounter: Stored | None = None
    notices: list[Notice] = field(default_factory=list)

    @property
    def patient(self) -> str:
        return model.ref_id(self.request.resource.get("subject"), "Patient") or ""

    @property
    def centre(self) -> str | None:
        for ext in self.request.resource.get("extension", []):
            if ext.get("url") == CENTRE_URL:
                return model.ref_id(ext.get("valueReference"), "Organization")
        return None

    @property
    def submitted_at(self) -> datetime | None:
        return model.parse_dt((self.task.resource.get("executionPeriod") or {}).get("start"))

    @property
    def deadline(self) -> datetime | None:
        return model.parse_dt(((self.task.resource.get("restriction") or {}).get("period") or {}).get("end"))

    @property
    def version(self) -> int:
        return self.task.version_id


CENTRE_URL = f"{model.BASE}/StructureDefinition/target-centre"
MAX_TEXT = 20_000


def actor_of(ctx: AccessContext) -> wf.Actor:
    if ctx.user == "system" and "system/*.*" in ctx.scopes:
        return wf.SYSTEM  # the platform's own jobs (archiving, the demo loader)
    return wf.Actor(ctx.user, frozenset(ctx.roles), ctx.practitioner)


# Loading -----------------------------------------------------------------------------------------


def load(repo: Repository, cid: str) -> Loaded:
    """The consultation as the workflow sees it, rebuilt from its FHIR resources.

    Not visible to the caller (another institution's, or an expert not assigned) is a 404, the
    same as a consultation that does not exist."""
    try:
        sr = repo.read("ServiceRequest", cid)
        task = repo.read("Task", cid)
    except TelemedError as exc:
        if exc.category in (Category.NOT_FOUND, Category.GONE):
            raise TelemedError(Category.NOT_FOUND, f"No consultation {cid!r}") from None
        raise
    experts: dict[str, Stored] = {}
    team: list[wf.Expert] = []
    for st in sorted(find(repo, "Task", [("part-of", f"Task/{cid}")]), key=lambda s: s.resource.get("authoredOn", "")):
        r = st.resource
        practitioner = model.ref_id(r.get("owner"), "Practitioner")
        if not practitioner or r.get("status") == "cancelled":
            continue
        experts[practitioner] = st
        external = any(i.get("valueBoolean") for i in r.get("input", []))
        state = model.EXPERT_STATE.get(r["status"], wf.EXPERT_ASSIGNED)
        team.append(wf.Expert(practitioner, state, external, (r.get("statusReason") or {}).get("text")))
    state = task.resource["businessStatus"]["coding"][0]["code"]
    appointment = read_if_exists(repo, "Appointment", cid)
    encounter = read_if_exists(repo, "Encounter", cid)
    room = next((i["value"] for i in (encounter.resource.get("identifier", []) if encounter else [])
                 if i.get("system") == model.ROOM_SYSTEM), None)  # fmt: skip
    signed = next((o.get("valueInteger", 0) for o in task.resource.get("output", [])), 0)
    c = wf.Consultation(
        id=cid,
        kind=model.kind_of(sr.resource),
        requester=model.ref_id(sr.resource.get("requester"), "Practitioner") or "",
        state=state,
        experts=tuple(team),
        scheduled_start=model.parse_dt(appointment.resource.get("start")) if appointment else None,
        room=room,
        signed_versions=signed,
    )
    return Loaded(c, sr, task, experts, appointment, encounter)


def find_centre(repo: Repository, organization: str | None) -> str | None:
    """The telemedicine centre that serves ``organization``: the nearest centre found walking up
    the tiers (a county hospital asks its city's sub-centre when there is one, else the province)."""
    seen: set[str] = set()
    org = organization
    while org and org not in seen:
        seen.add(org)
        hits = find(repo, "Organization", [("partof", f"Organization/{org}"),
                                              ("type", f"{model.ORG_TYPE_SYSTEM}|{model.CENTRE_TYPE}")], 1)  # fmt: skip
        if hits:
            return hits[0].resource["id"]
        current = read_if_exists(repo, "Organization", org)
        org = model.ref_id((current.resource if current else {}).get("partOf"), "Organization")
    return None


# Requests ----------------------------------------------------------------------------------------


def missing_items(repo: Repository, details: model.RequestDetails, has_consent: bool) -> list[Issue]:
    """What the 2018 rules require of an invitation and this one lacks (codes the portal translates)."""
    problems = []

    def need(ok: bool, code: str, message: str) -> None:
        if not ok:
            problems.append(Issue(message, "required", code))

    need(bool(details.patient), "patient", "Choose the patient")
    need(bool(details.purpose.strip()), "purpose", "State the purpose of the consultation")
    need(bool(details.summary.strip()), "summary", "Give a summary of the medical record")
    need(details.requested_time is not None, "requested-time", "Give the requested time")
    need(has_consent, "consent", "Record the patient's informed consent")
    need(bool(details.specialty or details.preferred_experts), "specialty", "Choose a specialty or an expert")
    for text in (details.purpose, details.summary, details.question):
        if len(text) > MAX_TEXT:
            problems.append(Issue(f"A text is longer than {MAX_TEXT} characters", "too-long", "text"))
    return problems


def _consultation_id(user: str, key: str | None, ids: Callable[[], str]) -> str:
    # A double-clicked submit repeats the same idempotency key: the same id, so one request.
    if key:
        return "c" + hashlib.sha256(f"{user}\n{key}".encode()).hexdigest()[:24]
    return ids()


def create(
    repo: Repository, env: Env, ctx: AccessContext, details: model.RequestDetails, idempotency_key: str | None = None
) -> Loaded:
    """A draft request (ServiceRequest + Task + Consent). Repeating an idempotency key returns the
    request the first call created."""
    if not ctx.practitioner:
        raise TelemedError(Category.FORBIDDEN, "Only a doctor with a practitioner record can request a consultation")
    if details.kind not in wf.KINDS:
        raise TelemedError(Category.INCORRECT, f"Unknown consultation kind {details.kind!r}")
    cid = _consultation_id(ctx.user, idempotency_key, env.ids)
    if repo.exists("ServiceRequest", cid):
        return load(repo, cid)
    repo.read("Patient", details.patient)  # 404 unless the caller may see the patient
    now = env.clock.now()
    number = f"HZ{now:%Y%m%d}-{cid[-6:].upper()}"
    consent_id = None
    if details.consent_attachment or details.consent_verbal_by:
        consent_id = cid
        repo.update("Consent", cid, model.consent(cid, details.patient, ctx.organization, now, details))
    sr = model.service_request(cid, details, requester=ctx.practitioner, number=number, now=now,
                               idempotency_key=idempotency_key, consent_id=consent_id)  # fmt: skip
    centre = find_centre(repo, ctx.organization)
    if centre:
        sr.setdefault("extension", []).append({"url": CENTRE_URL, "valueReference": model.ref("Organization", centre)})
    repo.update("ServiceRequest", cid, sr)
    c = wf.Consultation(cid, details.kind, ctx.practitioner)
    repo.update("Task", cid, model.task(c, patient=details.patient, centre=centre, now=now, deadline=None, last=None))
    return load(repo, cid)


def update_draft(
    repo: Repository, env: Env, ctx: AccessContext, cid: str, details: model.RequestDetails, expected_version: int
) -> Loaded:
    """Edit a draft or a returned request (the requester only)."""
    loaded = load(repo, cid)
    c = loaded.consultation
    if ctx.practitioner != c.requester:
        raise TelemedError(Category.FORBIDDEN, "Only the requesting doctor can edit the request")
    if c.state not in (wf.DRAFT, wf.RETURNED):
        raise TelemedError(Category.CONFLICT, f"The request can no longer be edited (it is {c.state})")
    _check_version(loaded, expected_version)
    if details.patient != loaded.patient:
        repo.read("Patient", details.patient)
    now = env.clock.now()
    details.kind = c.kind  # the kind is chosen once; a new kind is a new request
    consent_id = model.ref_id(next((s for s in loaded.request.resource.get("supportingInfo", [])
                                    if s.get("reference", "").startswith("Consent/")), None), "Consent")  # fmt: skip
    if details.consent_attachment or details.consent_verbal_by:
        consent_id = cid
        repo.update("Consent", cid, model.consent(cid, details.patient, ctx.organization, now, details))
    old = loaded.request.resource
    sr = model.service_request(cid, details, requester=c.requester, number=old["identifier"][0]["value"], now=now,
                               consent_id=consent_id)  # fmt: skip
    sr["identifier"] = old["identifier"]
    sr["authoredOn"] = old["authoredOn"]
    sr["status"] = old["status"]
    sr["extension"] = [e for e in old.get("extension", []) if e.get("url") == CENTRE_URL] + sr.get("extension", [])
    if "performer" in old:
        sr["performer"] = old["performer"]
    repo.update("ServiceRequest", cid, sr, if_match=loaded.request.etag)
    # A new Task version marks the edit, so the edit conflicts with a concurrent transition.
    repo.update("Task", cid, untracked_version(loaded.task.resource, now), if_match=loaded.task.etag)
    return load(repo, cid)


def untracked_version(task: dict, now: datetime) -> dict:
    """A Task version that records no workflow step (an edit, a rating): not part of the timeline."""
    out = {**task, "lastModified": model.iso(now)}
    out["extension"] = [e for e in task.get("extension", []) if e.get("url") != model.TRANSITION_URL]
    if not out["extension"]:
        del out["extension"]
    return out


MIN_YEARS_TO_CONSULT = 3  # 远程医疗服务管理规范（试行）2018: consultants have at least 3 years of practice


def years_in_practice(practitioner: dict, now: datetime) -> int | None:
    """Whole years since the earliest qualification's start, or None when no date is recorded."""
    starts = [model.parse_dt((q.get("period") or {}).get("start")) for q in practitioner.get("qualification", [])]
    starts = [s for s in starts if s is not None]
    if not starts:
        return None
    first = min(starts)
    if first.tzinfo is None:
        first = first.replace(tzinfo=now.tzinfo)
    return int((now - first).days // 365.25)


def _check_version(loaded: Loaded, expected: int | None) -> None:
    if expected is not None and int(expected) != loaded.version:
        raise TelemedError(
            Category.CONFLICT,
            "The consultation was changed by someone else in the meantime; reload it to see the change",
            [Issue("changed", "conflict", "version")],
        )


def has_consent(repo: Repository, loaded: Loaded) -> bool:
    for s in loaded.request.resource.get("supportingInfo", []):
        cid = model.ref_id(s, "Consent")
        if cid:
            consent = read_if_exists(repo, "Consent", cid)
            if consent and consent.resource.get("status") == "active":
                return True
    return False


# Transitions -------------------------------------------------------------------------------------


def act(
    repo: Repository,
    env: Env,
    ctx: AccessContext,
    cid: str,
    event: str,
    *,
    expected_version: int | None = None,
    reason: str | None = None,
    experts: tuple[str, ...] = (),
    external: tuple[str, ...] = (),
    start: datetime | None = None,
    room: str | None = None,
    slot: str | None = None,
) -> Loaded:
    """Send one workflow event; every resource that reflects the new state is written with it.

    An event the workflow refuses is a 409 (or 403) with the reason; a stale ``expected_version``
    (someone else acted first) is a 409 asking to reload."""
    loaded = load(repo, cid)
    _check_version(loaded, expected_version)
    c = loaded.consultation
    now = env.clock.now()
    if event == "submit":
        problems = missing_items(repo, model.details_of(loaded.request.resource), has_consent(repo, loaded))
        if problems:
            raise TelemedError(Category.UNPROCESSABLE, "The request is incomplete", problems)
    if event == "assign":
        # An expert invited from outside the network stays external when a re-triage keeps them.
        external = (*external, *(e.practitioner for e in c.experts if e.external and e.practitioner in experts))
        for p in experts:
            practitioner = repo.read("Practitioner", p).resource  # unknown: a 404, not a dangling reference
            years = years_in_practice(practitioner, now)
            if years is not None and years < MIN_YEARS_TO_CONSULT and p not in external:
                raise TelemedError(Category.UNPROCESSABLE, "An expert needs at least 3 years of practice (2018 rules)",
                                   [Issue(f"Practitioner/{p}: {years} years", "business-rule", "experts")])  # fmt: skip
    booked = None
    if event == "schedule" and slot:
        booked = availability.book(repo, slot)  # in this unit of work: booked iff scheduled
        start = model.parse_dt(booked["start"])
    if event == "schedule" and not room:
        room = f"room-{cid[-8:]}-{int(now.timestamp()) % 100000}"
    ev = wf.Event(event, actor_of(ctx), now, reason=(reason or "").strip() or None, experts=tuple(experts),
                  external=tuple(external), start=start, room=room)  # fmt: skip
    try:
        new = wf.apply(c, ev)
    except wf.IllegalTransition as exc:
        category = Category.FORBIDDEN if exc.code == "forbidden" else Category.CONFLICT
        raise TelemedError(category, exc.reason, [Issue(exc.reason, "business-rule", event)]) from None
    out = persist(repo, env, loaded, new, now)
    if booked is not None and out.appointment is not None:
        app = {**out.appointment.resource, "slot": [model.ref("Slot", booked["id"])]}
        out.appointment = repo.update("Appointment", cid, app)
    return out


def persist(repo: Repository, env: Env, loaded: Loaded, new: wf.Consultation, now: datetime) -> Loaded:
    old = loaded.consultation
    last = new.history[-1] if new.history else None
    cid = new.id
    patient = loaded.patient
    centre = loaded.centre
    submitted_at = loaded.submitted_at or (now if new.state == wf.SUBMITTED else None)
    task = model.task(new, patient=patient, centre=centre, now=now, deadline=env.sla.deadline(new, submitted_at),
                      last=last, previous=loaded.task.resource)  # fmt: skip
    if submitted_at:
        period = {"start": model.iso(submitted_at)}
        if new.state in (wf.CONCLUDED, wf.ACKNOWLEDGED, wf.ARCHIVED, wf.CANCELLED):
            period["end"] = (task.get("executionPeriod") or {}).get("end") or model.iso(now)
        task["executionPeriod"] = period
    repo.update("Task", cid, task, if_match=loaded.task.etag)  # a concurrent step loses with 412 -> 409

    team = {e.practitioner: e for e in new.experts}
    for practitioner, e in team.items():
        prev = loaded.experts.get(practitioner)
        resource = model.expert_task(new, e, patient, now, prev.resource if prev else None)
        if prev is None or _content(resource, "lastModified") != _content(prev.resource, "lastModified"):
            repo.update("Task", resource["id"], resource)
    for practitioner, prev in loaded.experts.items():  # replaced by a re-triage
        if practitioner not in team and prev.resource["status"] not in ("rejected", "cancelled", "completed"):
            repo.update("Task", prev.resource["id"], {**prev.resource, "status": "cancelled",
                                                       "lastModified": model.iso(now)})  # fmt: skip

    if new.scheduled_start and (new.state != old.state or new.scheduled_start != old.scheduled_start):
        prev_app = loaded.appointment.resource if loaded.appointment else None
        repo.update("Appointment", cid, model.appointment(new, patient, env.session_minutes, prev_app))
    if new.room and (new.state != old.state or new.room != old.room):
        prev_enc = loaded.encounter.resource if loaded.encounter else None
        repo.update("Encounter", cid, model.encounter(new, patient, centre, prev_enc, now))
    elif new.state == wf.CANCELLED and loaded.appointment:
        repo.update("Appointment", cid, {**loaded.appointment.resource, "status": "cancelled"})

    # The ServiceRequest's performers decide who sees the patient: written last, so an expert who
    # declines (and loses access with it) can still record the rest of their step.
    sr = model.service_request_for_state(loaded.request.resource, new, centre)
    if _content(sr) != _content(loaded.request.resource):
        repo.update("ServiceRequest", cid, sr)
    try:
        out = load(repo, cid)
    except TelemedError as exc:
        if exc.category is not Category.NOT_FOUND:
            raise
        # The caller's own step closed the record to them (an expert who declined).
        out = Loaded(new, loaded.request, loaded.task, {})
    out.notices = notices_for(loaded, new, last)
    return out


def _content(resource: dict, *skip: str) -> dict:
    return {k: v for k, v in resource.items() if k != "meta" and k not in skip}


def notices_for(loaded: Loaded, new: wf.Consultation, last: wf.Transition | None) -> list[Notice]:
    """Who hears about a step (turned into portal, email and SMS messages by notifications.py)."""
    if last is None:
        return []
    cid, centre = new.id, loaded.centre
    experts = tuple(e.practitioner for e in new.active_experts)
    ev = last.event
    out: list[Notice] = []
    if ev == "submit":
        out.append(Notice(ev, cid, role="qc-officer", organization=centre))
    elif ev in ("return", "accept") or ev == "schedule":
        out.append(Notice(ev, cid, (new.requester,), reason=last.reason))
    if ev == "accept" or (ev == "decline" and new.state == wf.ACCEPTED):
        out.append(Notice(ev, cid, role="triage-officer", organization=centre, reason=last.reason))
    if ev == "assign":
        before = {e.practitioner for e in loaded.consultation.active_experts}
        out.append(Notice(ev, cid, tuple(p for p in experts if p not in before)))
    if ev == "schedule":
        out.append(Notice(ev, cid, experts))
    if ev == "sign" and new.state == wf.CONCLUDED or ev == "amend":
        out.append(Notice("report-ready", cid, (new.requester,), reason=last.reason))
    if ev in ("cancel", "withdraw"):
        out.append(Notice(ev, cid, (*experts, new.requester), role="triage-officer", organization=centre,
                          reason=last.reason))  # fmt: skip
    return out


# Opinions, messages, acknowledgement ---------------------------------------------------------------


def opinion_of(repo: Repository, cid: str, practitioner: str) -> Stored | None:
    return read_if_exists(repo, "Composition", model.expert_task_id(cid, practitioner))


def save_opinion(repo: Repository, env: Env, ctx: AccessContext, cid: str, sections: dict[str, str]) -> Loaded:
    """Write or rewrite the caller's draft opinion (only an assigned expert, before signing)."""
    loaded = load(repo, cid)
    me = loaded.consultation.expert(ctx.practitioner)
    if me is None:
        raise TelemedError(Category.FORBIDDEN, "Only an assigned expert can write an opinion")
    if not any((v or "").strip() for v in sections.values()):
        raise TelemedError(Category.UNPROCESSABLE, "The opinion is empty",
                           [Issue("Write the impression", "required", "impression")])  # fmt: skip
    if any(len(v or "") > MAX_TEXT for v in sections.values()):
        raise TelemedError(Category.UNPROCESSABLE, f"A section is longer than {MAX_TEXT} characters")
    now = env.clock.now()
    if me.state != wf.EXPERT_DRAFTING:
        loaded = act(repo, env, ctx, cid, "draft-opinion")
    comp = model.opinion(cid, ctx.practitioner, loaded.patient, sections, "preliminary", now, "远程会诊意见")
    repo.update("Composition", comp["id"], comp)
    return loaded


def post_message(repo: Repository, env: Env, ctx: AccessContext, cid: str, text: str) -> Stored:
    """A message in the consultation's conversation (R4 Communication), for all its participants."""
    loaded = load(repo, cid)
    text = (text or "").strip()
    if not text:
        raise TelemedError(Category.UNPROCESSABLE, "The message is empty")
    if len(text) > 4000:
        raise TelemedError(Category.UNPROCESSABLE, "The message is longer than 4000 characters")
    c = loaded.consultation
    recipients = [model.ref("Practitioner", p) for p in (c.requester, *[e.practitioner for e in c.active_experts])
                  if p and p != ctx.practitioner]  # fmt: skip
    comm = {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [model.ref("ServiceRequest", cid)],
        "partOf": [model.ref("Task", cid)],
        "subject": model.ref("Patient", loaded.patient),
        "sent": model.iso(env.clock.now()),
        "payload": [{"contentString": text}],
    }
    if ctx.practitioner:
        comm["sender"] = model.ref("Practitioner", ctx.practitioner)
    if recipients:
        comm["recipient"] = recipients
    comm["note"] = [{"authorString": ctx.user, "text": "portal"}]
    return repo.create("Communication", comm)


def messages(repo: Repository, cid: str) -> list[Stored]:
    return sorted(find(repo, "Communication", [("based-on", f"ServiceRequest/{cid}")]),
                  key=lambda s: s.resource.get("sent", ""))  # fmt: skip


def acknowledge(
    repo: Repository, env: Env, ctx: AccessContext, cid: str, rating: int | None, comment: str | None,
    expected_version: int | None = None,
) -> Loaded:  # fmt: skip
    """The requester confirms receipt of the report, with an optional satisfaction rating (1-5)."""
    if rating is not None and not 1 <= int(rating) <= 5:
        raise TelemedError(Category.UNPROCESSABLE, "The rating is from 1 to 5")
    loaded = act(repo, env, ctx, cid, "acknowledge", expected_version=expected_version, reason=comment)
    if rating is not None:
        task = untracked_version(loaded.task.resource, env.clock.now())
        task["extension"] = [e for e in task.get("extension", []) if e.get("url") != model.RATING_URL]
        task["extension"].append({"url": model.RATING_URL, "valueInteger": int(rating)})
        if comment:
            task["note"] = [{"authorString": ctx.user, "time": model.iso(env.clock.now()), "text": comment}]
        repo.update("Task", cid, task, if_match=loaded.task.etag)
        notices = loaded.notices
        loaded = load(repo, cid)
        loaded.notices = notices
    return loaded


def timeline(repo: Repository, cid: str) -> list[dict]:
    """Every transition of the consultation, oldest first, from the Task's version history."""
    out = []
    for entry in reversed(repo.history("Task", cid, count=500)):
        r = entry.resource or {}
        t = model.read_transition(r)
        if t and t.get("event"):
            out.append({"at": entry.last_updated, "event": t["event"], "actor": t.get("actor"),
                        "from": t.get("from"), "to": r["businessStatus"]["coding"][0]["code"],
                        "reason": t.get("reason"), "version": entry.version_id})  # fmt: skip
        elif entry.version_id == 1:
            out.append({"at": entry.last_updated, "event": "create", "actor": None, "from": None,
                        "to": wf.DRAFT, "reason": None, "version": 1})  # fmt: skip
    return out


def attach(repo: Repository, env: Env, ctx: AccessContext, cid: str, attachment: dict) -> Stored:
    """A record attached to the consultation (DocumentReference, listed in the request's
    supportingInfo); the repository keeps large data in the blob store."""
    loaded = load(repo, cid)
    if loaded.consultation.state in wf.TERMINAL:
        raise TelemedError(Category.CONFLICT, f"The consultation is {loaded.consultation.state}; nothing can be added")
    now = env.clock.now()
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"text": attachment.get("title", "")[:100]},
        "subject": model.ref("Patient", loaded.patient),
        "date": model.iso(now),
        "description": attachment.get("title", ""),
        "content": [{"attachment": {**attachment, "creation": model.iso(now)}}],
        "context": {"related": [model.ref("ServiceRequest", cid)]},
    }
    if ctx.practitioner:
        doc["author"] = [model.ref("Practitioner", ctx.practitioner)]
    stored = repo.create("DocumentReference", doc)
    sr = dict(loaded.request.resource)
    sr["supportingInfo"] = [*sr.get("supportingInfo", []), model.ref("DocumentReference", stored.resource["id"])]
    repo.update("ServiceRequest", cid, sr)
    return stored
