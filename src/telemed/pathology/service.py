"""Use cases of remote slides at the centre: register a slide sent by a site gateway, check access.

No HTTP here: ``f(repo, ctx, store, ...)``; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from telemed.fhir.search import query as fhir_query
from telemed.fhir.store import searching
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, Issue, TelemedError
from telemed.pathology import model
from telemed.pathology.centre import SlideRecord, SlideStore
from telemed.pathology.slide import Slide, SlideInfo

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _incorrect(message: str, where: str) -> TelemedError:
    return TelemedError(Category.INCORRECT, message, [Issue(message, "invalid", where)])


def _subject(repo: Repository, ctx: AccessContext, patient: dict | None) -> str:
    if patient:
        system, value = str(patient.get("system") or ""), str(patient.get("value") or "")
        if not value:
            raise _incorrect("A patient identifier needs a value", "patient.value")
        token = f"{system}|{value}" if system else value
        found = searching.find_ids(repo, fhir_query.parse("Patient", [("identifier", token)]), limit=2)
        if len(found) == 1:
            return f"Patient/{found[0]}"
        ident = {"system": system, "value": value} if system else {"value": value}
        created = repo.create("Patient", model.patient(ident, ctx.organization, patient.get("name")))
        return f"Patient/{created.resource['id']}"
    # Whose slide it is is not known yet: the study concerns the gateway's device until it is.
    q = fhir_query.parse("Device", [("identifier", f"{model.GATEWAY_SYSTEM}|{ctx.user}")])
    found = searching.find_ids(repo, q, limit=1)
    if found:
        return f"Device/{found[0]}"
    return f"Device/{repo.create('Device', model.gateway_device(ctx.user, ctx.organization)).resource['id']}"


def register_slide(repo: Repository, ctx: AccessContext, store: SlideStore, body: dict) -> tuple[SlideRecord, bool]:
    """Register a slide announced by a gateway; returns the record and whether it is new.

    The same gateway announcing the same content again (after a restart) gets the same slide and
    its upload offset back, so nothing is sent twice."""
    ctx.require("ImagingStudy", "write")
    try:
        name, size, sha256 = str(body["name"])[:200], int(body["size"]), str(body["sha256"]).lower()
        info = SlideInfo.from_json(dict(body["info"]))
    except (KeyError, TypeError, ValueError):
        raise _incorrect("Give the slide's name, size, sha256 and info", "body") from None
    if not _SHA256.match(sha256):
        raise _incorrect("sha256 is 64 hexadecimal digits", "sha256")
    if size <= 0 or info.width <= 0 or info.height <= 0:
        raise _incorrect("The slide's size and dimensions must be positive", "size")
    existing = store.find(ctx.user, sha256)
    if existing is not None:
        return existing, False
    subject = _subject(repo, ctx, body.get("patient"))
    specimen = None
    if body.get("specimen"):
        spec = repo.create("Specimen", model.specimen(str(body["specimen"]), subject, body.get("gross")))
        specimen = f"Specimen/{spec.resource['id']}"
    request = body.get("request")
    if request is not None and not re.fullmatch(r"ServiceRequest/[A-Za-z0-9\-.]{1,64}", str(request)):
        raise _incorrect("request is a reference to a ServiceRequest", "request")
    study = model.slide_study(name, subject, specimen=specimen, request=request, width=info.width,
                              height=info.height, mpp=info.mpp_x)  # fmt: skip
    created = repo.create("ImagingStudy", study).resource
    rec = SlideRecord(created["id"], name, size, sha256, info.to_json(), gateway=ctx.user, study=created["id"])
    return store.register(rec), True


def readable(repo: Repository, slide_id: str) -> bool:
    """A slide is visible exactly when its ImagingStudy is (another institution's is a 404)."""
    try:
        repo.read("ImagingStudy", slide_id)
    except TelemedError as exc:
        if exc.category in (Category.NOT_FOUND, Category.GONE, Category.FORBIDDEN):
            return False
        raise
    return True


def mark_available(repo: Repository, slide_id: str) -> None:
    study = repo.read("ImagingStudy", slide_id).resource
    if study.get("status") != "available":
        study["status"] = "available"
        repo.update("ImagingStudy", slide_id, study)


SM = "http://dicom.nema.org/resources/ontology/DCM|SM"


def visible_slides(repo: Repository, store: SlideStore, limit: int = 200) -> list[tuple[dict, SlideRecord]]:
    """The slides the caller may see (their ImagingStudy is visible), newest first, with their records."""
    q = fhir_query.parse("ImagingStudy", [("modality", SM), ("_sort", "-_lastUpdated"), ("_count", str(limit))])
    out = []
    for id_ in searching.find_ids(repo, q, limit=limit):
        try:
            rec = store.record(id_)
        except TelemedError:
            continue  # an SM study with no slide at the centre (e.g. from the DICOM service): not viewable yet
        out.append((repo.read("ImagingStudy", id_).resource, rec))
    return out


def import_slide(repo: Repository, store: SlideStore, path, *, patient: str, name: str | None = None,
                 request: str | None = None) -> SlideRecord:  # fmt: skip
    """A slide file (or a DICOM WSI folder) already at the centre (scanned there, or the demo's) stored as complete: its
    ImagingStudy (status available) for ``Patient/<patient>`` and its record, the file copied in."""
    path = Path(path)
    info = Slide(path).info  # refuses a corrupt or foreign file (SlideError, 422)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            while chunk := f.read(4 * 1024 * 1024):
                digest.update(chunk)
    # A DICOM WSI is a folder (one instance per level): kept as the folder ``slide.dicom``.
    name = (name or (f"{path.name}.dicom" if path.is_dir() else path.name))[:200]
    study = model.slide_study(name, f"Patient/{patient}", request=request, width=info.width, height=info.height,
                              mpp=info.mpp_x, available=True)  # fmt: skip
    created = repo.create("ImagingStudy", study).resource
    size = sum(f.stat().st_size for f in files)
    rec = SlideRecord(created["id"], name, size, digest.hexdigest(), info.to_json(), gateway=None, offset=size,
                      complete=True, study=created["id"])  # fmt: skip
    store.save(rec)
    if path.is_dir():
        shutil.copytree(path, store.folder(rec.id) / "slide.dicom")
    else:
        shutil.copyfile(path, store.folder(rec.id) / f"slide{rec.suffix}")
    return rec
