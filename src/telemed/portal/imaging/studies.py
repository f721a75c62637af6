"""Imaging study pages: the studies a user may see, per patient, and the upload of images.

- ``GET /portal/imaging``: the studies of the user's institution (and those shared with it), newest
  first, with the thumbnail of each study (``/portal/dicomweb/studies/{uid}/thumbnail``);
- ``GET /portal/imaging/patients/{id}``: one patient's studies;
- ``GET /portal/imaging/studies/{uid}/view``: the study in the viewer (a 404 page when the user may
  not see it, exactly as its FHIR ImagingStudy);
- ``GET /portal/imaging/upload``: a DICOM folder or ZIP from the browser, sent in resumable parts
  (:mod:`telemed.portal.uploads`) with a progress bar; ``POST /portal/imaging/upload/{upload_id}``
  stores each instance of the finished upload like a STOW-RS part and answers one result per file.

Who may see what is the FHIR store's business: the lists search ``ImagingStudy`` as the user.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from telemed.fhir.search import query as fhir_query
from telemed.fhir.store import searching
from telemed.imaging import NonConformant, refresh_stale, store_instance
from telemed.kernel.errors import Category
from telemed.portal import audit, uploads, web
from telemed.portal.exceptions import PortalError
from telemed.portal.home import register_home_section
from telemed.portal.i18n import gettext_for, lang_of
from telemed.portal.nav import register_nav
from telemed.portal.session import PortalUser, require_roles

router = APIRouter()
web.add_template_folder(Path(__file__).parent / "templates")
IMAGING_ROLES = {"radiologist", "requesting-doctor", "consulting-expert", "platform-admin"}
UPLOAD_ROLES = {"radiologist", "requesting-doctor", "platform-admin"}
register_nav("Imaging", "/portal/imaging", roles=IMAGING_ROLES, order=24)
UID_SYSTEM = "urn:dicom:uid"
MAX_LIST = 200
MAX_FILES_IN_ZIP = 5000
# A ZIP holds at most this many bytes once inflated (a "zip bomb" is refused, not unpacked).
MAX_INFLATED = 4 * 1024 * 1024 * 1024

ImagingUser = Annotated[PortalUser, Depends(require_roles(*IMAGING_ROLES))]


def _services(request: Request):
    return request.app.state.services


def _name(patient: dict) -> str:
    """A patient's name as people write it: family name first, without a space, for a Chinese name."""
    for n in patient.get("name") or []:
        family, given = n.get("family", ""), n.get("given", [])
        if family and any("\u4e00" <= ch <= "\u9fff" for ch in family):
            return family + "".join(given)
        text = n.get("text") or " ".join([*given, family]).strip()
        if text:
            return text
    return patient.get("id", "")


def study_uid(study: dict) -> str | None:
    for ident in study.get("identifier") or []:
        if ident.get("system") == UID_SYSTEM and str(ident.get("value", "")).startswith("urn:oid:"):
            return ident["value"][8:]
    return None


def _rows(repo, params: list[tuple[str, str]], limit: int = MAX_LIST) -> list[dict]:
    """The visible studies matching ``params``, newest first, with their patients' names: one sorted
    search for the studies and one ``_id`` search for their patients (not one read per row)."""
    q = fhir_query.parse("ImagingStudy", [*params, ("_sort", "-started,-_lastUpdated"), ("_count", str(limit)),
                                          ("_total", "none")], pageable=False, max_count=MAX_LIST)  # fmt: skip
    studies = [m.resource for m in searching.search(repo, q, "").matches]
    pids = sorted({ref.partition("/")[2] for s in studies
                   if (ref := (s.get("subject") or {}).get("reference", "")).startswith("Patient/")})  # fmt: skip
    patients: dict[str, dict] = {}
    if pids:
        pq = fhir_query.parse("Patient", [("_id", ",".join(pids)), ("_count", str(len(pids))), ("_total", "none")],
                              pageable=False, max_count=MAX_LIST)  # fmt: skip
        patients = {m.resource["id"]: m.resource for m in searching.search(repo, pq, "").matches}
    rows = []
    for s in studies:
        uid = study_uid(s)
        codes = {c.get("code", "") for c in s.get("modality") or []}
        if uid is None or codes == {"SM"}:
            continue  # whole-slide images: the pathology pages show them
        pid = (s.get("subject") or {}).get("reference", "").partition("/")[2]
        rows.append({
            "uid": uid, "id": s["id"], "patient_id": pid, "patient": _name(patients.get(pid, {"id": pid})),
            "started": s.get("started", ""), "modalities": " ".join(sorted(codes - {""})),
            "description": s.get("description", ""), "series": s.get("numberOfSeries", 0),
            "instances": s.get("numberOfInstances", 0),
        })  # fmt: skip
    return rows


def viewer_url(request: Request, uid: str) -> str:
    """The study in OHIF, in the portal's language (OHIF's zh catalogue for Chinese)."""
    lng = "zh" if lang_of(request) == "zh-CN" else "en-US"
    return "/portal/viewer/viewer?" + urlencode({"StudyInstanceUIDs": uid, "lng": lng})


def _list(request: Request, user: PortalUser, params: list[tuple[str, str]]) -> list[dict]:
    with audit.repository(request, user) as repo:
        return _rows(repo, params)


@router.get("/portal/imaging")
def institution_studies(request: Request, user: ImagingUser):
    rows = _list(request, user, [])
    return web.render(request, "imaging/studies.html", rows=rows, patient=None, may_upload=user.has_role(*UPLOAD_ROLES))


@router.get("/portal/imaging/patients/{patient_id}")
def patient_studies(request: Request, user: ImagingUser, patient_id: str):
    with audit.repository(request, user) as repo:
        audit.about_patient(request, patient_id)
        patient = repo.read("Patient", patient_id).resource  # another institution's patient: 404
        rows = _rows(repo, [("subject", f"Patient/{patient_id}")])
    return web.render(
        request, "imaging/studies.html", rows=rows, patient=_name(patient), may_upload=user.has_role(*UPLOAD_ROLES)
    )


@router.get("/portal/imaging/studies/{uid}/view")
def open_study(request: Request, user: ImagingUser, uid: str):
    with audit.repository(request, user) as repo:
        q = fhir_query.parse("ImagingStudy", [("identifier", f"{UID_SYSTEM}|urn:oid:{uid}")])
        if not searching.find_ids(repo, q, limit=1):
            raise PortalError(Category.NOT_FOUND, "This study does not exist or you may not see it")
    return RedirectResponse(viewer_url(request, uid), 303)


# -- upload ----------------------------------------------------------------------------------------
UploadUser = Annotated[PortalUser, Depends(require_roles(*UPLOAD_ROLES))]


@router.get("/portal/imaging/upload")
def upload_page(request: Request, user: UploadUser):
    return web.render(request, "imaging/upload.html")


def _members(name: str, data: bytes) -> list[tuple[str, bytes | None, str | None]]:
    """(file name, bytes or None, why not) for each file of a ZIP, or the one DICOM file."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return [(name, data, None)]
    out: list[tuple[str, bytes | None, str | None]] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError):
        return [(name, None, "zip")]
    if len(infos) > MAX_FILES_IN_ZIP or sum(i.file_size for i in infos) > MAX_INFLATED:
        return [(name, None, "zip-size")]
    for info in infos:
        base = info.filename.rsplit("/", 1)[-1]
        if base.startswith(".") or info.filename.startswith("__MACOSX/") or base.upper() == "DICOMDIR":
            continue  # macOS metadata and DICOMDIR (a directory of the media, not an image)
        try:
            out.append((info.filename, archive.read(info), None))
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
            out.append((info.filename, None, "zip-member"))
    return out


def _reason(_, code: str | None, exc: NonConformant | None = None) -> str:
    if code == "zip":
        return _("The ZIP file cannot be read")
    if code == "zip-size":
        return _("The ZIP file holds too many files or too many bytes")
    if code == "zip-member":
        return _("This file of the ZIP cannot be unpacked")
    if exc is not None and exc.status == 0xC000:
        return _("Not a readable DICOM file: %(detail)s", detail=str(exc))
    if exc is not None and exc.status == 0xA700:
        return _("This study is already held by another institution")
    if exc is not None:
        return _("The DICOM file does not conform: %(detail)s", detail=str(exc))
    return _("The file could not be stored")


def store_files(request: Request, user: PortalUser, name: str, data: bytes) -> dict:
    """Store each instance of an uploaded DICOM file or ZIP as the user; one result per file."""
    svc = _services(request)
    _ = gettext_for(request)
    results, touched = [], set()
    for member, raw, problem in _members(name, data):
        if raw is None:
            results.append({"file": member, "accepted": False, "reason": _reason(_, problem)})
            continue
        try:
            stored = store_instance(svc, user.context, raw)
        except NonConformant as exc:
            results.append({"file": member, "accepted": False, "reason": _reason(_, None, exc)})
            continue
        touched.add(stored.study_uid)
        results.append({"file": member, "accepted": True, "study": stored.study_uid,
                        "view": f"/portal/imaging/studies/{stored.study_uid}/view"})  # fmt: skip
    refresh_stale(svc, touched)
    accepted = sum(1 for r in results if r["accepted"])
    return {"results": results, "accepted": accepted, "rejected": len(results) - accepted}


@router.post("/portal/imaging/upload/{upload_id}")
async def store_upload(request: Request, user: UploadUser, upload_id: str) -> JSONResponse:
    user.context.require("ImagingStudy", "write")
    up, data = uploads.read_bytes(request, user, upload_id)
    try:
        body = await run_in_threadpool(store_files, request, user, up.name, data)
    finally:
        uploads.discard(request, upload_id)
    return JSONResponse(body)


def _home_section(request: Request, user: PortalUser):
    with audit.repository(request, user) as repo:
        rows = _rows(repo, [], limit=4)
    return web.render_fragment(request, "imaging/_home.html", rows=rows, may_upload=user.has_role(*UPLOAD_ROLES))


register_home_section(IMAGING_ROLES - {"platform-admin"}, _home_section, order=24)
