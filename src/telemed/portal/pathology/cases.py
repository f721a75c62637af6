"""Remote pathology case pages.

- ``/portal/pathology/cases``: the worklist: a pathologist's frozen sections first with the time
  left, the centre's pool and the cases they hold; a requester's own requests;
- ``/portal/pathology/cases/new``: the request form (frozen section or routine, slides, specimen,
  clinical history, gross description, the surgeon's call-back number);
- ``/portal/pathology/cases/{id}``: the case: the slides side by side in the viewer, the steps
  (claim, assign, release, preliminary result, cancel, acknowledge), the report editor (save,
  sign, amend with a reason) and the signed PDFs;
- ``/portal/pathology/gateways``: a site administrator registers the site's slide gateway (an
  OAuth2 client-credentials client) and sees its secret once; the list shows each gateway's last
  upload.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from telemed.db.engine import unit_of_work
from telemed.db.schema import oauth_client as t_client
from telemed.identity.oauth_clients import register_client
from telemed.kernel.errors import Category, TelemedError
from telemed.pathology import api as pathology_api
from telemed.pathology import casemodel as m
from telemed.pathology import cases, service
from telemed.pathology import workflow as wf
from telemed.pathology.gateway import SCOPES
from telemed.portal import audit, web
from telemed.portal.exceptions import PortalError
from telemed.portal.home import register_home_section
from telemed.portal.i18n import gettext_for
from telemed.portal.session import CurrentUser, require_roles

router = APIRouter(prefix="/portal/pathology")
REQUESTERS = ("requesting-doctor",)
CENTRE = ("pathologist", "triage-officer", "platform-admin")
ADMINS = ("institution-admin", "platform-admin")
_policy: wf.Policy | None = None


def policy() -> wf.Policy:
    global _policy
    if _policy is None:
        _policy = wf.Policy.from_env()
    return _policy


def _svc(request: Request):
    return request.app.state.services


def _env(request: Request) -> cases.Env:
    svc = _svc(request)
    return cases.Env(svc.clock, svc.ids, policy())


def _repo(request: Request, user, write: bool = False):
    return audit.repository(request, user, write=write)


def _centre_store(request: Request):
    return pathology_api.centre_of(_svc(request)).store


def labels(request: Request) -> dict:
    _ = gettext_for(request)
    return {
        wf.REQUESTED: _("Waiting in the pool"), wf.ASSIGNED: _("Assigned"), wf.READING: _("Being read"),
        wf.REPORTED: _("Reported"), wf.ACKNOWLEDGED: _("Acknowledged"), wf.CANCELLED: _("Cancelled"),
        wf.FROZEN: _("Frozen section"), wf.ROUTINE: _("Routine pathology"),
        "gross": _("Gross description"), "microscopic": _("Microscopic findings"), "diagnosis": _("Diagnosis"),
        "ihc": _("Immunohistochemistry recommended"), "comments": _("Comments"),
    }  # fmt: skip


def _names(repo, refs) -> dict[str, str]:
    out = {}
    for r in {r for r in refs if r}:
        rt, _, rid = r.partition("/")
        try:
            out[r] = cases.name_of(repo.read(rt, rid).resource) or rid
        except TelemedError:
            out[r] = rid
    return out


def _row(loaded: cases.Loaded, names: dict, now: datetime) -> dict:
    c = loaded.case
    left = None
    if loaded.deadline and c.state in wf.OPEN:
        left = int((loaded.deadline - now).total_seconds() // 60)
    return {
        "id": c.id, "number": loaded.number, "kind": c.kind, "state": c.state, "escalation": c.escalation,
        "patient": names.get(f"Patient/{loaded.patient}", ""), "preliminary": c.preliminary,
        "requester": names.get(f"Practitioner/{c.requester}", ""),
        "pathologist": names.get(f"Practitioner/{c.pathologist}", "") if c.pathologist else "",
        "pathologist_id": c.pathologist, "requested": loaded.requested_at, "deadline": loaded.deadline,
        "minutes_left": left, "version": loaded.version,
    }  # fmt: skip


def _rows(repo, loaded: list[cases.Loaded], now: datetime) -> list[dict]:
    refs = set()
    for x in loaded:
        refs |= {f"Patient/{x.patient}", f"Practitioner/{x.case.requester}"}
        if x.case.pathologist:
            refs.add(f"Practitioner/{x.case.pathologist}")
    names = _names(repo, refs)
    return [_row(x, names, now) for x in loaded]


@router.get("/cases", response_class=HTMLResponse)
def worklist(request: Request, user: CurrentUser) -> HTMLResponse:
    require_roles(*REQUESTERS, *CENTRE)(user)
    now = _svc(request).clock.now()
    frozen = pool = mine = others = sent = []
    with _repo(request, user) as repo:
        if user.has_role(*CENTRE):
            rows = _rows(repo, cases.worklist(repo, now), now)
            frozen = [r for r in rows if r["kind"] == wf.FROZEN]
            pool = [r for r in rows if r["kind"] != wf.FROZEN and r["state"] == wf.REQUESTED]
            mine = [r for r in rows if r["kind"] != wf.FROZEN and r["pathologist_id"] == user.practitioner]
            others = [r for r in rows if r["kind"] != wf.FROZEN and r["state"] != wf.REQUESTED
                      and r["pathologist_id"] != user.practitioner]  # fmt: skip
        if user.has_role(*REQUESTERS) and user.practitioner:
            sent = _rows(repo, cases.requested_by(repo, user.practitioner), now)
    return web.render(request, "pathology/cases.html", frozen=frozen, pool=pool, mine=mine, others=others, sent=sent,
                      labels=labels(request), is_centre=user.has_role(*CENTRE))  # fmt: skip


def _home(request: Request, user) -> str:
    """The home page of a pathologist: open frozen sections with their time left, and the pool."""
    now = _svc(request).clock.now()
    with _repo(request, user) as repo:
        rows = _rows(repo, cases.worklist(repo, now), now)
    frozen = [r for r in rows if r["kind"] == wf.FROZEN]
    waiting = [r for r in rows if r["kind"] != wf.FROZEN and r["state"] == wf.REQUESTED]
    return web.render_fragment(request, "pathology/home_section.html", frozen=frozen, waiting=len(waiting),
                               labels=labels(request))  # fmt: skip


register_home_section({"pathologist"}, _home, order=12)


def _slide_choices(request: Request, user) -> list[dict]:
    store = _centre_store(request)
    out = []
    with _repo(request, user) as repo:
        items = service.visible_slides(repo, store)
        names = _names(repo, {s.get("subject", {}).get("reference", "") for s, _r in items})
    for study, rec in items:
        subject = (study.get("subject") or {}).get("reference", "")
        if subject.startswith("Patient/"):
            out.append({"id": rec.id, "name": rec.name, "patient": names.get(subject, ""),
                        "requested": bool(study.get("basedOn"))})  # fmt: skip
    return out


@router.get("/cases/new", response_class=HTMLResponse)
def new_case(request: Request, user: CurrentUser) -> HTMLResponse:
    require_roles(*REQUESTERS)(user)
    with _repo(request, user) as repo:
        centres = [(c["id"], c.get("name", c["id"])) for c in cases.centres(repo)]
    return web.render(request, "pathology/new_case.html", slides=_slide_choices(request, user), centres=centres,
                      frozen_minutes=int(policy().frozen.total_seconds() // 60), labels=labels(request))  # fmt: skip


def _notify(request: Request, repo, loaded) -> None:
    svc = _svc(request)
    if loaded is not None and loaded.notices and svc.outbox is not None:
        cases.enqueue(repo, svc.outbox, loaded.notices, svc.site_url, _env(request))


async def _run(request: Request, user, fn):
    """A state-changing step in a worker thread: one unit of work, notices queued in it."""

    def work():
        with _repo(request, user, write=True) as repo:
            out = fn(repo)
            _notify(request, repo, out)
            return out

    return await run_in_threadpool(work)


@router.post("/cases")
async def create_case(request: Request, user: CurrentUser):
    require_roles(*REQUESTERS)(user)
    f = await request.form()
    form = cases.RequestForm(
        kind=str(f.get("kind", "")), centre=str(f.get("centre", "")), slides=[str(s) for s in f.getlist("slide")],
        accession=str(f.get("accession", "")), site=str(f.get("site", "")), history=str(f.get("history", "")),
        gross=str(f.get("gross", "")), question=str(f.get("question", "")), callback=str(f.get("callback", "")),
        theatre=str(f.get("theatre", "")),
    )  # fmt: skip
    env = _env(request)
    loaded = await _run(request, user, lambda repo: cases.request_case(repo, env, user.context, form))
    return RedirectResponse(f"/portal/pathology/cases/{loaded.case.id}", 303)


@router.get("/cases/{cid}", response_class=HTMLResponse)
def case_page(request: Request, user: CurrentUser, cid: str) -> HTMLResponse:
    store = _centre_store(request)
    now = _svc(request).clock.now()
    with _repo(request, user) as repo:
        loaded = cases.load(repo, cid)
        row = _rows(repo, [loaded], now)[0]
        sr = loaded.request.resource
        audit.about_patient(request, m.ref_id(sr.get("subject"), "Patient"))
        specimen = repo.read("Specimen", cid).resource
        shown = []
        for sid in loaded.slides:
            if service.readable(repo, sid):
                try:
                    shown.append((repo.read("ImagingStudy", sid).resource, store.record(sid)))
                except TelemedError:
                    continue
        report = loaded.report.resource if loaded.report else None
        documents = cases.documents(repo, cid)
        prelims = cases.preliminaries(repo, cid)
        colleagues = []
        if user.has_role("triage-officer", "platform-admin"):
            ids = cases.pathologists(repo, loaded.centre)
            names = _names(repo, {f"Practitioner/{p}" for p in ids})
            colleagues = [(p, names.get(f"Practitioner/{p}", p)) for p in ids]
        patient = repo.read("Patient", loaded.patient).resource
    actor = cases.actor_of(user.context)
    may = {e: wf.may(loaded.case, e, actor) for e in wf.EVENT_ROLES}
    may["claim"] = may["claim"] and user.organization == loaded.centre
    sections = m.sections_of(report)
    if not sections.get("gross") and specimen.get("note"):
        sections["gross"] = specimen["note"][0]["text"]
    return web.render(
        request, "pathology/case.html", cid=cid, row=row, sr=sr, specimen=specimen, shown=shown, report=report,
        sections=sections, section_codes=m.SECTION_CODES, documents=documents, prelims=prelims, may=may,
        colleagues=colleagues, patient=patient, labels=labels(request),
        callback=m.ext_value(sr, m.CALLBACK_URL), theatre=m.ext_value(sr, m.THEATRE_URL),
        headers={"Content-Security-Policy": viewer_csp()},
    )  # fmt: skip


def viewer_csp() -> str:
    from telemed.portal.pathology import VIEWER_CSP  # the package imports this module

    return VIEWER_CSP


def _version(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


@router.post("/cases/{cid}/step/{event}")
async def step(request: Request, user: CurrentUser, cid: str, event: str, version: str = Form(""),
               reason: str = Form(""), pathologist: str = Form("")):  # fmt: skip
    if event not in ("claim", "release", "assign", "acknowledge", "cancel"):
        raise PortalError(Category.NOT_FOUND, "This page does not exist")
    env = _env(request)
    await _run(request, user, lambda repo: cases.act(repo, env, user.context, cid, event, reason=reason,
                                                     pathologist=pathologist or None,
                                                     expected_version=_version(version)))  # fmt: skip
    return RedirectResponse(f"/portal/pathology/cases/{cid}", 303)


@router.post("/cases/{cid}/preliminary")
async def preliminary(request: Request, user: CurrentUser, cid: str, text: str = Form("")):
    env = _env(request)
    await _run(request, user, lambda repo: cases.send_preliminary(repo, env, user.context, cid, text))
    return RedirectResponse(f"/portal/pathology/cases/{cid}", 303)


@router.post("/cases/{cid}/report")
async def report(request: Request, user: CurrentUser, cid: str):
    """The report editor: ``action`` save (draft), sign, or amend (with ``reason``)."""
    f = await request.form()
    sections = {code: str(f.get(code, "")) for code in m.SECTION_CODES}
    action, version = str(f.get("action", "save")), _version(str(f.get("version", "")))
    env, svc = _env(request), _svc(request)

    def run(repo):
        if action == "amend":
            return cases.amend_report(repo, env, user.context, cid, sections, str(f.get("reason", "")),
                                      signer=svc.signer, base_url=svc.site_url)  # fmt: skip
        loaded = cases.save_report(repo, env, user.context, cid, sections, expected_version=version)
        if action == "sign":
            return cases.sign_report(repo, env, user.context, cid, signer=svc.signer, base_url=svc.site_url)
        return loaded

    await _run(request, user, run)
    return RedirectResponse(f"/portal/pathology/cases/{cid}#report", 303)


@router.get("/cases/{cid}/report/{doc_id}.pdf")
def report_pdf(request: Request, user: CurrentUser, cid: str, doc_id: str) -> Response:
    with _repo(request, user) as repo:
        data = cases.pdf_of(repo, cid, doc_id)
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="pathology-{cid}-{doc_id}.pdf"'})  # fmt: skip


# Site gateways -----------------------------------------------------------------------------------


def _gateway_rows(request: Request, user) -> list[dict]:
    svc = _svc(request)
    with unit_of_work(svc.engine, write=False) as conn:
        clients = list_clients(conn)
    wanted = set(SCOPES.split())
    mine = [c for c in clients if wanted <= set(c["scopes"]) and "client_credentials" in c["grant_types"]
            and (user.has_role("platform-admin") or c.get("organization_id") == user.organization)]  # fmt: skip
    last: dict[str, SlideActivity] = {}
    for rec in _centre_store(request).records():
        if rec.gateway:
            seen = last.setdefault(rec.gateway, SlideActivity())
            seen.slides += 1
            mtime = _mtime(request, rec.id)
            if mtime and (seen.last is None or mtime > seen.last):
                seen.last, seen.name, seen.pct = mtime, rec.name, 100 * rec.offset // max(rec.size, 1)
    return [{**c, "activity": last.get(c["client_id"])} for c in mine]


def list_clients(conn) -> list[dict]:
    """Registered OAuth clients (never their secrets), newest first."""
    rows = conn.execute(select(t_client).order_by(t_client.c.created.desc()))
    return [{"client_id": r.client_id, "name": r.name, "grant_types": list(r.grant_types), "scopes": list(r.scopes),
             "organization_id": r.organization_id, "created": r.created} for r in rows]  # fmt: skip


class SlideActivity:
    def __init__(self):
        self.slides, self.last, self.name, self.pct = 0, None, None, 0


def _mtime(request: Request, slide_id: str) -> datetime | None:
    folder = _centre_store(request).folder(slide_id)
    times = [p.stat().st_mtime for p in (folder / "slide.json", folder / "upload.part") if p.exists()]
    return datetime.fromtimestamp(max(times), UTC) if times else None


@router.get("/gateways", response_class=HTMLResponse)
def gateways(request: Request, user: CurrentUser) -> HTMLResponse:
    require_roles(*ADMINS)(user)
    return web.render(request, "pathology/gateways.html", gateways=_gateway_rows(request, user), created=None)


@router.post("/gateways", response_class=HTMLResponse)
def register_gateway(request: Request, user: CurrentUser, name: str = Form("")) -> HTMLResponse:
    """Register a gateway for the administrator's institution; its secret is shown on this page only."""
    require_roles(*ADMINS)(user)
    name = name.strip()
    if not name or len(name) > 100:
        raise PortalError(Category.UNPROCESSABLE, "Give the gateway a name of at most 100 characters")
    if not user.organization:
        raise PortalError(Category.UNPROCESSABLE, "Your account belongs to no institution")
    svc = _svc(request)
    with unit_of_work(svc.engine) as conn:
        client_id, secret = register_client(conn, name, scopes=SCOPES.split(), roles=["requesting-doctor"],
                                            organization_id=user.organization, now=svc.clock.now())  # fmt: skip
        audit.record_change(conn, request, user)
    command = ("export TELEMED_GATEWAY_CLIENT_SECRET=…\n"
               f"telemed gateway --centre {svc.site_url} --client-id {client_id}"
               " --folder /data/scanner/out --state /var/lib/telemed-gateway")
    created = {"client_id": client_id, "secret": secret, "name": name, "command": command}
    return web.render(request, "pathology/gateways.html", gateways=_gateway_rows(request, user), created=created,
                      headers={"Cache-Control": "no-store"})  # fmt: skip

