"""Anonymising a study for teaching (DICOM PS3.15 Annex E, Basic Application Level Confidentiality
Profile) into a teaching collection with no link to the patient.

The attribute actions of the Basic Profile (Table E.1-1: remove, empty, replace with a dummy,
replace UIDs consistently) come from ``dicognito`` (PyPI, maintained, built on pydicom and on that
table): one Anonymizer per study, so the new Study/Series/SOP Instance UIDs stay consistent within
it; names and identifiers become dummies, dates are shifted. On top of it, as the profile asks:
private attributes are removed (the Retain Safe Private option is not claimed), Patient Identity
Removed is YES and De-identification Method Code Sequence names the profile (DCM 113100) and the
options applied (113107 Retain Longitudinal Temporal Information Modified Dates). An instance whose
pixels carry burned-in annotation (Burned In Annotation not NO, for the modalities that write
text into pixels: US, secondary captures, documents) is refused: the Clean Pixel Data option is
not implemented, and such an instance would leak the patient's name.

A teaching case is a FHIR ``Basic`` resource (code teaching-case) with the anonymised instances in
the blob store; it references no Patient, ImagingStudy or request, so nothing leads back.
"""

from __future__ import annotations

import io
import zipfile
from datetime import datetime

import pydicom
from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy.engine import Connection

from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.imaging import wado
from telemed.imaging.reading import model as m
from telemed.imaging.reading import service as s
from telemed.kernel.errors import Category, TelemedError

TEACHING_SYSTEM = f"{m.BASE}/CodeSystem/teaching-collection"
TEACHING_URL = f"{m.BASE}/StructureDefinition/teaching-case"
BURNED_IN_MODALITIES = {"US", "OT", "SC", "XC", "DOC", "ES"}
ALLOWED = frozenset({"radiologist", "platform-admin"})


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def anonymise_dataset(ds: Dataset, anonymizer: Anonymizer) -> Dataset:
    """Apply the Basic Profile to one data set (in place) and return it."""
    burned = str(ds.get("BurnedInAnnotation", "")).upper()
    modality = str(ds.get("Modality", "")).upper()
    if burned == "YES" or (modality in BURNED_IN_MODALITIES and burned != "NO"):
        raise TelemedError(Category.UNPROCESSABLE,
                           "An image may carry the patient's name in its pixels (burned-in annotation); "
                           "it cannot be anonymised here")  # fmt: skip
    anonymizer.anonymize(ds)
    ds.remove_private_tags()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Basic Application Confidentiality Profile (dicognito); dates shifted"
    ds.DeidentificationMethodCodeSequence = Sequence([
        _code("113100", "Basic Application Confidentiality Profile"),
        _code("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ])  # fmt: skip
    if "file_meta" in dir(ds) and ds.file_meta is not None and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def anonymise_study(conn: Connection, repo: Repository, blobs, ctx: AccessContext, now: datetime, ids,
                    study: str, *, title: str, note: str = "") -> dict:  # fmt: skip
    """Copy ``ImagingStudy/study`` (as ``ctx`` may read it) into the teaching collection; returns the
    ``Basic`` teaching case. Nothing is written unless every instance was anonymised."""
    if not ALLOWED & set(ctx.roles):
        raise TelemedError(Category.FORBIDDEN, "Only a radiologist can add studies to the teaching collection")
    title = (title or "").strip()
    if not title or len(title) > 200:
        raise s.incorrect("Give the teaching case a title of at most 200 characters", "title")
    stored = s.read(repo, "ImagingStudy", study)
    if stored is None:
        raise TelemedError(Category.NOT_FOUND, f"No study {study}")
    uid = m.study_uid(stored.resource) or ""
    rows = wado.instance_rows(conn, ctx, now, uid)
    anonymizer = Anonymizer()
    files = []
    for row in rows:
        ds = pydicom.dcmread(io.BytesIO(blobs.get(row.blob_key)))
        anonymise_dataset(ds, anonymizer)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append((ds, out.getvalue()))
    keys = [blobs.put(data) for _ds, data in files]
    first = files[0][0] if files else Dataset()
    case = {
        "resourceType": "Basic",
        "id": f"teach-{ids()}"[:64],
        "code": {"coding": [{"system": TEACHING_SYSTEM, "code": "teaching-case"}], "text": "教学病例"},
        "created": now.date().isoformat(),
        "extension": [{"url": TEACHING_URL, "extension": [
            {"url": "title", "valueString": title},
            *([{"url": "note", "valueString": note.strip()[:2000]}] if note.strip() else []),
            {"url": "modality", "valueString": m.study_modality(stored.resource)},
            {"url": "bodyPart", "valueString": m.study_body_part(stored.resource) or "-"},
            {"url": "studyInstanceUid", "valueString": str(first.get("StudyInstanceUID", ""))},
            {"url": "profile", "valueString": "DCM 113100 Basic Application Confidentiality Profile"},
            *({"url": "instance", "valueString": k} for k in keys),
        ]}],
    }  # fmt: skip
    if ctx.practitioner:
        case["author"] = m.ref("Practitioner", ctx.practitioner)
    return repo.create("Basic", case).resource


def case_parts(case: dict) -> dict:
    out: dict = {"instance": []}
    for e in case.get("extension", []):
        if e.get("url") == TEACHING_URL:
            for p in e.get("extension", []):
                if p["url"] == "instance":
                    out["instance"].append(p["valueString"])
                else:
                    out[p["url"]] = p.get("valueString")
    return out


def collection(repo: Repository) -> list[dict]:
    """The teaching cases the caller sees, newest first."""
    found = s.find(repo, "Basic", [("code", f"{TEACHING_SYSTEM}|teaching-case"), ("_sort", "-_lastUpdated")], 200)
    return [f.resource for f in found]


def zip_of(repo: Repository, blobs, case_id: str) -> bytes:
    """The teaching case's anonymised instances as a ZIP of DICOM files."""
    stored = s.read(repo, "Basic", case_id)
    if stored is None or stored.resource.get("code", {}).get("coding", [{}])[0].get("system") != TEACHING_SYSTEM:
        raise TelemedError(Category.NOT_FOUND, "No such teaching case")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i, key in enumerate(case_parts(stored.resource)["instance"], 1):
            z.writestr(f"IM{i:05d}.dcm", blobs.get(key))
    return buf.getvalue()
