"""HTTP and WebSocket routes of remote pathology under ``/api/pathology`` (thin: parse -> service).

For site gateways (OAuth2 client credentials bearer token):

- ``POST /slides`` registers a slide (name, size, sha256, Deep Zoom info, optional patient,
  specimen, request) -> ``{"id", "offset", "complete"}``; the same content again gets the same slide;
- ``PUT /slides/{id}/thumbnail`` and ``PUT /slides/{id}/tiles/{level}/{col}_{row}.jpeg``: the
  thumbnail and the low-resolution levels, sent first;
- ``GET|PATCH /slides/{id}/upload``: the file in resumable parts (``Upload-Offset``; a wrong offset
  is a 409 with the right one in ``Upload-Offset``; ``Upload-Checksum: sha256 <base64>`` per part);
- ``WS /gateway``: the link the gateway opens outbound (:mod:`telemed.pathology.link`).

For viewers (bearer token or the portal's session cookie), Deep Zoom as OpenSeadragon reads it:
``GET /slides/{id}`` (JSON), ``/slides/{id}/slide.dzi``, ``/slides/{id}/slide_files/{level}/{col}_{row}.jpeg``,
``/slides/{id}/thumbnail.jpeg``. A slide is visible exactly when its FHIR ImagingStudy is; a viewer's
right to a slide is remembered for ``ACCESS_TTL`` seconds so that tiles do not each cost a database read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocketDisconnect

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import Category, TelemedError
from telemed.pathology import annotations, service
from telemed.pathology.centre import MAX_PART, SlideRecord, SlideStore
from telemed.pathology.link import Links
from telemed.pathology.tilecache import TileCache

log = logging.getLogger("telemed.pathology.api")
SESSION_COOKIE = "telemed_session"  # the portal's session: the viewer's login
ACCESS_TTL = 30.0
TILE_HEADERS = {"Cache-Control": "private, max-age=86400"}

Authenticate = Callable[[Request], AccessContext]


class Centre:
    """The centre's pathology state of one app instance: slide store, gateway links, access memo."""

    def __init__(self, services, cache_bytes: int = 256 * 1024 * 1024):
        self.services = services
        self.links = Links()
        self.store = SlideStore(Path(services.settings.var_dir) / "pathology", TileCache(cache_bytes), self.links)
        self._access: dict[tuple[str, str], float] = {}

    def remember(self, token: str, slide_id: str) -> None:
        if len(self._access) > 10_000:
            self._access.clear()
        self._access[(token, slide_id)] = time.monotonic() + ACCESS_TTL

    def remembered(self, token: str, slide_id: str) -> bool:
        return self._access.get((token, slide_id), 0.0) > time.monotonic()


def centre_of(services) -> Centre:
    """The one Centre of these services (made on first use)."""
    centre = getattr(services, "_pathology_centre", None)
    if centre is None:
        centre = Centre(services)
        services._pathology_centre = centre
    return centre


def _token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(SESSION_COOKIE, "")


def router(services, authenticate: Authenticate) -> APIRouter:
    api = APIRouter(prefix="/api/pathology", tags=["Pathology"])
    centre = centre_of(services)
    store = centre.store

    def caller(request: Request) -> AccessContext:
        if "authorization" not in request.headers and request.cookies.get(SESSION_COOKIE):
            scope = dict(request.scope)
            token = request.cookies[SESSION_COOKIE]
            scope["headers"] = [*request.scope["headers"], (b"authorization", f"Bearer {token}".encode())]
            request = Request(scope)
        return authenticate(request)

    def gateway_record(ctx: AccessContext, slide_id: str) -> SlideRecord:
        rec = store.record(slide_id)
        if rec.gateway != ctx.user:
            raise TelemedError(Category.NOT_FOUND, "No such slide")
        return rec

    def viewer_check(request: Request, slide_id: str) -> None:
        ctx = caller(request)
        ctx.require("ImagingStudy", "read")
        with unit_of_work(services.engine, write=False) as conn:
            if not service.readable(services.repository(conn, ctx), slide_id):
                raise TelemedError(Category.NOT_FOUND, "No such slide")
        centre.remember(_token(request), slide_id)

    async def may_view(request: Request, slide_id: str) -> None:
        token = _token(request)
        if not token or not centre.remembered(token, slide_id):
            await run_in_threadpool(viewer_check, request, slide_id)

    # -- gateways ---------------------------------------------------------------------------------

    @api.post("/slides")
    async def register(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            raise TelemedError(Category.INCORRECT, "The body is JSON") from None

        def run() -> tuple[SlideRecord, bool]:
            ctx = authenticate(request)
            with unit_of_work(services.engine) as conn:
                return service.register_slide(services.repository(conn, ctx), ctx, store, body)

        rec, new = await run_in_threadpool(run)
        return JSONResponse(
            {"id": rec.id, "offset": rec.offset, "size": rec.size, "complete": rec.complete, "chunk": MAX_PART},
            status_code=201 if new else 200,
        )

    @api.put("/slides/{slide_id}/thumbnail")
    async def put_thumbnail(slide_id: str, request: Request) -> Response:
        ctx = await run_in_threadpool(authenticate, request)
        gateway_record(ctx, slide_id)
        store.put_thumbnail(slide_id, await request.body())
        return Response(status_code=204)

    @api.put("/slides/{slide_id}/tiles/{level}/{col}_{row}.jpeg")
    async def put_tile(slide_id: str, level: int, col: int, row: int, request: Request) -> Response:
        ctx = await run_in_threadpool(authenticate, request)
        gateway_record(ctx, slide_id)
        data = await request.body()
        await run_in_threadpool(store.put_tile, slide_id, level, col, row, data)
        return Response(status_code=204)

    @api.get("/slides/{slide_id}/upload")
    def upload_status(slide_id: str, request: Request) -> JSONResponse:
        rec = gateway_record(authenticate(request), slide_id)
        return JSONResponse({"offset": rec.offset, "size": rec.size, "complete": rec.complete},
                            headers={"Upload-Offset": str(rec.offset), "Cache-Control": "no-store"})  # fmt: skip

    @api.patch("/slides/{slide_id}/upload")
    async def upload_part(slide_id: str, request: Request) -> JSONResponse:
        ctx = await run_in_threadpool(authenticate, request)
        gateway_record(ctx, slide_id)
        try:
            offset = int(request.headers.get("upload-offset", ""))
        except ValueError:
            raise TelemedError(Category.INCORRECT, "The Upload-Offset header is required") from None
        data = await request.body()
        rec = await run_in_threadpool(store.append, slide_id, offset, data, request.headers.get("upload-checksum"))
        if rec.complete:

            def available() -> None:
                with unit_of_work(services.engine) as conn:
                    service.mark_available(services.repository(conn, ctx), slide_id)

            await run_in_threadpool(available)
        body = {"offset": rec.offset, "complete": rec.complete}
        return JSONResponse(body, headers={"Upload-Offset": str(rec.offset)})

    @api.websocket("/gateway")
    async def gateway_link(ws: WebSocket) -> None:
        scheme, _, token = ws.headers.get("authorization", "").partition(" ")
        try:
            ctx = services.authenticate_token(token.strip()) if scheme.lower() == "bearer" else None
        except TelemedError:
            ctx = None
        if ctx is None:
            await ws.close(code=4401, reason="A bearer access token is required")
            return
        await ws.accept()
        link = centre.links.attach(ctx.user, ws.send_text)
        log.info("gateway %s connected", ctx.user)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") and '"ping"' in message["text"]:
                    await ws.send_text(json.dumps({"op": "pong"}))
                    continue
                centre.links.received(link, message)
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            centre.links.detach(link)
            log.info("gateway %s disconnected", ctx.user)

    # -- viewers ----------------------------------------------------------------------------------

    @api.get("/slides/{slide_id}")
    async def slide(slide_id: str, request: Request) -> JSONResponse:
        await may_view(request, slide_id)
        rec = store.record(slide_id)
        return JSONResponse({
            "id": rec.id, "name": rec.name, "info": rec.info, "size": rec.size, "offset": rec.offset,
            "complete": rec.complete, "online": centre.links.connected(rec.gateway),
        }, headers={"Cache-Control": "no-store"})  # fmt: skip

    @api.get("/slides/{slide_id}/slide.dzi")
    async def dzi(slide_id: str, request: Request) -> Response:
        await may_view(request, slide_id)
        return Response(store.record(slide_id).slide_info.dzi(), media_type="application/xml")

    @api.get("/slides/{slide_id}/slide_files/{level}/{col}_{row}.jpeg")
    async def tile(slide_id: str, level: int, col: int, row: int, request: Request) -> Response:
        await may_view(request, slide_id)
        data = await store.tile(slide_id, level, col, row)
        etag = hashlib.blake2b(data, digest_size=8).hexdigest()
        return Response(data, media_type="image/jpeg", headers={**TILE_HEADERS, "ETag": f'"{etag}"'})

    @api.get("/slides/{slide_id}/thumbnail.jpeg")
    async def thumbnail(slide_id: str, request: Request) -> Response:
        await may_view(request, slide_id)
        data = await run_in_threadpool(store.thumbnail, slide_id)
        return Response(data, media_type="image/jpeg", headers=TILE_HEADERS)

    # -- annotations (shown to everyone who may see the slide) ----------------------------------------

    @api.get("/slides/{slide_id}/annotations")
    def list_annotations(slide_id: str, request: Request) -> JSONResponse:
        ctx = caller(request)
        with unit_of_work(services.engine, write=False) as conn:
            items = annotations.for_slide(services.repository(conn, ctx), slide_id)
        return JSONResponse(items, headers={"Cache-Control": "no-store"})

    @api.post("/slides/{slide_id}/annotations")
    async def add_annotation(slide_id: str, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            raise TelemedError(Category.INCORRECT, "The body is JSON") from None

        def run() -> dict:
            ctx = caller(request)
            info = store.record(slide_id).slide_info
            with unit_of_work(services.engine) as conn:
                repo = services.repository(conn, ctx)
                return annotations.add(repo, ctx, slide_id, info, body, services.clock.now().isoformat())

        return JSONResponse(await run_in_threadpool(run), status_code=201)

    return api
