"""Consultation pages: the lists per role, the request form, the detail page with its actions.

Thin routes: parse the form -> a use case of telemed.consultation.service -> redirect or page.
Every state change is a POST with the CSRF token and the Task version the page was rendered
from, so a step taken on a stale page (someone else acted first) says so instead of acting.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from telemed.consultation import availability, model, queries, report, service
from telemed.consultation import workflow as wf
from telemed.consultation.directory import SPECIALTY_NAMES, Directory
from telemed.fhir.search.query import parse
from telemed.fhir.store import searching
from telemed.identity.accounts import get_account
from telemed.kernel.errors import Category, Issue, TelemedError
from telemed.portal import audit, offload, uploads
from telemed.portal.consultation.common import env, labels, minutes_left, repository, services
from telemed.portal.exceptions import PortalError
from telemed.portal.i18n import gettext_for, lang_of
from telemed.portal.session import CurrentUser, PortalUser
from telemed.portal.web import DISPLAY_TZ, render

router = APIRouter(prefix="/portal/consultations")
MAX_UPLOAD = 20 * 1024 * 1024
ALLOWED_TYPES = {"application/pdf", "image/jpeg", "image/png", "application/dicom", "text/plain"}
EVENTS = ("submit", "withdraw", "cancel", "return", "accept", "assign", "decline", "schedule", "start-session",
          "sign", "archive")  # fmt: skip


def _now(request: Request) -> datetime:
    return services(request).clock.now()


def _actor(user: PortalUser) -> wf.Actor:
    return service.actor_of(user.context)


# Lists -------------------------------------------------------------------------------------------


def worklists(request: Request, user: PortalUser) -> list[tuple[str, list[queries.Row]]]:
    """The lists this user works from, by role (a user with several roles sees several)."""
    _ = gettext_for(request)
    now = _now(request)
    out = []
    with repository(request, user) as repo:
        if user.has_role("requesting-doctor") and user.practitioner:
            out.append((_("My consultation requests"), queries.my_requests(repo, user.practitioner, now)))
        if user.has_role("qc-officer"):
            out.append((_("Quality-check queue"), queries.queue(repo, (wf.SUBMITTED,), now)))
        if user.has_role("triage-officer"):
            out.append((_("Triage queue"), queries.queue(repo, (wf.ACCEPTED,), now)))
            out.append((_("To schedule"), queries.queue(repo, (wf.ASSIGNED,), now)))
        if user.has_role("consulting-expert") and user.practitioner:
            out.append((_("My worklist"), queries.expert_worklist(repo, user.practitioner, now)))
    return out


@router.get("", response_class=HTMLResponse)
def list_page(request: Request, user: CurrentUser) -> HTMLResponse:
    lists = worklists(request, user)
    with repository(request, user) as repo:
        directory = Directory.cached(repo)
    return render(request, "consultation/list.html", lists=lists, now=_now(request), minutes_left=minutes_left,
                  **labels(request, directory))  # fmt: skip


# The request form --------------------------------------------------------------------------------


def _patients(repo, user: PortalUser) -> list[dict]:
    q = parse("Patient", [("_count", "200"), ("_sort", "-_lastUpdated")], pageable=False)
    return [s.resource for s in searching.search(repo, q, "").matches]


@router.get("/new", response_class=HTMLResponse)
def new_page(request: Request, user: CurrentUser, patient: str | None = None) -> HTMLResponse:
    if not user.has_role("requesting-doctor"):
        raise PortalError(Category.FORBIDDEN, "This page is not available to your role")
    with repository(request, user) as repo:
        patients = _patients(repo, user)
    return render(request, "consultation/new.html", patients=patients, selected=patient, specialties=SPECIALTY_NAMES,
                  form={}, problems=[], idempotency_key=services(request).ids(), kinds=wf.KINDS,
                  **labels(request))  # fmt: skip


def _details(form: dict, consent_file: dict | None) -> model.RequestDetails:
    when = None
    if form.get("requested_time"):
        try:
            when = datetime.fromisoformat(form["requested_time"]).replace(tzinfo=DISPLAY_TZ)
        except ValueError:
            raise PortalError(Category.INCORRECT, "The requested time is not a valid date and time") from None
    return model.RequestDetails(
        patient=form.get("patient", ""),
        kind=form.get("kind") or wf.ROUTINE,
        purpose=form.get("purpose", ""),
        summary=form.get("summary", ""),
        question=form.get("question", ""),
        specialty=form.get("specialty") or None,
        requested_time=when,
        consent_attachment=consent_file,
        consent_verbal_by=(form.get("consent_witness") or "").strip() or None if form.get("consent") else None,
    )


async def _read_upload(request: Request, upload: UploadFile | None) -> dict | None:
    """An uploaded file as a FHIR Attachment; refuses what is too large or of an unknown type."""
    if upload is None or not upload.filename:
        return None
    data = await upload.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise PortalError(Category.TOO_LARGE, "The file is larger than %(mb)s MB", mb=MAX_UPLOAD // 1024 // 1024)
    ctype = (upload.content_type or "").split(";")[0]
    if ctype not in ALLOWED_TYPES or not data:
        raise PortalError(Category.UNSUPPORTED_MEDIA, "This kind of file cannot be attached (PDF, JPEG, PNG, DICOM)")
    if ctype == "application/pdf" and not data.startswith(b"%PDF"):
        raise PortalError(Category.UNSUPPORTED_MEDIA, "The file is not a valid PDF")
    return {"contentType": ctype, "data": base64.b64encode(data).decode(), "title": upload.filename[:200],
            "size": len(data)}  # fmt: skip


@router.post("")
async def create(
    request: Request, user: CurrentUser, consent_file: Annotated[UploadFile | None, File()] = None
) -> Response:
    form = dict((await request.form()).items())
    form.pop("consent_file", None)
    attachment = await _read_upload(request, consent_file)
    return await offload.write(_create, request, user, form, attachment)


def _create(request: Request, user: PortalUser, form: dict, attachment: dict | None) -> Response:
    details = _details(form, attachment)
    with repository(request, user, write=True) as repo:
        if not details.patient and (form.get("new_name") or "").strip():
            details.patient = _register_patient(repo, user, form)
        if not details.patient:
            raise PortalError(Category.UNPROCESSABLE, "Choose the patient",
                              [Issue("Choose the patient", "required", "patient")])  # fmt: skip
        loaded = service.create(repo, env(request), user.context, details, form.get("idempotency_key") or None)
        audit.about_patient(request, loaded.patient)
    cid = loaded.consultation.id
    target = f"/portal/consultations/{cid}"
    if form.get("then_submit"):
        try:
            with repository(request, user, write=True) as repo:
                service.act(repo, env(request), user.context, cid, "submit")
        except TelemedError as exc:
            if exc.category is not Category.UNPROCESSABLE:
                raise
            return RedirectResponse(f"{target}?incomplete=1", 303)
    publish(request, cid)
    return RedirectResponse(target, 303)


def _register_patient(repo, user: PortalUser, form: dict) -> str:
    """A patient first seen for this request, registered at the requesting institution."""
    name = form["new_name"].strip()[:50]
    patient: dict = {
        "resourceType": "Patient",
        "active": True,
        "name": [{"text": name, "family": name[:1], "given": [name[1:]] if name[1:] else []}],
    }
    if form.get("new_gender") in ("male", "female"):
        patient["gender"] = form["new_gender"]
    if form.get("new_birth"):
        patient["birthDate"] = form["new_birth"][:10]
    if (form.get("new_id") or "").strip():
        patient["identifier"] = [{"system": "urn:oid:2.16.156.10011.1.1", "value": form["new_id"].strip()}]
    if user.organization:
        patient["managingOrganization"] = {"reference": f"Organization/{user.organization}"}
    return repo.create("Patient", patient).resource["id"]


# The detail page ---------------------------------------------------------------------------------


def _detail_context(request: Request, user: PortalUser, cid: str) -> dict:
    now = _now(request)
    with repository(request, user) as repo:
        loaded = service.load(repo, cid)
        audit.about_patient(request, loaded.patient)
        c = loaded.consultation
        directory = Directory.cached(repo, knowing=[c.requester, *(e.practitioner for e in c.experts)])
        patient = repo.read("Patient", loaded.patient).resource
        steps = service.timeline(repo, cid)
        for step in steps:  # user names as the people's names
            acct = get_account(repo.conn, step["actor"]) if step["actor"] else None
            step["actor_name"] = acct.display_name if acct is not None else step["actor"]
        msgs = service.messages(repo, cid)
        opinions = {}
        for e in loaded.consultation.experts:
            comp = service.opinion_of(repo, cid, e.practitioner)
            if comp is not None:
                opinions[e.practitioner] = (comp.resource, model.sections_of(comp.resource))
        attachments = [repo.read("DocumentReference", d).resource
                       for d in model.details_of(loaded.request.resource).attachments]  # fmt: skip
        reports = report.report_documents(repo, cid)
        record = patient_record(repo, loaded.patient)
        problems = []
        if loaded.consultation.state in (wf.DRAFT, wf.RETURNED):
            problems = service.missing_items(repo, model.details_of(loaded.request.resource),
                                             service.has_consent(repo, loaded))  # fmt: skip
    c = loaded.consultation
    actor = _actor(user)
    actions = [e for e in (*EVENTS, "draft-opinion", "amend", "acknowledge") if wf.may(c, e, actor)]
    slots: dict = {}
    load: dict = {}
    if "assign" in actions or "schedule" in actions:
        with repository(request, user) as repo:
            if "assign" in actions:  # the list of experts shows each one's load and next free time
                load = queries.expert_load(repo, [p.id for p in directory.experts()])
                slots = availability.first_free_slots(repo, [p.id for p in directory.experts()], now)
            if "schedule" in actions:  # the time picker offers the assigned experts' next slots
                slots.update(availability.free_slots(repo, [e.practitioner for e in c.active_experts], now))
    offered = sorted((f for e in c.active_experts for f in slots.get(e.practitioner, [])[:6]), key=lambda f: f.start)
    return dict(
        c=c, loaded=loaded, sr=loaded.request.resource, details=model.details_of(loaded.request.resource),
        patient=patient, steps=steps, messages=msgs, opinions=opinions, attachments=attachments, reports=reports,
        actions=actions, directory=directory, experts=directory.experts(), load=load, now=now,
        minutes_left=minutes_left(loaded.deadline, now), problems=problems, me=user.practitioner, slots=slots,
        offered=offered, record=record,
        sections=model.SECTIONS, lang=lang_of(request), **labels(request, directory),
    )  # fmt: skip


def patient_record(repo, patient: str) -> dict:
    """What the expert reads first: the patient's problems, recent results and imaging studies."""

    def find(rt: str, params: list[tuple[str, str]]) -> list[dict]:
        q = parse(rt, [("patient", f"Patient/{patient}"), ("_count", "20"), *params], pageable=False)
        return [s.resource for s in searching.search(repo, q, "").matches]

    return {
        "conditions": find("Condition", []),
        "observations": find("Observation", [("_sort", "-date")]),
        "studies": find("ImagingStudy", [("_sort", "-started")]),
    }


@router.get("/{cid}", response_class=HTMLResponse)
def detail_page(request: Request, user: CurrentUser, cid: str, incomplete: int = 0) -> HTMLResponse:
    ctx = _detail_context(request, user, cid)
    return render(request, "consultation/detail.html", show_problems=bool(incomplete), **ctx)


async def _form(request: Request) -> dict:
    form = await request.form()
    out: dict = {}
    for k, v in form.multi_items():
        if k in out:
            out[k] = [*out[k], v] if isinstance(out[k], list) else [out[k], v]
        else:
            out[k] = v
    return out


def _version(form: dict) -> int | None:
    v = form.get("version")
    return int(v) if v and str(v).isdigit() else None


@router.post("/{cid}/act")
async def act(request: Request, user: CurrentUser, cid: str) -> Response:
    return await offload.write(_act, request, user, cid, await _form(request))


def _act(request: Request, user: PortalUser, cid: str, form: dict) -> Response:
    event = form.get("event", "")
    if event not in EVENTS:
        raise PortalError(Category.INCORRECT, "Unknown action")
    experts = form.get("experts") or []
    experts = tuple([experts] if isinstance(experts, str) else experts)
    start = None
    if form.get("start") and not form.get("slot"):
        try:
            start = datetime.fromisoformat(form["start"]).replace(tzinfo=DISPLAY_TZ)
        except ValueError:
            raise PortalError(Category.INCORRECT, "The requested time is not a valid date and time") from None
    try:
        with repository(request, user, write=True) as repo:
            if event == "sign":
                loaded = services(request).sign_opinion(repo, env(request), user.context, cid,
                                                        expected_version=_version(form))  # fmt: skip
            else:
                loaded = service.act(repo, env(request), user.context, cid, event, expected_version=_version(form),
                                     reason=form.get("reason"), experts=experts, start=start,
                                     slot=form.get("slot") or None)  # fmt: skip
            audit.about_patient(request, loaded.patient)
            notify(request, repo, loaded)
    except TelemedError as exc:
        if exc.category is Category.UNPROCESSABLE and event == "submit":
            return RedirectResponse(f"/portal/consultations/{cid}?incomplete=1", 303)
        raise
    publish(request, cid)
    if event in ("decline",):
        return RedirectResponse("/portal/consultations", 303)
    return RedirectResponse(f"/portal/consultations/{cid}", 303)


@router.post("/{cid}/edit")
async def edit(request: Request, user: CurrentUser, cid: str,
               consent_file: Annotated[UploadFile | None, File()] = None) -> Response:  # fmt: skip
    form = dict((await request.form()).items())
    form.pop("consent_file", None)
    attachment = await _read_upload(request, consent_file)
    return await offload.write(_edit, request, user, cid, form, attachment)


def _edit(request: Request, user: PortalUser, cid: str, form: dict, attachment: dict | None) -> Response:
    with repository(request, user, write=True) as repo:
        loaded = service.load(repo, cid)
        details = _details(form, attachment)
        details.attachments = model.details_of(loaded.request.resource).attachments
        service.update_draft(repo, env(request), user.context, cid, details, _version(form))
    return RedirectResponse(f"/portal/consultations/{cid}", 303)


@router.post("/{cid}/opinion")
async def save_opinion(request: Request, user: CurrentUser, cid: str) -> Response:
    return await offload.write(_save_opinion, request, user, cid, await _form(request))


def _save_opinion(request: Request, user: PortalUser, cid: str, form: dict) -> Response:
    sections = {code: str(form.get(code, "")) for code, _zh, _en in model.SECTIONS}
    with repository(request, user, write=True) as repo:
        loaded = service.save_opinion(repo, env(request), user.context, cid, sections)
        audit.about_patient(request, loaded.patient)
        notify(request, repo, loaded)
    publish(request, cid)
    return RedirectResponse(f"/portal/consultations/{cid}#opinion", 303)


@router.post("/{cid}/amend")
async def amend(request: Request, user: CurrentUser, cid: str) -> Response:
    """A signed opinion changes only as an amendment, with its reason; the report is re-issued."""
    return await offload.write(_amend, request, user, cid, await _form(request))


def _amend(request: Request, user: PortalUser, cid: str, form: dict) -> Response:
    sections = {code: str(form.get(code, "")) for code, _zh, _en in model.SECTIONS}
    reason = str(form.get("reason", "")).strip()
    if not reason:
        raise PortalError(Category.UNPROCESSABLE, "An amendment needs a reason")
    svc = services(request)
    with repository(request, user, write=True) as repo:
        loaded = report.amend_opinion(repo, env(request), user.context, cid, sections, reason, signer=svc.signer,
                                      base_url=svc.site_url)  # fmt: skip
        audit.about_patient(request, loaded.patient)
        notify(request, repo, loaded)
    publish(request, cid)
    return RedirectResponse(f"/portal/consultations/{cid}#opinion", 303)


@router.post("/{cid}/acknowledge")
async def acknowledge(request: Request, user: CurrentUser, cid: str) -> Response:
    return await offload.write(_acknowledge, request, user, cid, await _form(request))


def _acknowledge(request: Request, user: PortalUser, cid: str, form: dict) -> Response:
    rating = form.get("rating")
    with repository(request, user, write=True) as repo:
        service.acknowledge(repo, env(request), user.context, cid, int(rating) if rating else None,
                            form.get("comment") or None, expected_version=_version(form))  # fmt: skip
    publish(request, cid)
    return RedirectResponse(f"/portal/consultations/{cid}", 303)


@router.post("/{cid}/messages")
async def post_message(request: Request, user: CurrentUser, cid: str) -> Response:
    return await offload.write(_post_message, request, user, cid, await _form(request))


def _post_message(request: Request, user: PortalUser, cid: str, form: dict) -> Response:
    with repository(request, user, write=True) as repo:
        service.post_message(repo, env(request), user.context, cid, str(form.get("text", "")))
    return RedirectResponse(f"/portal/consultations/{cid}#messages", 303)


@router.post("/{cid}/attachments")
async def upload_attachment(
    request: Request, user: CurrentUser, cid: str, file: Annotated[UploadFile | None, File()] = None
) -> Response:
    """Attach a record (report, image, scan) to the request: a file sent with the form, or a
    finished resumable upload (``upload_id``, see telemed.portal.uploads) for large files."""
    form = await request.form()
    upload_id = str(form.get("upload_id") or "") or None
    attachment = None if upload_id else await _read_upload(request, file)
    return await offload.write(_attach, request, user, cid, attachment, upload_id)


def _attach(request: Request, user: PortalUser, cid: str, attachment: dict | None, upload_id: str | None) -> Response:
    if upload_id:
        up, data = uploads.read_bytes(request, user, upload_id)
        attachment = {"contentType": up.type, "data": base64.b64encode(data).decode(), "title": up.name,
                      "size": len(data)}  # fmt: skip
    if attachment is None:
        raise PortalError(Category.INCORRECT, "Choose a file to upload")
    with repository(request, user, write=True) as repo:
        doc = service.attach(repo, env(request), user.context, cid, attachment)
    if upload_id:
        uploads.discard(request, upload_id)  # after the commit: the record now holds the bytes
    if "application/json" in request.headers.get("accept", ""):
        return Response(f'{{"id": "{doc.resource["id"]}"}}', media_type="application/json", status_code=201)
    return RedirectResponse(f"/portal/consultations/{cid}#attachments", 303)


@router.get("/{cid}/attachments/{doc_id}")
def download_attachment(request: Request, user: CurrentUser, cid: str, doc_id: str) -> Response:
    with repository(request, user) as repo:
        service.load(repo, cid)  # the consultation must be visible
        doc = repo.read("DocumentReference", doc_id).resource
    att = doc["content"][0]["attachment"]
    data = base64.b64decode(att.get("data", ""))
    disposition = "inline" if att.get("contentType") in ("application/pdf", "image/jpeg", "image/png") else "attachment"
    return Response(data, media_type=att.get("contentType", "application/octet-stream"),
                    headers={"Content-Disposition": f'{disposition}; filename="{doc_id}"'})  # fmt: skip


@router.get("/{cid}/report/{doc_id}.pdf")
def download_report(request: Request, user: CurrentUser, cid: str, doc_id: str) -> Response:
    """The signed report PDF, byte for byte as filed (its SHA-1 is in the DocumentReference)."""
    with repository(request, user) as repo:
        service.load(repo, cid)
        doc = repo.read("DocumentReference", doc_id).resource
    att = doc["content"][0]["attachment"]
    if att.get("contentType") != "application/pdf":
        raise PortalError(Category.NOT_FOUND, "This page does not exist")
    name = f"consultation-report-{doc_id}.pdf"
    return Response(base64.b64decode(att["data"]), media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{name}"'})  # fmt: skip


# Live updates and notifications ------------------------------------------------------------------


def publish(request: Request, cid: str) -> None:
    """Tell every board (on every instance) that a consultation changed (after the commit)."""
    hub = getattr(services(request), "hub", None)
    if hub is not None:
        hub.publish(BOARD_TOPIC, cid)


def notify(request: Request, repo, loaded) -> None:
    if loaded is not None and loaded.notices:
        services(request).consultation_notifier(repo, loaded.notices)


BOARD_TOPIC = "consultation-board"
