"""Resumable uploads for large records over weak links (a county hospital's CT report, a video).

A small protocol in the spirit of tus 1.0 (https://tus.io/protocols/resumable-upload):

- ``POST /portal/uploads`` with JSON ``{"name", "type", "size"}`` -> 201 ``{"id", "offset": 0, "chunk"}``;
- ``PATCH /portal/uploads/{id}`` with header ``Upload-Offset: n`` and the next bytes as the body ->
  ``{"offset"}``; a wrong offset is a 409 that carries the right one, so a client that lost its
  connection asks (``GET /portal/uploads/{id}``) and continues where the server stopped;
- the page then attaches the finished upload by its id (e.g. to a consultation).

Parts are appended to a file in the blob store's folder (``uploads/``), which every instance
shares, so a resumed upload may reach another instance. An upload belongs to the user who began
it; other users get a 404. Unfinished uploads older than a day are removed.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from telemed.kernel.errors import Category, Issue
from telemed.portal.exceptions import PortalError
from telemed.portal.session import CurrentUser, PortalUser

router = APIRouter(prefix="/portal/uploads")
MAX_SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_AGE_SECONDS = 24 * 3600
ALLOWED_TYPES = frozenset({"application/pdf", "image/jpeg", "image/png", "application/dicom", "text/plain",
                           "application/zip", "video/mp4", "video/webm"})  # fmt: skip


@dataclass
class Upload:
    id: str
    owner: str
    name: str
    type: str
    size: int
    offset: int = 0
    created: float = 0.0

    @property
    def complete(self) -> bool:
        return self.offset == self.size


def _folder(request: Request) -> Path:
    svc = request.app.state.services
    root = Path(str(getattr(svc.blobs, "root", svc.settings.var_dir / "blobs"))).parent / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _paths(request: Request, upload_id: str) -> tuple[Path, Path]:
    if not upload_id.isalnum() and not all(c.isalnum() or c in "-_" for c in upload_id):
        raise PortalError(Category.NOT_FOUND, "This upload does not exist or has expired")
    folder = _folder(request)
    return folder / f"{upload_id}.json", folder / f"{upload_id}.part"


def load(request: Request, user: PortalUser, upload_id: str) -> Upload:
    meta, _ = _paths(request, upload_id)
    try:
        up = Upload(**json.loads(meta.read_text()))
    except (OSError, ValueError, TypeError):
        raise PortalError(Category.NOT_FOUND, "This upload does not exist or has expired") from None
    if up.owner != user.username:
        raise PortalError(Category.NOT_FOUND, "This upload does not exist or has expired")
    return up


def _save(request: Request, up: Upload) -> None:
    meta, _ = _paths(request, up.id)
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(up)))
    os.replace(tmp, meta)  # atomic: a crash leaves the old or the new state, never half of one


def read_bytes(request: Request, user: PortalUser, upload_id: str) -> tuple[Upload, bytes]:
    """A finished upload's bytes (for the page that attaches it); refuses an unfinished one."""
    up = load(request, user, upload_id)
    if not up.complete:
        raise PortalError(Category.CONFLICT, "The upload is not finished yet")
    return up, _paths(request, upload_id)[1].read_bytes()


def discard(request: Request, upload_id: str) -> None:
    for p in _paths(request, upload_id):
        p.unlink(missing_ok=True)


def _sweep(folder: Path) -> None:
    cutoff = time.time() - MAX_AGE_SECONDS
    for p in folder.glob("*.json"):
        if p.stat().st_mtime < cutoff:
            p.unlink(missing_ok=True)
            p.with_suffix(".part").unlink(missing_ok=True)


@router.post("")
async def begin(request: Request, user: CurrentUser) -> JSONResponse:
    try:
        body = await request.json()
        name, ctype, size = str(body["name"])[:200], str(body["type"]).split(";")[0], int(body["size"])
    except (ValueError, KeyError, TypeError):
        raise PortalError(Category.INCORRECT, "Give the file's name, type and size") from None
    if ctype not in ALLOWED_TYPES:
        raise PortalError(Category.UNSUPPORTED_MEDIA, "This kind of file cannot be attached (PDF, JPEG, PNG, DICOM)")
    if size <= 0 or size > MAX_SIZE:
        raise PortalError(Category.TOO_LARGE, "The file is larger than %(mb)s MB", mb=MAX_SIZE // 1024 // 1024)
    folder = _folder(request)
    _sweep(folder)
    up = Upload(secrets.token_urlsafe(18), user.username, name, ctype, size, 0, time.time())
    _paths(request, up.id)[1].write_bytes(b"")
    _save(request, up)
    return JSONResponse({"id": up.id, "offset": 0, "chunk": CHUNK, "size": size}, status_code=201)


@router.get("/{upload_id}")
def status(request: Request, user: CurrentUser, upload_id: str) -> JSONResponse:
    up = load(request, user, upload_id)
    return JSONResponse({"id": up.id, "offset": up.offset, "size": up.size, "complete": up.complete})


@router.patch("/{upload_id}")
async def append(request: Request, user: CurrentUser, upload_id: str) -> JSONResponse:
    up = load(request, user, upload_id)
    try:
        offset = int(request.headers.get("upload-offset", ""))
    except ValueError:
        raise PortalError(Category.INCORRECT, "The Upload-Offset header is required") from None
    if offset != up.offset:
        # Tell the client where to continue (e.g. a part arrived but its answer was lost).
        return JSONResponse({"detail": "offset mismatch", "offset": up.offset}, status_code=409)
    data = await request.body()
    if len(data) > 4 * CHUNK:
        raise PortalError(Category.TOO_LARGE, "Send the file in parts of at most %(mb)s MB", mb=4 * CHUNK // 2**20)
    if up.offset + len(data) > up.size:
        raise PortalError(Category.INCORRECT, "More data than the announced size",
                          [Issue("size", "too-long", "size")])  # fmt: skip
    part = _paths(request, upload_id)[1]
    with part.open("r+b") as f:
        f.seek(up.offset)
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    up.offset += len(data)
    _save(request, up)  # the offset moves only after the bytes are on disk
    return JSONResponse({"id": up.id, "offset": up.offset, "complete": up.complete})
