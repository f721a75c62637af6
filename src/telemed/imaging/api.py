"""DICOMweb under ``/dicomweb`` (PS3.18): thin routes over qido, wado, stow and rendered.

Same authentication as the FHIR API (a bearer token, or the portal's session cookie for the
viewer) and the same access rules: a study is visible exactly when its FHIR ImagingStudy is, and
anything else is 404. Each request writes one AuditEvent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from telemed.db.engine import unit_of_work
from telemed.fhir.store import audit
from telemed.fhir.store.context import AccessContext
from telemed.imaging import multipart, qido, rendered, stow, wado
from telemed.imaging.service import Platform
from telemed.kernel.errors import Category, TelemedError

log = logging.getLogger("telemed.imaging.dicomweb")

DICOM_JSON = "application/dicom+json"
SESSION_COOKIE = "telemed_session"  # the portal's session (telemed.portal.session): the viewer's login
MAX_STOW_BYTES = 1024 * 1024 * 1024

Authenticate = Callable[[Request], AccessContext]


def router(
    platform: Platform,
    authenticate: Authenticate,
    max_stow_bytes: int = MAX_STOW_BYTES,
    *,
    prefix: str = "/dicomweb",
    store_routes: bool = True,
) -> APIRouter:
    """The DICOMweb routes under ``prefix``; ``store_routes=False`` leaves out STOW-RS (a read-only mount,
    e.g. ``/portal/dicomweb`` for the viewer, which the portal's cookie reaches without a CSRF token)."""
    api = APIRouter(prefix=prefix, tags=["DICOMweb"])

    def caller(request: Request) -> AccessContext:
        if "authorization" not in request.headers and request.cookies.get(SESSION_COOKIE):
            token = request.cookies[SESSION_COOKIE]
            scope = dict(request.scope)
            scope["headers"] = [*request.scope["headers"], (b"authorization", f"Bearer {token}".encode())]
            request = Request(scope)
        return authenticate(request)

    def base(request: Request) -> str:
        netloc = request.url.netloc
        server = request.scope.get("server")
        # Some clients (dicomweb-client) send "Host: 127.0.0.1" without the port they connected to.
        if ":" not in netloc and server and server[0] == netloc and server[1] not in (80, 443):
            netloc = f"{netloc}:{server[1]}"
        return f"{request.url.scheme}://{netloc}{request.scope.get('root_path', '')}{prefix}"

    def record(ctx: AccessContext, interaction: str, entity: str, request: Request, outcome: str = "0") -> None:
        rec = audit.AuditRecord(
            interaction,
            outcome,
            entity[:140],
            str(request.url.query)[:1000] or None,
            None,
            description=f"DICOMweb {request.method} {request.url.path}"[:1000],
            address=request.client.host if request.client else None,
        )
        with unit_of_work(platform.engine) as conn:
            audit.record(conn, ctx, rec, platform.clock)

    Caller = Depends(caller)

    # -- QIDO-RS -----------------------------------------------------------------------------------
    def search(request: Request, ctx: AccessContext, level: str, scope: dict[str, str]) -> Response:
        ctx.require("ImagingStudy", "read")
        with unit_of_work(platform.engine, write=False) as conn:
            body = qido.search(
                conn, ctx, platform.clock.now(), base(request), level, list(request.query_params.multi_items()), scope
            )
        record(ctx, "search-type", "ImagingStudy", request)
        return Response(body, media_type=DICOM_JSON)

    @api.get("/studies")
    def search_studies(request: Request, ctx: AccessContext = Caller) -> Response:
        return search(request, ctx, "STUDY", {})

    @api.get("/series")
    def search_all_series(request: Request, ctx: AccessContext = Caller) -> Response:
        return search(request, ctx, "SERIES", {})

    @api.get("/instances")
    def search_all_instances(request: Request, ctx: AccessContext = Caller) -> Response:
        return search(request, ctx, "IMAGE", {})

    @api.get("/studies/{study}/series")
    def search_series(study: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return search(request, ctx, "SERIES", {"StudyInstanceUID": study})

    @api.get("/studies/{study}/instances")
    def search_study_instances(study: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return search(request, ctx, "IMAGE", {"StudyInstanceUID": study})

    @api.get("/studies/{study}/series/{series}/instances")
    def search_instances(study: str, series: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return search(request, ctx, "IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series})

    # -- WADO-RS: instances ------------------------------------------------------------------------
    def retrieve(request: Request, ctx: AccessContext, study: str, series=None, instance=None) -> Response:
        ctx.require("ImagingStudy", "read")
        with unit_of_work(platform.engine, write=False) as conn:
            rows = wado.instance_rows(conn, ctx, platform.clock.now(), study, series, instance)
        record(ctx, "read", f"ImagingStudy?study={study}", request)
        bnd = multipart.boundary()

        def parts() -> Iterator[tuple[bytes, str]]:
            for r in rows:
                yield platform.blobs.get(r.blob_key), f"application/dicom; transfer-syntax={r.transfer_syntax}"

        return StreamingResponse(
            multipart.encode(parts(), bnd), media_type=multipart.content_type("application/dicom", bnd)
        )

    @api.get("/studies/{study}")
    def retrieve_study(study: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return retrieve(request, ctx, study)

    @api.get("/studies/{study}/series/{series}")
    def retrieve_series(study: str, series: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return retrieve(request, ctx, study, series)

    @api.get("/studies/{study}/series/{series}/instances/{instance}")
    def retrieve_instance(
        study: str, series: str, instance: str, request: Request, ctx: AccessContext = Caller
    ) -> Response:
        return retrieve(request, ctx, study, series, instance)

    # -- WADO-RS: metadata -------------------------------------------------------------------------
    def metadata(request: Request, ctx: AccessContext, study: str, series=None, instance=None) -> Response:
        ctx.require("ImagingStudy", "read")
        with unit_of_work(platform.engine, write=False) as conn:
            body = wado.metadata(conn, ctx, platform.clock.now(), base(request), study, series, instance)
        record(ctx, "read", f"ImagingStudy?study={study}", request)
        return Response(body, media_type=DICOM_JSON)

    @api.get("/studies/{study}/metadata")
    def study_metadata(study: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return metadata(request, ctx, study)

    @api.get("/studies/{study}/series/{series}/metadata")
    def series_metadata(study: str, series: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return metadata(request, ctx, study, series)

    @api.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
    def instance_metadata(
        study: str, series: str, instance: str, request: Request, ctx: AccessContext = Caller
    ) -> Response:
        return metadata(request, ctx, study, series, instance)

    # -- WADO-RS: frames and bulk data -------------------------------------------------------------
    def one_instance(request: Request, ctx: AccessContext, study: str, series: str, instance: str) -> bytes:
        ctx.require("ImagingStudy", "read")
        with unit_of_work(platform.engine, write=False) as conn:
            (row,) = wado.instance_rows(conn, ctx, platform.clock.now(), study, series, instance)
        record(ctx, "read", f"ImagingStudy?study={study}", request)
        return platform.blobs.get(row.blob_key)

    @api.get("/studies/{study}/series/{series}/instances/{instance}/frames/{numbers}")
    def retrieve_frames(
        study: str, series: str, instance: str, numbers: str, request: Request, ctx: AccessContext = Caller
    ) -> Response:
        try:
            wanted = [int(n) for n in numbers.split(",")]
        except ValueError:
            raise TelemedError(Category.INCORRECT, "Frame numbers are a comma-separated list of integers") from None
        accept = request.headers.get("accept", "")
        native_only = not ("transfer-syntax=*" in accept.replace('"', "") or "image/" in accept)
        raw = one_instance(request, ctx, study, series, instance)
        frames = wado.frames(raw, wanted, native_only=native_only)
        bnd = multipart.boundary()
        parts = [(f.data, f"{f.media_type}; transfer-syntax={f.transfer_syntax}") for f in frames]
        return Response(
            b"".join(multipart.encode(parts, bnd)), media_type=multipart.content_type(frames[0].media_type, bnd)
        )

    @api.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}")
    def retrieve_bulkdata(
        study: str, series: str, instance: str, tag: str, request: Request, ctx: AccessContext = Caller
    ) -> Response:
        data = wado.bulkdata(one_instance(request, ctx, study, series, instance), tag)
        bnd = multipart.boundary()
        return Response(
            b"".join(multipart.encode([(data, "application/octet-stream")], bnd)),
            media_type=multipart.content_type("application/octet-stream", bnd),
        )

    # -- rendered and thumbnails -------------------------------------------------------------------
    def render(request: Request, raw: bytes, frame: int = 1, thumbnail: bool = False) -> Response:
        media = rendered.choose_media(request.headers.get("accept", ""))
        q = request.query_params
        try:
            quality = int(q.get("quality", "90"))
        except ValueError:
            raise TelemedError(Category.INCORRECT, "quality is a number 1..100") from None
        data = rendered.render(
            raw,
            frame,
            media=media,
            window=q.get("window"),
            viewport=q.get("viewport"),
            quality=quality,
            thumbnail=thumbnail,
        )
        return Response(data, media_type=media)

    @api.get("/studies/{study}/series/{series}/instances/{instance}/rendered")
    def instance_rendered(
        study: str, series: str, instance: str, request: Request, ctx: AccessContext = Caller
    ) -> Response:
        return render(request, one_instance(request, ctx, study, series, instance))

    @api.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered")
    def frame_rendered(
        study: str, series: str, instance: str, frame: int, request: Request, ctx: AccessContext = Caller
    ) -> Response:
        return render(request, one_instance(request, ctx, study, series, instance), frame)

    @api.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail")
    def instance_thumbnail(
        study: str, series: str, instance: str, request: Request, ctx: AccessContext = Caller
    ) -> Response:
        return render(request, one_instance(request, ctx, study, series, instance), thumbnail=True)

    def representative(request: Request, ctx: AccessContext, study: str, series: str | None) -> Response:
        """The middle image of a series (of the study's largest series with images) as its thumbnail."""
        ctx.require("ImagingStudy", "read")
        with unit_of_work(platform.engine, write=False) as conn:
            rows = wado.instance_rows(conn, ctx, platform.clock.now(), study, series)
        record(ctx, "read", f"ImagingStudy?study={study}", request)
        by_series: dict[str, list] = {}
        for r in rows:
            by_series.setdefault(r.series_uid, []).append(r)
        for members in sorted(by_series.values(), key=len, reverse=True):  # the largest series first
            middle = members[len(members) // 2]
            try:
                return render(request, platform.blobs.get(middle.blob_key), thumbnail=True)
            except TelemedError as exc:
                if exc.category is not Category.NOT_FOUND:  # no pixel data (a report, a plan): the next series
                    raise
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                # pixel data no codec here decodes (12-bit JPEG Extended for Pillow): the next series
                log.info("no thumbnail from %s: %s", middle.sop_instance_uid, exc)
        raise TelemedError(Category.NOT_FOUND, "No image to make a thumbnail of")

    @api.get("/studies/{study}/thumbnail")
    def study_thumbnail(study: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return representative(request, ctx, study, None)

    @api.get("/studies/{study}/series/{series}/thumbnail")
    def series_thumbnail(study: str, series: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return representative(request, ctx, study, series)

    # -- STOW-RS -----------------------------------------------------------------------------------
    async def store(request: Request, ctx: AccessContext, study: str | None) -> Response:
        ctx.require("ImagingStudy", "write")
        if int(request.headers.get("content-length") or 0) > max_stow_bytes:
            raise TelemedError(Category.INCORRECT, f"A STOW-RS request may carry at most {max_stow_bytes} bytes")
        body = await request.body()
        ctype = request.headers.get("content-type", "")
        status, doc = await run_in_threadpool(stow.store, platform, ctx, body, ctype, base(request), study)
        await run_in_threadpool(record, ctx, "create", "ImagingStudy", request, "0" if status != 409 else "4")
        return Response(doc, status, media_type=DICOM_JSON)

    if not store_routes:
        return api

    @api.post("/studies")
    async def store_instances(request: Request, ctx: AccessContext = Caller) -> Response:
        return await store(request, ctx, None)

    @api.post("/studies/{study}")
    async def store_study_instances(study: str, request: Request, ctx: AccessContext = Caller) -> Response:
        return await store(request, ctx, study)

    return api
