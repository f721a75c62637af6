"""Remote imaging reading pages (远程影像诊断).

- ``/portal/reading``: the radiologists' worklist (their centre's readings: priority, deadline and
  time left, modality, body part, claim; filters by modality and body part), the readings they
  hold; a requester's own requests; open critical findings as a banner;
- ``/portal/reading/new[?study=ID|?patient=ID]``: the request form (a study of the patient, or the
  Study Instance UID of images still on their way, priority, question);
- ``/portal/reading/{id}``: the reading: the study (opened in the viewer at
  ``/portal/imaging/studies/{uid}/view``), the steps (claim, release, cancel, acknowledge), the report
  editor with the modality's template (save, sign, amend with a reason), critical findings (flag;
  acknowledge on the requester's side), the signed PDFs, sharing the study with another
  institution and adding it, anonymised, to the teaching collection;
- ``/portal/reading/teaching``: the teaching collection (anonymised studies, as ZIP).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from telemed.db.engine import unit_of_work
from telemed.imaging.reading import anonymise, critical, notifications, sharing, templates
from telemed.imaging.reading import model as m
from telemed.imaging.reading import service as rs
from telemed.imaging.reading import workflow as wf
from telemed.kernel.errors import Category, TelemedError
from telemed.portal import audit, web
from telemed.portal.exceptions import PortalError
from telemed.portal.home import register_home_section
from telemed.portal.i18n import gettext_for, lang_of
from telemed.portal.nav import register_nav
from telemed.portal.session import CurrentUser, PortalUser, require_roles

router = APIRouter(prefix="/portal/reading")
web.add_template_folder(Path(__file__).parent / "templates")
REQUESTERS = ("requesting-doctor",)
CENTRE = ("radiologist", "platform-admin")
register_nav("Remote reading", "/portal/reading", roles={*REQUESTERS, *CENTRE}, order=24)
_policy: wf.Policy | None = None


def policy() -> wf.Policy:
    global _policy
    if _policy is None:
        _policy = wf.Policy.from_env()
    return _policy


def _svc(request: Request):
    return request.app.state.services


def _env(request: Request) -> rs.Env:
    svc = _svc(request)
    return rs.Env(svc.clock, svc.ids, policy())


def _repo(request: Request, user, write: bool = False):
    return audit.repository(request, user, write=write)


def labels(request: Request) -> dict:
    _ = gettext_for(request)
    return {
        wf.AWAITING: _("Waiting for the images"), wf.REQUESTED: _("On the worklist"), wf.CLAIMED: _("Claimed"),
        wf.READING: _("Being read"), wf.REPORTED: _("Reported"), wf.ACKNOWLEDGED: _("Acknowledged"),
        wf.CANCELLED: _("Cancelled"), wf.STAT: _("Stat priority"), wf.URGENT: _("Urgent priority"),
        wf.ROUTINE: _("Routine priority"),
        "technique": _("Technique"), "findings": _("Findings"), "impression": _("Diagnostic impression"),
        "recommendation": _("Recommendation"),
    }  # fmt: skip


def _names(repo, refs) -> dict[str, str]:
    out = {}
    for r in {r for r in refs if r}:
        rt, _, rid = r.partition("/")
        found = rs.read(repo, rt, rid)
        out[r] = (rs.name_of(found.resource) if found else "") or rid
    return out


def _rows(repo, loaded: list[rs.Loaded], now: datetime) -> list[dict]:
    refs = set()
    for x in loaded:
        refs |= {f"Patient/{x.patient}", f"Practitioner/{x.reading.requester}", f"Organization/{x.centre}"}
        if x.reading.radiologist:
            refs.add(f"Practitioner/{x.reading.radiologist}")
    names = _names(repo, refs)
    rows = []
    for x in loaded:
        r = x.reading
        left = int((x.deadline - now).total_seconds() // 60) if x.deadline and r.state in wf.OPEN else None
        rows.append({
            "id": r.id, "number": x.number, "priority": r.priority, "state": r.state, "modality": x.modality,
            "body_part": x.body_part, "patient": names.get(f"Patient/{x.patient}", ""),
            "requester": names.get(f"Practitioner/{r.requester}", ""), "centre": names.get(f"Organization/{x.centre}"),
            "radiologist": names.get(f"Practitioner/{r.radiologist}", "") if r.radiologist else "",
            "radiologist_id": r.radiologist, "requested": x.requested_at, "deadline": x.deadline,
            "minutes_left": left, "version": x.version, "study_uid": x.study_uid,
        })  # fmt: skip
    return rows


def _notify(request: Request, repo, notices) -> None:
    svc = _svc(request)
    if notices and svc.outbox is not None:
        notifications.enqueue(repo, svc.outbox, notices, svc.site_url)


async def _run(request: Request, user, fn):
    """A state-changing step in a worker thread: one unit of work, notices queued in it."""

    def work():
        with _repo(request, user, write=True) as repo:
            out = fn(repo)
            _notify(request, repo, getattr(out, "notices", None))
            return out

    return await run_in_threadpool(work)


def _criticals(repo, user: PortalUser) -> list[dict]:
    if not user.has_role(*REQUESTERS) or not user.practitioner:
        return []
    out = []
    for c in critical.unacknowledged(repo, user.practitioner):
        rid = m.ref_id((c.get("basedOn") or [{}])[0], "ServiceRequest")
        sr = rs.read(repo, "ServiceRequest", rid or "")
        out.append({"id": c["id"], "reading": rid, "text": c["payload"][0]["contentString"],
                    "sent": m.parse_dt(c["sent"]),
                    "number": sr.resource["identifier"][0]["value"] if sr else rid})  # fmt: skip
    return out


@router.get("", response_class=HTMLResponse)
def worklist(request: Request, user: CurrentUser, modality: str = "", body_part: str = "") -> HTMLResponse:
    require_roles(*REQUESTERS, *CENTRE)(user)
    now = _svc(request).clock.now()
    pool = mine = others = sent = []
    with _repo(request, user) as repo:
        if user.has_role(*CENTRE):
            everything = rs.worklist(repo, now)
            modalities = sorted({x.modality for x in everything})
            body_parts = sorted({x.body_part for x in everything if x.body_part})
            rows = _rows(repo, [x for x in everything if (not modality or x.modality == modality.upper())
                                and (not body_part or x.body_part == body_part.upper())], now)  # fmt: skip
            pool = [r for r in rows if r["state"] == wf.REQUESTED]
            mine = [r for r in rows if r["state"] != wf.REQUESTED and r["radiologist_id"] == user.practitioner]
            others = [r for r in rows if r["state"] != wf.REQUESTED and r["radiologist_id"] != user.practitioner]
        else:
            modalities = body_parts = []
        if user.has_role(*REQUESTERS) and user.practitioner:
            sent = _rows(repo, rs.requested_by(repo, user.practitioner), now)
        criticals = _criticals(repo, user)
    return web.render(request, "reading/worklist.html", pool=pool, mine=mine, others=others, sent=sent,
                      criticals=criticals, labels=labels(request), is_centre=user.has_role(*CENTRE),
                      modalities=modalities, body_parts=body_parts, modality=modality, body_part=body_part)  # fmt: skip


def _study_rows(repo, patient: str | None) -> list[dict]:
    params = [("_sort", "-_lastUpdated")]
    if patient:
        params.append(("subject", f"Patient/{patient}"))
    studies = [s.resource for s in rs.find(repo, "ImagingStudy", params, 100)]
    names = _names(repo, {(s.get("subject") or {}).get("reference", "") for s in studies})
    return [{"id": s["id"], "patient": names.get((s.get("subject") or {}).get("reference", ""), ""),
             "modality": m.study_modality(s), "body_part": m.study_body_part(s), "started": s.get("started", "")[:10],
             "description": s.get("description", ""), "uid": m.study_uid(s)} for s in studies
            if m.study_uid(s)]  # fmt: skip


@router.get("/new", response_class=HTMLResponse)
def new_reading(request: Request, user: CurrentUser, study: str = "", patient: str = "") -> HTMLResponse:
    require_roles(*REQUESTERS)(user)
    with _repo(request, user) as repo:
        centres = [(c["id"], c.get("name", c["id"])) for c in rs.centres(repo)]
        studies = _study_rows(repo, patient or None)
        patient_name = _names(repo, {f"Patient/{patient}"}).get(f"Patient/{patient}") if patient else None
    return web.render(request, "reading/new.html", centres=centres, studies=studies, chosen=study, patient=patient,
                      patient_name=patient_name, labels=labels(request), priorities=wf.PRIORITIES,
                      policy=policy())  # fmt: skip


@router.post("")
async def create_reading(request: Request, user: CurrentUser):
    require_roles(*REQUESTERS)(user)
    f = await request.form()
    form = rs.RequestForm(
        centre=str(f.get("centre", "")), priority=str(f.get("priority", wf.ROUTINE)),
        study=str(f.get("study", "")) or None, study_uid=str(f.get("study_uid", "")).strip() or None,
        patient=str(f.get("patient", "")) or None, question=str(f.get("question", "")),
        history=str(f.get("history", "")), modality=str(f.get("modality", "")), body_part=str(f.get("body_part", "")),
    )  # fmt: skip
    env = _env(request)
    loaded = await _run(request, user, lambda repo: rs.request_reading(repo, env, user.context, form))
    return RedirectResponse(f"/portal/reading/{loaded.id}", 303)


@router.get("/teaching", response_class=HTMLResponse)
def teaching(request: Request, user: CurrentUser) -> HTMLResponse:
    require_roles(*CENTRE)(user)
    with _repo(request, user) as repo:
        cases = [{"id": c["id"], "created": c.get("created"), **anonymise.case_parts(c)}
                 for c in anonymise.collection(repo)]  # fmt: skip
    return web.render(request, "reading/teaching.html", cases=cases)


@router.get("/teaching/{case_id}.zip")
def teaching_zip(request: Request, user: CurrentUser, case_id: str) -> Response:
    require_roles(*CENTRE)(user)
    with _repo(request, user) as repo:
        data = anonymise.zip_of(repo, _svc(request).blobs, case_id)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="teaching-{case_id}.zip"'})  # fmt: skip


@router.get("/{rid}", response_class=HTMLResponse)
def reading_page(request: Request, user: CurrentUser, rid: str, template: str = "") -> HTMLResponse:
    now = _svc(request).clock.now()
    with _repo(request, user) as repo:
        loaded = rs.load(repo, rid)
        audit.about_patient(request, loaded.patient)
        row = _rows(repo, [loaded], now)[0]
        study = rs.read(repo, "ImagingStudy", loaded.study) if loaded.study else None
        report = loaded.report.resource if loaded.report else None
        documents = rs.documents(repo, rid)
        findings = critical.findings(repo, rid)
        patient = repo.read("Patient", loaded.patient).resource
        shares = sharing.shares_of(repo, loaded.study) if loaded.study else []
        orgs = [(o.resource["id"], o.resource.get("name", o.resource["id"]))
                for o in rs.find(repo, "Organization", [("active", "true"), ("_sort", "name")], 200)
                if o.resource["id"] not in (user.organization,)]  # fmt: skip
        names = _names(repo, {f"Organization/{m.ref_id(m.ext_value(s, sharing.SHARED_WITH_URL), 'Organization')}"
                              for s in shares})  # fmt: skip
        requester_org = critical._organization_of(repo, loaded.reading.requester)
    actor = rs.actor_of(user.context)
    may = {e: wf.may(loaded.reading, e, actor) for e in wf.EVENT_ROLES}
    may["claim"] = may["claim"] and user.organization == loaded.centre
    may["flag"] = (user.practitioner == loaded.reading.radiologist and user.has_role("radiologist")
                   and loaded.reading.state in (wf.CLAIMED, wf.READING, wf.REPORTED, wf.ACKNOWLEDGED))  # fmt: skip
    may["ack_critical"] = user.practitioner == loaded.reading.requester or (
        user.has_role(*REQUESTERS) and user.organization == requester_org)
    may["share"] = bool(study) and bool(sharing.SHARERS & user.roles)
    may["teach"] = bool(study) and bool(anonymise.ALLOWED & user.roles) and user.organization == loaded.centre
    sections = m.sections_of(report)
    chosen = template if template in templates.BY_CODE else sections.get("template") or \
        templates.for_modality(loaded.modality).code  # fmt: skip
    if template in templates.BY_CODE or not any(sections.get(c) for c in templates.SECTIONS):
        sections = {**sections, **templates.BY_CODE[chosen].text(lang_of(request))}
    share_rows = [{"id": s["id"], "status": s["status"], "authored": m.parse_dt(s.get("authoredOn")),
                   "org": names.get(f"Organization/{m.ref_id(m.ext_value(s, sharing.SHARED_WITH_URL), 'Organization')}",
                                    "")} for s in shares]  # fmt: skip
    return web.render(
        request, "reading/reading.html", rid=rid, row=row, sr=loaded.request.resource, study=study, report=report,
        sections=sections, section_codes=templates.SECTIONS, documents=documents, findings=findings, may=may,
        patient=patient, labels=labels(request), templates=[t.code for t in templates.TEMPLATES], template=chosen,
        shares=share_rows, orgs=orgs,
    )  # fmt: skip


def _version(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


@router.post("/{rid}/step/{event}")
async def step(request: Request, user: CurrentUser, rid: str, event: str, version: str = Form(""),
               reason: str = Form("")):  # fmt: skip
    if event not in ("claim", "release", "acknowledge", "cancel"):
        raise PortalError(Category.NOT_FOUND, "This page does not exist")
    env = _env(request)
    await _run(request, user, lambda repo: rs.act(repo, env, user.context, rid, event, reason=reason,
                                                  expected_version=_version(version)))  # fmt: skip
    return RedirectResponse(f"/portal/reading/{rid}", 303)


@router.post("/{rid}/report")
async def report(request: Request, user: CurrentUser, rid: str):
    """The report editor: ``action`` save (draft), sign, or amend (with ``reason``)."""
    f = await request.form()
    sections = {code: str(f.get(code, "")) for code in templates.SECTIONS}
    action, version = str(f.get("action", "save")), _version(str(f.get("version", "")))
    env, svc = _env(request), _svc(request)

    def run(repo):
        if action == "amend":
            return rs.amend_report(repo, env, user.context, rid, sections, str(f.get("reason", "")),
                                   signer=svc.signer, base_url=svc.site_url)  # fmt: skip
        loaded = rs.save_report(repo, env, user.context, rid, sections, expected_version=version)
        if action == "sign":
            return rs.sign_report(repo, env, user.context, rid, signer=svc.signer, base_url=svc.site_url)
        return loaded

    await _run(request, user, run)
    return RedirectResponse(f"/portal/reading/{rid}#report", 303)


@router.post("/{rid}/critical")
async def flag_critical(request: Request, user: CurrentUser, rid: str, text: str = Form("")):
    env = _env(request)
    await _run(request, user, lambda repo: critical.flag(repo, env, user.context, rid, text))
    return RedirectResponse(f"/portal/reading/{rid}", 303)


@router.post("/{rid}/critical/{comm_id}/acknowledge")
async def acknowledge_critical(request: Request, user: CurrentUser, rid: str, comm_id: str):
    env = _env(request)
    await _run(request, user, lambda repo: critical.acknowledge(repo, env, user.context, rid, comm_id))
    return RedirectResponse(f"/portal/reading/{rid}", 303)


@router.get("/{rid}/report/{doc_id}.pdf")
def report_pdf(request: Request, user: CurrentUser, rid: str, doc_id: str) -> Response:
    with _repo(request, user) as repo:
        data = rs.pdf_of(repo, rid, doc_id)
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="imaging-{rid}-{doc_id}.pdf"'})  # fmt: skip


@router.post("/{rid}/share")
async def share(request: Request, user: CurrentUser, rid: str, organization: str = Form(""), reason: str = Form("")):
    env = _env(request)

    def run(repo):
        loaded = rs.load(repo, rid)
        if not loaded.study:
            raise PortalError(Category.CONFLICT, "The images have not arrived yet")
        return sharing.share(repo, env, user.context, loaded.study, organization, reason)

    await _run(request, user, run)
    return RedirectResponse(f"/portal/reading/{rid}#sharing", 303)


@router.post("/{rid}/share/{share_id}/revoke")
async def revoke(request: Request, user: CurrentUser, rid: str, share_id: str):
    env = _env(request)
    await _run(request, user, lambda repo: sharing.revoke(repo, env, user.context, share_id))
    return RedirectResponse(f"/portal/reading/{rid}#sharing", 303)


@router.post("/{rid}/teaching")
async def to_teaching(request: Request, user: CurrentUser, rid: str, title: str = Form(""), note: str = Form("")):
    svc = _svc(request)

    def work():
        with unit_of_work(svc.engine) as conn:
            repo = svc.repository(conn, user.context)
            loaded = rs.load(repo, rid)
            if not loaded.study:
                raise PortalError(Category.CONFLICT, "The images have not arrived yet")
            made = anonymise.anonymise_study(conn, repo, svc.blobs, user.context, svc.clock.now(), svc.ids,
                                             loaded.study, title=title, note=note)  # fmt: skip
            audit.record_change(conn, request, user)
            return made

    await run_in_threadpool(work)
    return RedirectResponse("/portal/reading/teaching", 303)


# The home page -----------------------------------------------------------------------------------


def _home(request: Request, user: PortalUser) -> Markup:
    now = _svc(request).clock.now()
    try:
        with _repo(request, user) as repo:
            criticals = _criticals(repo, user)
            waiting = rs.worklist(repo, now) if user.has_role(*CENTRE) else []
    except TelemedError:
        criticals, waiting = [], []
    return web.render_fragment(request, "reading/home_section.html", criticals=criticals,
                               waiting=[w for w in waiting if w.reading.state == wf.REQUESTED],
                               is_centre=user.has_role(*CENTRE))  # fmt: skip


register_home_section({*REQUESTERS, *CENTRE}, _home, order=14)
