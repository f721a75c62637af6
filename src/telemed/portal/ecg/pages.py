"""The ECG pages.

- ``/portal/ecg``: senders upload (a file or a WFDB record's files, priority, patient) and follow
  what they sent; readers see their pool's waiting ECGs, urgent first, and the ones they hold.
- ``/portal/ecg/events``: Server-Sent Events for this user: a new, escalated or passed ECG for a
  reader who is told (on duty in the pool), fed by ``services.hub`` so every instance delivers it.
- ``/portal/ecg/{id}``: the 12-lead viewer, the measurements and the claim/release/pass steps.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from markupsafe import Markup

from telemed.db.engine import unit_of_work
from telemed.ecg import UnreadableRecording, model, report, service, stats, waveform
from telemed.ecg import workflow as wf
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import Category, TelemedError
from telemed.portal import audit, web
from telemed.portal.exceptions import PortalError
from telemed.portal.home import register_home_section
from telemed.portal.i18n import gettext_for, lang_of
from telemed.portal.nav import register_nav
from telemed.portal.session import CurrentUser, require_roles
from telemed.reports import current_documents

router = APIRouter(prefix="/portal/ecg")
web.add_template_folder(Path(__file__).parent / "templates")
register_nav("ECG", "/portal/ecg", roles={"requesting-doctor", "ecg-reader", "platform-admin"}, order=25)

TOPIC = service.TOPIC
SENDERS = ("requesting-doctor", "platform-admin")
READERS = ("ecg-reader",)
KEEPALIVE_SECONDS = 15.0
MAX_FILES_BYTES = 64 * 1024 * 1024
FILES = File(...)
_warm = threading.Event()


def warm_up() -> None:
    """Import and JIT the analysis once in the background (the first analysis in a process takes
    seconds), so the first ECG of the day reaches the readers as fast as the others."""
    if _warm.is_set():
        return
    _warm.set()

    def run() -> None:
        from telemed.ecg import analyze, synthetic

        analyze(synthetic.simulate(duration=5, seed=1).recording)

    threading.Thread(target=run, name="ecg-warm-up", daemon=True).start()


def _services(request: Request):
    return request.app.state.services


def _repo(request: Request, user, write: bool = False):
    return audit.repository(request, user, write=write)


def _pools(request: Request) -> service.Pools:
    svc = _services(request)
    with unit_of_work(svc.engine, write=False) as conn:
        return service.Pools.load(svc.repository(conn, AccessContext.system()))


def publish(request: Request, push: service.Push) -> None:
    _services(request).hub.publish(TOPIC, json.dumps(push.as_dict()))


def _names(repo, refs: set[str]) -> dict[str, str]:
    out = {}
    for r in refs:
        rt, _, rid = r.partition("/")
        try:
            res = repo.read(rt, rid).resource
        except TelemedError:
            continue
        name = res.get("name")
        if isinstance(name, list):
            name = (name or [{}])[0].get("text") or ""
        out[r] = name or rid
    return out


def _row(stored, names: dict[str, str]) -> dict:
    task = stored.resource
    reading = model.reading_of(task)
    return {
        "id": task["id"], "state": reading.state, "priority": reading.priority, "escalation": reading.escalation,
        "patient": names.get((task.get("for") or {}).get("reference", ""), ""),
        "sender": names.get((task.get("requester") or {}).get("reference", ""), ""),
        "reader": names.get(f"Practitioner/{reading.reader}", "") if reading.reader else "",
        "reader_id": reading.reader, "sender_id": model.ref_id(task.get("requester"), "Organization"),
        "authored": task.get("authoredOn"), "version": stored.version_id,
    }  # fmt: skip


def _rows(repo, tasks) -> list[dict]:
    refs = set()
    for s in tasks:
        t = s.resource
        refs |= {(t.get("for") or {}).get("reference", ""), (t.get("requester") or {}).get("reference", "")}
        if (t.get("owner") or {}).get("reference", "").startswith("Practitioner/"):
            refs.add(t["owner"]["reference"])
    names = _names(repo, refs - {""})
    return [_row(s, names) for s in tasks]


def _lists(request: Request, user) -> dict:
    with _repo(request, user) as repo:
        waiting = _rows(repo, service.waiting(repo)) if user.has_role(*READERS) else []
        mine = _rows(repo, service.claimed_by(repo, user.practitioner)) if user.has_role(*READERS) else []
        sent = []
        if user.has_role(*SENDERS) and user.organization:
            sent = _rows(repo, service.find(repo, "Task", [("requester", f"Organization/{user.organization}"),
                                                           ("_sort", "-authored-on")], 50))  # fmt: skip
        patients = []
        if user.has_role(*SENDERS) and user.organization:
            for p in service.find(repo, "Patient", [("organization", f"Organization/{user.organization}")], 200):
                n = (p.resource.get("name") or [{}])[0]
                patients.append((p.resource["id"], n.get("text") or n.get("family", "") + "".join(n.get("given", []))))
    return dict(waiting=waiting, mine=mine, sent=sent, patients=patients)


@router.get("", response_class=HTMLResponse)
def pool_page(request: Request, user: CurrentUser) -> HTMLResponse:
    require_roles(*SENDERS, *READERS)(user)
    warm_up()
    return web.render(request, "ecg/pool.html", **_lists(request, user), labels=labels(request))


def _home_section(request: Request, user) -> Markup:
    """The reader's pool on the home page: how many wait (how many urgent), and their own."""
    with _repo(request, user) as repo:
        waiting = _rows(repo, service.waiting(repo))
        mine = _rows(repo, service.claimed_by(repo, user.practitioner))
    urgent = sum(1 for r in waiting if r["priority"] == wf.URGENT)
    return web.render_fragment(request, "ecg/_home.html", waiting=waiting, mine=mine, urgent=urgent,
                               labels=labels(request))  # fmt: skip


register_home_section(set(READERS), _home_section, order=15)


@router.get("/rows", response_class=HTMLResponse)
def pool_rows(request: Request, user: CurrentUser) -> HTMLResponse:
    require_roles(*SENDERS, *READERS)(user)
    return web.render(request, "ecg/_rows.html", **_lists(request, user), labels=labels(request))


def labels(request: Request) -> dict:
    _ = gettext_for(request)
    return {
        wf.WAITING: _("Waiting in the pool"), wf.CLAIMED: _("Being read"), wf.REPORTED: _("Reported"),
        wf.ACKNOWLEDGED: _("Acknowledged"), wf.CANCELLED: _("Cancelled"),
        wf.ROUTINE: _("Routine ECG"), wf.URGENT: _("Urgent ECG"),
    }  # fmt: skip


def measure_labels(request: Request) -> dict:
    _ = gettext_for(request)
    return {
        "heart_rate": _("Heart rate"), "rr_mean": _("Mean RR interval"), "sdnn": _("SDNN"), "rmssd": _("RMSSD"),
        "pr": _("PR interval"), "qrs": _("QRS duration"), "qt": _("QT interval"), "qtc_bazett": _("QTc (Bazett)"),
        "qtc_fridericia": _("QTc (Fridericia)"), "axis": _("QRS axis"),
    }  # fmt: skip


def flag_labels(request: Request) -> dict:
    _ = gettext_for(request)
    return {
        "bradycardia": _("Bradycardia"), "tachycardia": _("Tachycardia"),
        "irregular": _("Irregular rhythm (suggests atrial fibrillation)"), "pause": _("Pause"),
        "long-qtc": _("Long QTc"), "no-rhythm-detected": _("No rhythm detected"),
    }  # fmt: skip


@router.post("/upload")
async def upload(request: Request, user: CurrentUser, patient: str = Form(...), priority: str = Form(wf.ROUTINE),
                 note: str = Form(""), files: list[UploadFile] = FILES):  # fmt: skip
    """One ECG (a DICOM or aECG file, or a WFDB record's files); JSON for scripts, a redirect for forms."""
    require_roles(*SENDERS)(user)
    received: dict[str, bytes] = {}
    total = 0
    for f in files:
        data = await f.read()
        total += len(data)
        if total > MAX_FILES_BYTES:
            raise PortalError(Category.INCORRECT, "The files are larger than %(mb)s MB", mb=MAX_FILES_BYTES >> 20)
        received[Path(f.filename or "ecg").name] = data
    svc = _services(request)

    def store() -> service.Ingested:
        pools = _pools(request)  # in the worker thread: a database read never stalls the event loop
        with _repo(request, user, write=True) as repo:
            done = service.receive(repo, svc.blobs, pools, svc.clock.now(), svc.ids(), files=received,
                                   patient=patient, ctx=user.context, priority=priority, note=note or None)  # fmt: skip
        publish(request, done.push)  # after the commit: the readers see it now, a reader who opens it finds it
        with _repo(request, user, write=True) as repo:  # then the measurements (as long as all the rest)
            service.add_analysis(repo, svc.clock.now(), done)
        return done

    try:
        done = await asyncio.get_running_loop().run_in_executor(None, store)
    except UnreadableRecording as exc:
        raise PortalError(Category.UNPROCESSABLE, "The ECG file cannot be read: %(reason)s",
                          reason=gettext_for(request)(exc.message)) from None  # fmt: skip
    url = f"/portal/ecg/{done.ecg}"
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"id": done.ecg, "url": url, "readers": len(done.push.readers)}, 201)
    return RedirectResponse(url, 303)


@router.get("/events")
async def events(request: Request, user: CurrentUser) -> StreamingResponse:
    """``text/event-stream``: ``ecg`` events (JSON: ecg, event, priority) meant for this user."""
    hub = _services(request).hub
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
    me, org = user.practitioner, user.organization

    def listener(text: str) -> None:
        loop.call_soon_threadsafe(_offer, queue, text)

    async def stream():
        hub.add_listener(TOPIC, listener)
        try:
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    text = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                push = json.loads(text)
                if (me and me in push.get("readers", [])) or (org and push.get("sender") == org):
                    out = {k: push[k] for k in ("ecg", "event", "priority")}
                    yield f"event: ecg\ndata: {json.dumps(out)}\n\n"
        finally:
            hub.remove_listener(TOPIC, listener)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip


def _offer(queue: asyncio.Queue, text: str) -> None:
    if not queue.full():
        queue.put_nowait(text)


@router.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request, user: CurrentUser, days: int = 14) -> HTMLResponse:
    """ECGs per day, sending institution and reader; turnaround and critical values (bar charts in SVG)."""
    require_roles(*SENDERS, *READERS)(user)
    days = max(1, min(days, 92))
    _ = gettext_for(request)
    with _repo(request, user) as repo:
        figures = stats.compute(repo, _services(request).clock.now(), days)
        names = _names(repo, {f"Organization/{o}" for o, _n in figures.senders}
                       | {f"Practitioner/{p}" for p, _n in figures.readers})  # fmt: skip

    def minutes(value: float | None) -> str:
        return "—" if value is None else _("%(minutes)s min") % {"minutes": value}

    senders = [(names.get(f"Organization/{o}", o), n) for o, n in figures.senders]
    readers = [(names.get(f"Practitioner/{p}", p), n) for p, n in figures.readers]
    return web.render(request, "ecg/stats.html", stats=figures, days=days, minutes=minutes,
                      per_day=stats.bars([(d.strftime("%m-%d"), n) for d, n in figures.days]),
                      per_sender=stats.bars(senders), per_reader=stats.bars(readers))  # fmt: skip


def _rhythm(repo, ecg: str) -> dict:
    """The rhythm flags and beats; empty for the moment between the ECG reaching the pool and its analysis."""
    try:
        return repo.read("Observation", model.measurement_id(ecg, "rhythm")).resource
    except TelemedError as exc:
        if exc.category is not Category.NOT_FOUND:
            raise
        return {}


@router.get("/{ecg}", response_class=HTMLResponse)
def view(request: Request, ecg: str, user: CurrentUser) -> HTMLResponse:
    with _repo(request, user) as repo:
        task = repo.read("Task", ecg)
        panel = repo.read("Observation", ecg).resource
        patient = repo.read("Patient", model.ref_id(task.resource.get("for"), "Patient")).resource
        audit.about_patient(request, patient.get("id"))
        measures = []
        for key, (_codings, display, unit) in model.MEASUREMENTS.items():
            try:
                m = repo.read("Observation", model.measurement_id(ecg, key)).resource
            except TelemedError:
                continue
            label = measure_labels(request).get(key, display)
            measures.append((key, label, (m.get("valueQuantity") or {}).get("value"), unit))
        rhythm = _rhythm(repo, ecg)
        flag_names = flag_labels(request)
        flags = [flag_names.get(c["code"]["coding"][0]["code"], c["code"]["coding"][0]["code"])
                 for c in rhythm.get("component", [])]  # fmt: skip
        row = _rows(repo, [task])[0]
    try:
        pool = _pools(request).pool_for(model.ref_id(task.resource.get("requester"), "Organization") or "")
    except TelemedError:
        pool = None
    colleagues = [m for m in (pool.members if pool else []) if m != user.practitioner]
    with _repo(request, user) as repo:
        names = _names(repo, {f"Practitioner/{m}" for m in colleagues})
    with _repo(request, user) as repo:
        documents = current_documents(repo, "DiagnosticReport", ecg)
        dr = repo.read("DiagnosticReport", ecg).resource
        try:
            alert = repo.read("Communication", f"{ecg}-critical").resource
        except TelemedError:
            alert = None
    zh = lang_of(request) == "zh-CN"
    statements = [(code, st.zh if zh else st.en, st.critical) for code, st in report.STATEMENTS.items()]
    return web.render(request, "ecg/view.html", ecg=ecg, row=row, report=dr, has_pdf=bool(documents),
                      alert=alert, statements=statements, panel=panel, patient=patient, measures=measures,
                      flags=flags, labels=labels(request), me=user.practitioner,
                      is_reader=user.has_role(*READERS) and bool(pool and user.practitioner in pool.members),
                      colleagues=[(m, names.get(f"Practitioner/{m}", m)) for m in colleagues])  # fmt: skip


@router.get("/{ecg}/waveform.json")
def waveform_json(request: Request, ecg: str, user: CurrentUser, start: float | None = None,
                  seconds: float | None = None) -> JSONResponse:  # fmt: skip
    """The leads in mV (4 decimals: 0.1 µV) for the viewer, with the detected beats: a resting ECG
    whole, a long recording one window (``start``, ``seconds``) at a time."""
    with _repo(request, user) as repo:
        panel = repo.read("Observation", ecg)  # the access check, each time

        def load() -> waveform.Leads:
            members = [model.ref_id(m, "Observation") for m in panel.resource.get("hasMember", [])]
            found = repo.read_many("Observation", members)  # one statement for the 12 leads
            return waveform.from_observations([found[m].resource for m in members if m in found])

        leads = _LEADS.get(f"{id(_services(request).engine)}:{ecg}:{panel.version_id}", load)
        rhythm = _rhythm(repo, ecg)
    beats = json.loads(
        next((e["valueString"] for e in rhythm.get("extension", []) if e["url"] == model.BEATS_URL), "[]")
    )
    body = waveform.window(leads, start, seconds, beats)
    return JSONResponse(body, headers={"Cache-Control": "private, max-age=300"})


_LEADS = waveform.LeadsCache()


def _step(request: Request, user, ecg: str, fn) -> RedirectResponse:
    require_roles(*READERS)(user)
    svc, pools = _services(request), _pools(request)
    try:
        with _repo(request, user, write=True) as repo:
            push = fn(repo, pools, svc.clock.now())
    except TelemedError as exc:
        if exc.category is Category.CONFLICT:
            raise PortalError(Category.CONFLICT, exc.message) from None
        raise
    publish(request, push)
    return RedirectResponse(f"/portal/ecg/{ecg}", 303)


@router.post("/{ecg}/claim")
def claim(request: Request, ecg: str, user: CurrentUser, version: str = Form("")):
    if_match = f'W/"{version}"' if version.isdigit() else None
    return _step(request, user, ecg, lambda repo, pools, now: service.claim(repo, pools, now, ecg, user.practitioner,
                                                                            if_match))  # fmt: skip


@router.post("/{ecg}/release")
def release(request: Request, ecg: str, user: CurrentUser):
    return _step(request, user, ecg, lambda repo, pools, now: service.release(repo, pools, now, ecg, user.practitioner))


@router.post("/{ecg}/pass")
def pass_to(request: Request, ecg: str, user: CurrentUser, colleague: str = Form(...)):
    me = user.practitioner
    return _step(request, user, ecg, lambda repo, pools, now: service.pass_to(repo, pools, now, ecg, me, colleague))


@router.post("/{ecg}/report")
async def sign_report(request: Request, ecg: str, user: CurrentUser):
    """The reader's report: measurements (``m_<key>``), ``statement`` (repeated), ``leads``, ``free_text``."""
    require_roles(*READERS)(user)
    form = await request.form()
    measurements: dict[str, float | None] = {}
    for key in model.MEASUREMENTS:
        raw = str(form.get(f"m_{key}", "")).strip()
        if raw:
            try:
                measurements[key] = float(raw)
            except ValueError:
                raise PortalError(Category.INCORRECT, "%(value)s is not a number", value=raw) from None
    statements = [str(v) for v in form.getlist("statement")]
    svc = _services(request)

    def run():
        with _repo(request, user, write=True) as repo:
            return report.sign(repo, svc.signer, user.context, svc.clock.now(), svc.site_url, ecg,
                               measurements=measurements, statements=statements, leads=str(form.get("leads", "")),
                               free_text=str(form.get("free_text", "")), locale=lang_of(request))  # fmt: skip

    try:
        signed = await asyncio.get_running_loop().run_in_executor(None, run)
    except TelemedError as exc:
        if exc.category in (Category.CONFLICT, Category.UNPROCESSABLE, Category.INCORRECT):
            raise PortalError(exc.category, exc.message) from None
        raise
    publish(request, signed.push)
    return RedirectResponse(f"/portal/ecg/{ecg}", 303)


@router.post("/{ecg}/acknowledge")
def acknowledge(request: Request, ecg: str, user: CurrentUser):
    with _repo(request, user, write=True) as repo:
        report.acknowledge(repo, user.context, _services(request).clock.now(), ecg)
    return RedirectResponse(f"/portal/ecg/{ecg}", 303)


@router.get("/{ecg}/report.pdf")
def report_pdf(request: Request, ecg: str, user: CurrentUser) -> Response:
    with _repo(request, user) as repo:
        documents = current_documents(repo, "DiagnosticReport", ecg)
    if not documents:
        raise PortalError(Category.NOT_FOUND, "This ECG has no signed report yet")
    data = base64.b64decode(documents[0].resource["content"][0]["attachment"]["data"])
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="ecg-{ecg}.pdf"'})  # fmt: skip
