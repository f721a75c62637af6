"""Remote pathology pages: the slides a user may see and the whole-slide viewer (OpenSeadragon).

- ``GET /portal/pathology``: the slides (thumbnail, size, how much of the file has arrived);
- ``GET /portal/pathology/slides/{id}[?with=id2&with=id3]``: the viewer, several slides side by
  side; its Deep Zoom descriptor, tiles, thumbnail and status are under the same path (the session
  cookie is sent to ``/portal`` only), from the same store as ``/api/pathology``;
- ``/portal/pathology/cases`` and ``/portal/pathology/gateways``: see :mod:`telemed.portal.pathology.cases`;
- ``GET /portal/pathology/vendor/openseadragon.min.js`` (and its button images): OpenSeadragon as
  installed from npm (``make deps``), served from ``node_modules``; nothing from a CDN.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, Response

from telemed.db.engine import unit_of_work
from telemed.kernel.errors import Category, TelemedError
from telemed.pathology import annotations, service
from telemed.pathology import api as pathology_api
from telemed.portal import audit, web
from telemed.portal.nav import register_nav
from telemed.portal.session import SESSION_COOKIE, CurrentUser, current_user

router = APIRouter()
web.add_template_folder(Path(__file__).parent / "templates")
VIEW_ROLES = {"pathologist", "requesting-doctor", "consulting-expert", "platform-admin"}
register_nav("Pathology", "/portal/pathology", roles=VIEW_ROLES, order=26)

_OSD_FILES = {"openseadragon.min.js", "openseadragon.min.js.map"}
WITH_ALSO = Query([], alias="with")
# OpenSeadragon adds one <style> element (no focus outline on touch screens); allowed by its hash only.
OSD_STYLE_HASH = "'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE='"
VIEWER_CSP = web.CONTENT_SECURITY_POLICY.replace("style-src 'self'", f"style-src 'self' {OSD_STYLE_HASH}")


def node_modules() -> Path:
    """``TELEMED_NODE_MODULES``, else the checkout's ``node_modules`` (``make deps`` installs it)."""
    configured = os.environ.get("TELEMED_NODE_MODULES")
    if configured:
        return Path(configured)
    for base in (Path(__file__).resolve().parents[4], Path.cwd()):
        if (base / "node_modules").is_dir():
            return base / "node_modules"
    return Path.cwd() / "node_modules"


def _centre(request: Request):
    return pathology_api.centre_of(request.app.state.services)


@router.get("/portal/pathology")
def slides(request: Request, user: CurrentUser):
    with audit.repository(request, user) as repo:
        items = service.visible_slides(repo, _centre(request).store)
    return web.render(request, "pathology/list.html", items=items)


@router.get("/portal/pathology/slides/{slide_id}")
def viewer(request: Request, user: CurrentUser, slide_id: str, also: list[str] = WITH_ALSO):
    store = _centre(request).store
    shown = []
    with audit.repository(request, user) as repo:
        for sid in [slide_id, *also[:3]]:
            if not service.readable(repo, sid):
                raise TelemedError(Category.NOT_FOUND, "No such slide")
            shown.append((repo.read("ImagingStudy", sid).resource, store.record(sid)))
    return web.render(request, "pathology/viewer.html", shown=shown, headers={"Content-Security-Policy": VIEWER_CSP})


async def _may_view(request: Request, slide_id: str) -> None:
    """Tiles come by the hundred: the right to a slide is remembered for a short while per session."""
    centre = _centre(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    if token and centre.remembered(token, slide_id):
        return

    def check() -> None:
        user = current_user(request)
        svc = request.app.state.services
        with unit_of_work(svc.engine, write=False) as conn:
            if not service.readable(svc.repository(conn, user.context), slide_id):
                raise TelemedError(Category.NOT_FOUND, "No such slide")
        centre.remember(token, slide_id)

    await run_in_threadpool(check)


@router.get("/portal/pathology/slides/{slide_id}/status")
async def slide_status(request: Request, slide_id: str) -> JSONResponse:
    await _may_view(request, slide_id)
    centre = _centre(request)
    rec = centre.store.record(slide_id)
    body = {
        "offset": rec.offset,
        "size": rec.size,
        "complete": rec.complete,
        "online": centre.links.connected(rec.gateway),
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/portal/pathology/slides/{slide_id}/slide.dzi")
async def slide_dzi(request: Request, slide_id: str) -> Response:
    await _may_view(request, slide_id)
    return Response(_centre(request).store.record(slide_id).slide_info.dzi(), media_type="application/xml")


@router.get("/portal/pathology/slides/{slide_id}/slide_files/{level}/{col}_{row}.jpeg")
async def slide_tile(request: Request, slide_id: str, level: int, col: int, row: int) -> Response:
    await _may_view(request, slide_id)
    data = await _centre(request).store.tile(slide_id, level, col, row)
    return Response(data, media_type="image/jpeg", headers=pathology_api.TILE_HEADERS)


@router.get("/portal/pathology/slides/{slide_id}/thumbnail.jpeg")
async def slide_thumbnail(request: Request, slide_id: str) -> Response:
    await _may_view(request, slide_id)
    data = await run_in_threadpool(_centre(request).store.thumbnail, slide_id)
    return Response(data, media_type="image/jpeg", headers=pathology_api.TILE_HEADERS)


@router.get("/portal/pathology/vendor/{name}")
def vendor(name: str, user: CurrentUser) -> FileResponse:
    root = node_modules() / "openseadragon" / "build" / "openseadragon"
    if name in _OSD_FILES:
        path = root / name
    elif name.endswith(".png") and name.replace("_", "").replace(".png", "").isalnum():
        path = root / "images" / name
    else:
        raise TelemedError(Category.NOT_FOUND, "No such file")
    if not path.is_file():
        raise TelemedError(Category.NOT_FOUND, "OpenSeadragon is not installed (make deps)")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


@router.get("/portal/pathology/slides/{slide_id}/annotations")
def slide_annotations(request: Request, user: CurrentUser, slide_id: str) -> JSONResponse:
    with audit.repository(request, user) as repo:
        items = annotations.for_slide(repo, slide_id)
    return JSONResponse(items, headers={"Cache-Control": "no-store"})


@router.post("/portal/pathology/slides/{slide_id}/annotations")
async def add_slide_annotation(request: Request, user: CurrentUser, slide_id: str) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        raise TelemedError(Category.INCORRECT, "The body is JSON") from None
    svc = request.app.state.services
    info = _centre(request).store.record(slide_id).slide_info

    def run() -> dict:
        with audit.repository(request, user, write=True) as repo:
            return annotations.add(repo, user.context, slide_id, info, body, svc.clock.now().isoformat())

    return JSONResponse(await run_in_threadpool(run), status_code=201)


from telemed.portal.pathology import cases as _cases  # noqa: E402 - its pages use VIEWER_CSP above

register_nav("Pathology cases", "/portal/pathology/cases", roles={"pathologist", "requesting-doctor",
                                                                  "triage-officer", "platform-admin"}, order=27)
register_nav("Slide gateways", "/portal/pathology/gateways", roles=set(_cases.ADMINS), order=28)
router.include_router(_cases.router)
