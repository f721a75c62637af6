"""The DICOM index: matching for C-FIND (PS3.4 §C.2.2.2) and QIDO-RS (PS3.18 §8.3.4), limited by access.

The four levels (patient, study, series, image) are joined so any level can be matched on the
attributes of the levels above it (relational queries, PS3.4 §C.4.1.2.2.2). Every query is limited
to the studies whose FHIR ImagingStudy the caller may read (``telemed.fhir.store.access``): a
study another institution cannot see is not found, exactly like a FHIR resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, or_, select

from telemed.db.schema import dicom_instance as t_instance
from telemed.db.schema import dicom_patient as t_patient
from telemed.db.schema import dicom_series as t_series
from telemed.db.schema import dicom_study as t_study
from telemed.db.schema import resource as t_resource
from telemed.fhir.store import access
from telemed.fhir.store.context import AccessContext

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


@dataclass(frozen=True)
class Key:
    """A matching/return key: its column, VR (for matching rules) and level."""

    column: object
    vr: str
    level: str


_SERIES_COUNT = (
    select(func.count()).select_from(t_series).where(t_series.c.study_uid == t_study.c.study_uid).scalar_subquery()
)
KEYS: dict[str, Key] = {
    "PatientID": Key(t_patient.c.patient_id, "LO", "PATIENT"),
    "PatientName": Key(t_patient.c.patient_name, "PN", "PATIENT"),
    "PatientBirthDate": Key(t_patient.c.birth_date, "DA", "PATIENT"),
    "PatientSex": Key(t_patient.c.sex, "CS", "PATIENT"),
    "StudyInstanceUID": Key(t_study.c.study_uid, "UI", "STUDY"),
    "StudyDate": Key(t_study.c.study_date, "DA", "STUDY"),
    "StudyTime": Key(t_study.c.study_time, "TM", "STUDY"),
    "AccessionNumber": Key(t_study.c.accession_number, "SH", "STUDY"),
    "StudyID": Key(t_study.c.study_id, "SH", "STUDY"),
    "ReferringPhysicianName": Key(t_study.c.referring_physician, "PN", "STUDY"),
    "StudyDescription": Key(t_study.c.description, "LO", "STUDY"),
    "ModalitiesInStudy": Key(t_study.c.modalities, "CS", "STUDY"),
    "NumberOfStudyRelatedSeries": Key(t_study.c.num_series, "IS", "STUDY"),
    "NumberOfStudyRelatedInstances": Key(t_study.c.num_instances, "IS", "STUDY"),
    "SeriesInstanceUID": Key(t_series.c.series_uid, "UI", "SERIES"),
    "Modality": Key(t_series.c.modality, "CS", "SERIES"),
    "SeriesNumber": Key(t_series.c.series_number, "IS", "SERIES"),
    "SeriesDescription": Key(t_series.c.description, "LO", "SERIES"),
    "BodyPartExamined": Key(t_series.c.body_part, "CS", "SERIES"),
    "NumberOfSeriesRelatedInstances": Key(t_series.c.num_instances, "IS", "SERIES"),
    "SOPInstanceUID": Key(t_instance.c.sop_instance_uid, "UI", "IMAGE"),
    "SOPClassUID": Key(t_instance.c.sop_class_uid, "UI", "IMAGE"),
    "InstanceNumber": Key(t_instance.c.instance_number, "IS", "IMAGE"),
    "Rows": Key(t_instance.c.rows, "US", "IMAGE"),
    "Columns": Key(t_instance.c.columns, "US", "IMAGE"),
    "NumberOfFrames": Key(t_instance.c.frames, "IS", "IMAGE"),
}
# Attributes each level returns by default (QIDO-RS PS3.18 Table 6.7.1-2; C-FIND unique keys).
DEFAULT_KEYS = {
    "PATIENT": ["PatientID", "PatientName", "PatientBirthDate", "PatientSex"],
    "STUDY": [
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName", "PatientName",
        "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ],
    "SERIES": [
        "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
        "BodyPartExamined", "StudyInstanceUID",
    ],
    "IMAGE": [
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
        "StudyInstanceUID", "SeriesInstanceUID",
    ],
}  # fmt: skip
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


class UnsupportedKey(ValueError):
    """A matching key the index cannot match on (QIDO-RS answers 400; C-FIND ignores it)."""


def visible_studies(ctx: AccessContext, now: datetime):
    """A WHERE clause on ``dicom_study`` for what ``ctx`` may read (None: everything)."""
    if ctx.sees_all:
        return None
    clause = access.visibility(t_resource, "ImagingStudy", ctx, now)
    if clause is None:
        return None
    readable = select(t_resource.c.id).where(
        t_resource.c.resource_type == "ImagingStudy", t_resource.c.deleted.is_(False), clause
    )
    return t_study.c.fhir_id.in_(readable)


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def match_clause(keyword: str, value: str, fuzzy: bool = False):
    """One attribute's matching rule (PS3.4 §C.2.2.2): single value, list of UIDs, wild card, range."""
    key = KEYS.get(keyword)
    if key is None:
        raise UnsupportedKey(keyword)
    col = key.column
    value = value.strip() if key.vr != "PN" else value.strip().rstrip("^= ")
    if value in ("", "*"):
        return None
    if keyword == "ModalitiesInStudy":
        wanted = [v for v in value.split("\\") if v]
        return t_study.c.study_uid.in_(select(t_series.c.study_uid).where(t_series.c.modality.in_(wanted)))
    if key.vr == "UI" or (key.vr in ("CS",) and "\\" in value):
        return col.in_([v for v in value.split("\\") if v])
    if key.vr in ("DA", "TM") and "-" in value:
        low, _, high = value.partition("-")
        conds = []
        if low:
            conds.append(col >= low)
        if high:
            conds.append(col <= (high + "\uffff" if key.vr == "TM" else high))
        return and_(*conds) if conds else None
    if key.vr in ("IS", "US"):
        try:
            return col == int(value)
        except ValueError:
            raise UnsupportedKey(f"{keyword}={value!r} is not a number") from None
    if key.vr == "PN":
        pattern = _like(value) if ("*" in value or "?" in value) else _like(value) + ("%" if fuzzy else "")
        if fuzzy or pattern != value:
            return or_(func.lower(col).like(pattern.lower(), escape="\\"), col.like("%=" + pattern, escape="\\"))
        return or_(col == value, col.like(_like(value) + "^%", escape="\\"))
    if "*" in value or "?" in value:
        return col.like(_like(value), escape="\\")
    return col == value


def query(
    conn: Connection,
    ctx: AccessContext,
    now: datetime,
    level: str,
    criteria: list[tuple[str, str]],
    *,
    limit: int | None = None,
    offset: int = 0,
    fuzzy: bool = False,
    strict: bool = False,
) -> list[dict]:
    """Rows (keyword -> value) at ``level`` matching all ``criteria``; unknown keys raise
    :class:`UnsupportedKey` when ``strict`` (QIDO-RS), else they match everything (C-FIND)."""
    if level not in LEVELS:
        raise UnsupportedKey(f"QueryRetrieveLevel {level!r}")
    depth = LEVELS.index(level)
    columns = {
        k: key.column.label(k) for k, key in KEYS.items() if LEVELS.index(key.level) <= depth or key.level == "PATIENT"
    }
    if level == "PATIENT":
        columns["NumberOfPatientRelatedStudies"] = func.count(t_study.c.study_uid).label(
            "NumberOfPatientRelatedStudies"
        )
    source = t_patient.join(t_study, t_study.c.patient_pk == t_patient.c.id)
    if depth >= 2:
        source = source.join(t_series, t_series.c.study_uid == t_study.c.study_uid)
    if depth >= 3:
        source = source.join(t_instance, t_instance.c.series_uid == t_series.c.series_uid)
    conds = []
    for keyword, value in criteria:
        key = KEYS.get(keyword)
        if key is None or LEVELS.index(key.level) > depth:
            if strict:
                raise UnsupportedKey(keyword)
            continue
        clause = match_clause(keyword, value, fuzzy)
        if clause is not None:
            conds.append(clause)
    visible = visible_studies(ctx, now)
    if visible is not None:
        conds.append(visible)
    stmt = select(*columns.values()).select_from(source).where(*conds)
    if level == "PATIENT":
        stmt = stmt.group_by(*[c for k, c in columns.items() if k in DEFAULT_KEYS["PATIENT"]], t_patient.c.id)
        stmt = stmt.with_only_columns(
            *[KEYS[k].column.label(k) for k in DEFAULT_KEYS["PATIENT"]], columns["NumberOfPatientRelatedStudies"]
        )
        order = [t_patient.c.id]
    elif level == "STUDY":
        order = [t_study.c.study_date.desc(), t_study.c.study_uid]
    elif level == "SERIES":
        order = [t_series.c.series_number, t_series.c.series_uid]
    else:
        order = [t_instance.c.instance_number, t_instance.c.sop_instance_uid]
    stmt = stmt.order_by(*order).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def instances(
    conn: Connection,
    ctx: AccessContext,
    now: datetime,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    columns: tuple = (),
) -> list:
    """Instance rows of a study/series/instance the caller may read, in instance-number order."""
    cols = columns or (
        t_instance.c.sop_instance_uid,
        t_instance.c.series_uid,
        t_instance.c.study_uid,
        t_instance.c.blob_key,
        t_instance.c.transfer_syntax,
        t_instance.c.sop_class_uid,
    )
    conds = [t_instance.c.study_uid == study]
    if series is not None:
        conds.append(t_instance.c.series_uid == series)
    if instance is not None:
        conds.append(t_instance.c.sop_instance_uid == instance)
    visible = visible_studies(ctx, now)
    stmt = select(*cols).where(*conds)
    if visible is not None:
        stmt = stmt.where(t_instance.c.study_uid.in_(select(t_study.c.study_uid).where(visible)))
    stmt = stmt.order_by(t_instance.c.series_uid, t_instance.c.instance_number, t_instance.c.sop_instance_uid)
    return list(conn.execute(stmt))


def retrieve_keys(conn: Connection, ctx: AccessContext, now: datetime, level: str, identifier: dict[str, str]) -> list:
    """Instances selected by a C-MOVE/C-GET identifier (unique keys at and above ``level``)."""
    criteria = [(k, v) for k, v in identifier.items() if k in UNIQUE.values() and v]
    if not criteria:
        return []
    source = t_instance.join(t_study, t_study.c.study_uid == t_instance.c.study_uid).join(
        t_patient, t_patient.c.id == t_study.c.patient_pk
    )
    conds = []
    for keyword, value in criteria:
        col = {
            "PatientID": t_patient.c.patient_id,
            "StudyInstanceUID": t_instance.c.study_uid,
            "SeriesInstanceUID": t_instance.c.series_uid,
            "SOPInstanceUID": t_instance.c.sop_instance_uid,
        }[keyword]
        conds.append(col.in_([v for v in value.split("\\") if v]) if keyword != "PatientID" else col == value)
    visible = visible_studies(ctx, now)
    if visible is not None:
        conds.append(visible)
    stmt = (
        select(
            t_instance.c.sop_instance_uid,
            t_instance.c.sop_class_uid,
            t_instance.c.blob_key,
            t_instance.c.transfer_syntax,
        )
        .select_from(source)
        .where(*conds)
        .order_by(t_instance.c.series_uid, t_instance.c.instance_number)
    )
    return list(conn.execute(stmt))
