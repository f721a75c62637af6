"""The consultation's video call page and its signalling socket.

This module is where the consultation and the video package meet: it asks the consultation
service who the participants are and whether the session is live, describes the room as a
:class:`telemed.video.RoomSpec`, and lets telemed.video decide and relay.

- ``GET /portal/consultations/{cid}/video``: the call page, or the reason the room is not open
  to this user now (localized);
- ``POST /portal/consultations/{cid}/video/join``: a fresh join token (the page asks again when it
  reconnects), the ICE servers (TURN credentials minted for this user) and the media mode;
- ``WS /portal/video/{cid}/ws``: signalling; needs the portal session cookie *and* a join token of
  the same user for this consultation;
- ``POST /portal/consultations/{cid}/video/recordings``: a finished resumable upload (telemed.portal.
  uploads) of a recording that every participant agreed to, filed as the consultation's
  ``DocumentReference``; each participant's answer is a FHIR ``Consent``.
"""

from __future__ import annotations

import base64
import logging
from contextlib import nullcontext
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from telemed.consultation import Env, SlaPolicy, service
from telemed.consultation import workflow as wf
from telemed.consultation.directory import Directory
from telemed.db.engine import unit_of_work
from telemed.fhir.store import retention
from telemed.fhir.store.context import AccessContext
from telemed.identity import tokens
from telemed.kernel.errors import TelemedError
from telemed.portal import uploads, web
from telemed.portal.consultation.common import env, labels, repository, services
from telemed.portal.i18n import gettext_for
from telemed.portal.session import SESSION_COOKIE, CurrentUser, PortalUser, decode_session
from telemed.video import Events, Grant, InvalidJoinToken, Refused, RoomSpec, Switchboard, admit, attendance, join, turn
from telemed.video import room as rooms
from telemed.video.backend import MESH_LIMIT, MeshBackend, VideoBackend
from telemed.video.janus import JanusBackend, room_number, room_pin
from telemed.video.sfu import SfuParticipant

log = logging.getLogger("telemed.video")
router = APIRouter()
socket_router = APIRouter()  # mounted beside the page routers: a websocket has no CSRF form token
web.add_template_folder(Path(__file__).parent / "templates")

LIVE_STATES = frozenset({wf.SCHEDULED, wf.IN_SESSION, wf.OPINION_DRAFTED})
BACKEND = MeshBackend()


def room_spec(loaded: service.Loaded) -> RoomSpec:
    c = loaded.consultation
    people = frozenset(p for p in (c.requester, *(e.practitioner for e in c.active_experts)) if p)
    encounter = loaded.encounter.resource["id"] if loaded.encounter else None
    return RoomSpec(consultation=c.id, room=c.room, participants=people, scheduled_start=c.scheduled_start,
                    live=c.state in LIVE_STATES, encounter=encounter,
                    group=len(people) >= 3 or c.kind == wf.MDT)  # fmt: skip


def backend_for(svc, spec: RoomSpec) -> VideoBackend:
    """Janus for MDT rooms when one is configured (``TELEMED_JANUS_URL``); otherwise the mesh."""
    s = svc.settings
    if spec.group and s.janus_url:
        return JanusBackend(s.janus_url, svc.secret_key, s.janus_bitrate, api_secret=s.janus_api_secret)
    return BACKEND


def refusal_message(request: Request, exc: Refused) -> str:
    _ = gettext_for(request)
    if exc.code == rooms.TOO_EARLY:
        opens = exc.opens_at.astimezone(web.DISPLAY_TZ).strftime("%Y-%m-%d %H:%M") if exc.opens_at else ""
        return _("The video room opens 15 minutes before the session, at %(time)s. Please come back then.", time=opens)
    return {
        rooms.NOT_SCHEDULED: _("This consultation has no scheduled video session yet."),
        rooms.NOT_PARTICIPANT: _("Only the participants of this consultation can join its video room."),
        rooms.CLOSED: _("The video room is closed: the consultation has ended or was cancelled."),
    }.get(exc.code, _("You cannot join this video room."))


def _load(request: Request, user: PortalUser, cid: str) -> tuple[service.Loaded, RoomSpec, Directory]:
    with repository(request, user) as repo:
        loaded = service.load(repo, cid)  # 404 when the user may not see the consultation
        directory = Directory.load(repo)
    return loaded, room_spec(loaded), directory


def _audit(request_or_ws, ctx: AccessContext, cid: str, what: str, ok: bool) -> None:
    svc = request_or_ws.app.state.services
    with unit_of_work(svc.engine) as conn:
        attendance.audit_event(conn, ctx, svc.clock, cid, what, ok)


@router.get("/portal/consultations/{cid}/video", response_class=HTMLResponse)
def call_page(request: Request, user: CurrentUser, cid: str) -> HTMLResponse:
    loaded, spec, directory = _load(request, user, cid)
    svc = services(request)
    refused = None
    try:
        admit(spec, user.practitioner, svc.clock.now())
    except Refused as exc:
        refused = refusal_message(request, exc)
        _audit(request, user.context, cid, f"page refused ({exc.code})", False)
    status = 200 if refused is None else 403
    return web.render(request, "video/call.html", status, c=loaded.consultation, sr=loaded.request.resource,
                      refused=refused, spec=spec, sfu=bool(svc.settings.janus_url), mesh_limit=MESH_LIMIT,
                      **labels(request, directory))  # fmt: skip


@router.post("/portal/consultations/{cid}/video/join")
def join_token(request: Request, user: CurrentUser, cid: str) -> JSONResponse:
    """A join token for this user and room, minted only while the room rules let them in."""
    loaded, spec, directory = _load(request, user, cid)
    svc = services(request)
    now = svc.clock.now()
    try:
        admit(spec, user.practitioner, now)
    except Refused as exc:
        _audit(request, user.context, cid, f"join refused ({exc.code})", False)
        return JSONResponse({"detail": refusal_message(request, exc), "code": exc.code}, 403)
    backend = backend_for(svc, spec)
    try:
        config = backend.client_config(spec)
    except Exception as exc:  # noqa: BLE001 - Janus down: the call still works as a mesh of up to 4
        log.warning("video: media server unavailable for room %s, falling back to the mesh: %s", cid, exc)
        backend, config = BACKEND, {"mode": "mesh", "fallback": True}
    grant = Grant(cid, user.username, user.practitioner or "", directory.name(user.practitioner) or user.display_name,
                  spec.encounter, backend.peer_limit(spec), mode=config["mode"])  # fmt: skip
    token = join.mint(svc.secret_key, grant, now)
    relay = svc.settings.turn_relay_only and bool(svc.settings.turn_secret)
    policy = "relay" if relay else "all"
    return JSONResponse({"token": token, "expiresIn": join.TTL_SECONDS, "iceTransportPolicy": policy, **config})


# -- signalling -------------------------------------------------------------------------------------


def _ice_servers(svc, grant: Grant) -> list[dict]:
    s = svc.settings
    urls = [u.strip() for u in (s.turn_urls or "").split(",") if u.strip()]
    return turn.ice_servers(urls, s.turn_secret, grant.user, svc.clock.now(), s.turn_ttl_seconds)


def switchboard(app) -> Switchboard:
    """This instance's rooms (made on first use)."""
    board = getattr(app.state, "video_switchboard", None)
    if board is None:
        svc = app.state.services
        board = Switchboard(Events(
            authorize=lambda token, cid: join.verify(svc.secret_key, token, cid, svc.clock.now()),
            ice_servers=lambda grant: _ice_servers(svc, grant),
            joined=lambda grant, peer, conn=None: _attendance(svc, grant, "joined", conn),
            left=lambda grant, peer, conn=None: _attendance(svc, grant, "left", conn),
            chat=lambda grant, text: _chat(svc, grant, text),
            refused=lambda cid, who, code: _refused(svc, cid, who, code),
            now=svc.clock.now,
            sfu=lambda grant, peer, deliver: _sfu_participant(svc, grant, peer, deliver),
            consent=lambda grant, recording, yes, conn=None: _consent(svc, grant, recording, yes, conn),
            batch=lambda records: _batch(svc, records),
        ), bus=svc.hub if svc.hub.broker_url else None)  # fmt: skip
        app.state.video_switchboard = board
    return board


def _sfu_participant(svc, grant: Grant, peer: str, deliver) -> SfuParticipant:
    s = svc.settings
    if not s.janus_url:
        raise RuntimeError("no media server configured")
    return SfuParticipant(s.janus_url, room_number(grant.consultation), room_pin(svc.secret_key, grant.consultation),
                          peer, deliver, api_secret=s.janus_api_secret, bitrate=s.janus_bitrate)  # fmt: skip


RECORDING_ID = "urn:telemed:video-recording"


def _uow(svc, conn):
    """The given connection (a batch's transaction) or a unit of work of its own."""
    return nullcontext(conn) if conn is not None else unit_of_work(svc.engine, write=True)


def _batch(svc, records: list) -> None:
    """Attendance and consent records that queued up during a burst, in one transaction."""
    with unit_of_work(svc.engine, write=True) as conn:
        for fn, args in records:
            fn(*args, conn=conn)


def _consent(svc, grant: Grant, recording: str, yes: bool, conn=None) -> None:
    """A participant's answer to recording the session, as a FHIR Consent of the patient's record
    (performer: the participant; provision: permit or deny collecting the session's recording)."""
    now = svc.clock.now()
    with _uow(svc, conn) as conn:
        repo = svc.repository(conn, AccessContext.system())  # the platform records the answer given in the call
        loaded = service.load(repo, grant.consultation)
        who = {"reference": f"Practitioner/{grant.practitioner}", "display": grant.name}
        consent = {
            "resourceType": "Consent", "status": "active" if yes else "rejected",
            "identifier": [{"system": RECORDING_ID, "value": recording}],
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}],
                          "text": "Recording of the video consultation"}],
            "patient": {"reference": f"Patient/{loaded.patient}"}, "dateTime": now.isoformat(),
            "performer": [who],
            "policyRule": {"text": "Recording a video consultation needs the agreement of every participant"},
            "provision": {
                "type": "permit" if yes else "deny",
                "period": {"start": now.isoformat()},
                "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                "code": "PRF"}]}, "reference": who}],
                "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                        "code": "collect"}]}],
                "data": [{"meaning": "related", "reference": {"reference": f"ServiceRequest/{grant.consultation}"}}],
            },
        }  # fmt: skip
        if grant.encounter:
            consent["provision"]["data"].append({"meaning": "related",
                                                 "reference": {"reference": f"Encounter/{grant.encounter}"}})
        repo.create("Consent", consent)
        attendance.audit_event(conn, grant.context or AccessContext(grant.user, practitioner=grant.practitioner),
                               svc.clock, grant.consultation,
                               f"recording {recording}: {'consented' if yes else 'declined'}", True)  # fmt: skip


class RecordingIn(BaseModel):
    recording: str = Field(max_length=64)
    upload: str = Field(max_length=64)


@router.post("/portal/consultations/{cid}/video/recordings")
def save_recording(request: Request, user: CurrentUser, cid: str, body: RecordingIn) -> JSONResponse:
    """File a recording (a finished upload of ``upload``) that every participant agreed to."""
    _ = gettext_for(request)
    recording, upload = body.recording, body.upload
    rec = switchboard(request.app).recordings.accepted(recording, cid, user.username)
    if rec is None:
        _audit(request, user.context, cid, f"recording {recording[:40]} refused (no consent)", False)
        return JSONResponse({"detail": _("This recording was not agreed to by every participant.")}, 403)
    up, data = uploads.read_bytes(request, user, upload)
    if up.type != "video/webm" or not data.startswith(b"\x1a\x45\xdf\xa3"):
        return JSONResponse({"detail": _("This is not a recording of the call.")}, 415)
    svc = services(request)
    when = svc.clock.now().astimezone(web.DISPLAY_TZ).strftime("%Y-%m-%d %H:%M")
    attachment = {"contentType": "video/webm", "data": base64.b64encode(data).decode(), "size": len(data),
                  "title": _("Video recording of the session, %(time)s", time=when)}  # fmt: skip
    with repository(request, user, write=True) as repo:
        doc = service.attach(repo, env(request), user.context, cid, attachment)
        loaded = service.load(repo, cid)
        body = dict(doc.resource)
        if loaded.encounter:  # also linked from the session's Encounter
            body["context"] = {**body.get("context", {}),
                               "encounter": [{"reference": f"Encounter/{loaded.encounter.resource['id']}"}]}
        body["identifier"] = [{"system": RECORDING_ID, "value": recording}]
        # Kept at least the retention years (the store refuses to delete it before).
        years = max(svc.settings.recording_retention_years, 3)
        until = svc.clock.now() + timedelta(days=365 * years + years // 4 + 1)
        body["extension"] = [*body.get("extension", []), retention.extension(until)]
        doc = repo.update("DocumentReference", doc.resource["id"], body)
    uploads.discard(request, upload)
    _audit(request, user.context, cid, f"recording {recording} saved (DocumentReference/{doc.resource['id']})", True)
    return JSONResponse({"id": doc.resource["id"]}, 201)


def _attendance(svc, grant: Grant, what: str, conn=None) -> None:
    ctx = grant.context or AccessContext(grant.user, practitioner=grant.practitioner)
    now = svc.clock.now()
    with _uow(svc, conn) as conn:
        if grant.encounter:
            repo = svc.repository(conn, AccessContext.system())  # the platform records who attended
            (attendance.joined if what == "joined" else attendance.left)(repo, grant.encounter, grant.practitioner, now)
        attendance.audit_event(conn, ctx, svc.clock, grant.consultation, f"{what} (Practitioner/{grant.practitioner})",
                               True)  # fmt: skip


def _chat(svc, grant: Grant, text: str) -> dict:
    """The message is saved as the consultation's Communication, as the sender."""
    with unit_of_work(svc.engine) as conn:
        repo = svc.repository(conn, grant.context)
        stored = service.post_message(repo, env_for(svc), grant.context, grant.consultation, text)
    return {"id": stored.resource["id"], "at": stored.resource.get("sent")}


def env_for(svc) -> Env:
    return Env(clock=svc.clock, ids=svc.ids, sla=getattr(svc, "consultation_sla", None) or SlaPolicy())


def _refused(svc, cid: str, who: str, code: str) -> None:
    log.warning("video: refused %s in room %s: %s", who, cid, code)
    with unit_of_work(svc.engine) as conn:
        attendance.audit_event(conn, AccessContext(who or "anonymous"), svc.clock, cid, f"refused ({code})", False)


def _session_context(ws: WebSocket) -> AccessContext | None:
    """The signed-in user of the socket's session cookie (revoked or expired: None)."""
    svc = ws.app.state.services
    token = ws.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        claims = decode_session(svc.token_keys, token)
        if not svc.revocations.is_valid(claims):
            return None
    except (tokens.TokenError, TelemedError):
        return None
    # A guest's join token is minted only on its own consultation's page, so the token binds the room.
    return tokens.context_from_claims(claims)


@socket_router.websocket("/portal/video/{cid}/ws")
async def signalling_socket(ws: WebSocket, cid: str) -> None:
    svc = ws.app.state.services
    board = switchboard(ws.app)
    ctx = await _in_thread(_session_context, ws)
    await ws.accept()
    if ctx is None:
        await ws.send_text('{"type":"error","code":"refused","detail":"not-signed-in"}')
        await _in_thread(_refused, svc, cid, "anonymous", "no session")
        await ws.close(1008)
        return

    def authorize(token: str, room: str) -> Grant:
        grant = join.verify(svc.secret_key, token, room, svc.clock.now())
        if grant.user != ctx.user:
            raise InvalidJoinToken("token of another user")
        return replace(grant, context=ctx)

    async def receive() -> str | None:
        try:
            msg = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if msg["type"] == "websocket.disconnect":
            return None
        return msg.get("text") if msg.get("text") is not None else (msg.get("bytes") or b"").decode("utf-8", "replace")

    async def close(code: int) -> None:
        await ws.close(code)

    await board.serve(cid, receive, ws.send_text, close, who=ctx.user, authorize=authorize)


async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
