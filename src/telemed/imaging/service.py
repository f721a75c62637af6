"""Imaging use cases without a protocol: store an instance, keep ImagingStudy in step, know remote AEs.

Storing (the C-STORE service of PS3.4 Annex B and STOW-RS of PS3.18 §10.5 both end here):

1. the bytes are parsed and checked (:func:`telemed.imaging.model.parse_instance`); a refused
   instance touches neither the blob store nor the database;
2. the bytes, exactly as received, go to the content-addressed blob store (idempotent: a crash
   after this leaves an unreferenced blob, never a row pointing at nothing);
3. one transaction writes the index rows, the FHIR Patient (matched by identifier at the sending
   institution, or created) and, for a new study, its FHIR ImagingStudy through the Repository
   (access rules and owner institution as for any FHIR write), and an AuditEvent.

Updating the ImagingStudy on every instance would write a FHIR version per image; instead the
study row is marked ``fhir_stale`` in the same transaction and :func:`refresh_stale` rewrites the
ImagingStudy once per association (on release) or STOW request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from telemed.db.engine import unit_of_work
from telemed.db.schema import dicom_instance as t_instance
from telemed.db.schema import dicom_patient as t_patient
from telemed.db.schema import dicom_series as t_series
from telemed.db.schema import dicom_study as t_study
from telemed.fhir.search import query as fhir_query
from telemed.fhir.store import audit, searching
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.imaging import model
from telemed.imaging.model import AE_TITLE_SYSTEM, NonConformant, ParsedInstance
from telemed.kernel.blobs import BlobStore
from telemed.kernel.errors import TelemedError

log = logging.getLogger("telemed.imaging")

DICOMWEB_ENDPOINT_ID = "dicomweb"
PATIENT_ID_SYSTEM = "urn:telemed:dicom-patient-id"  # + ":" + institution id
_WRITERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicom-blob")


class _Clock(Protocol):
    def now(self) -> datetime: ...


class Platform(Protocol):
    """What imaging needs of :class:`telemed.app.Services` (a domain does not import the app)."""

    engine: Engine
    blobs: BlobStore
    clock: _Clock

    def repository(self, conn: Connection, context: AccessContext) -> Repository: ...

    @property
    def site_url(self) -> str: ...


@dataclass(frozen=True)
class RemoteAE:
    """A known DICOM application entity (a FHIR Endpoint with the AE title as identifier)."""

    ae_title: str
    host: str | None
    port: int | None
    organization: str | None
    endpoint_id: str

    @property
    def context(self) -> AccessContext:
        """Who the AE acts as: a scoped member of its institution."""
        return AccessContext(
            user=f"dicom:{self.ae_title}"[:64],
            scopes=frozenset({"user/*.*"}),
            roles=frozenset({"dicom-ae"}),
            organization=self.organization,
            clinical="scoped",
        )


@dataclass
class StoreResult:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    created_study: bool
    replaced: bool
    patient: str | None = None  # the FHIR Patient of the study


def endpoint_resource(ae_title: str, host: str, port: int, organization: str, name: str | None = None) -> dict:
    """A FHIR Endpoint describing a remote DICOM AE (DIMSE), managed by its institution."""
    return {
        "resourceType": "Endpoint",
        "identifier": [{"system": AE_TITLE_SYSTEM, "value": ae_title}],
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-dimse",
            "display": "DICOM DIMSE",
        },
        "name": name or ae_title,
        "managingOrganization": {"reference": f"Organization/{organization}"},
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": f"dicom://{ae_title}@{host}:{port}",
    }


def _parse_address(address: str) -> tuple[str | None, int | None]:
    rest = address.split("://", 1)[-1].split("@", 1)[-1]
    host, _, port = rest.rpartition(":")
    try:
        return (host or None), int(port)
    except ValueError:
        return rest or None, None


def find_ae(conn: Connection, platform: Platform, ae_title: str) -> RemoteAE | None:
    """The active Endpoint registered for ``ae_title`` (directory data: read as the platform)."""
    repo = platform.repository(conn, AccessContext.system())
    q = fhir_query.parse("Endpoint", [("identifier", f"{AE_TITLE_SYSTEM}|{ae_title.strip()}"), ("status", "active")])
    for id_ in searching.find_ids(repo, q, limit=1):
        ep = repo.read("Endpoint", id_).resource
        host, port = _parse_address(ep.get("address", ""))
        org_ref = (ep.get("managingOrganization") or {}).get("reference", "")
        org = org_ref.split("/", 1)[1] if org_ref.startswith("Organization/") else None
        return RemoteAE(ae_title.strip(), host, port, org, id_)
    return None


def ensure_dicomweb_endpoint(conn: Connection, platform: Platform) -> str:
    """The platform's own DICOMweb Endpoint, referenced from every ImagingStudy."""
    repo = platform.repository(conn, AccessContext.system())
    if not repo.exists("Endpoint", DICOMWEB_ENDPOINT_ID):
        repo.update(
            "Endpoint",
            DICOMWEB_ENDPOINT_ID,
            {
                "resourceType": "Endpoint",
                "id": DICOMWEB_ENDPOINT_ID,
                "status": "active",
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "dicom-wado-rs",
                },
                "name": "Telemed DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
                "payloadType": [{"text": "DICOM"}],
                "payloadMimeType": ["application/dicom", "application/dicom+json"],
                "address": platform.site_url + "/dicomweb",
            },
        )
    return DICOMWEB_ENDPOINT_ID


def _patient(conn: Connection, repo: Repository, ctx: AccessContext, attrs: dict) -> tuple[int, str]:
    """The index row and FHIR Patient id for a DICOM Patient ID at the sending institution."""
    org = ctx.organization or ""
    pid = attrs["patient_id"]
    row = conn.execute(
        select(t_patient.c.id, t_patient.c.fhir_id).where(t_patient.c.owner_org == org, t_patient.c.patient_id == pid)
    ).first()
    if row is not None:
        return row.id, row.fhir_id
    fhir_id = None
    if pid and org:
        q = fhir_query.parse("Patient", [("identifier", pid), ("organization", f"Organization/{org}")])
        found = searching.find_ids(repo, q, limit=2)
        if len(found) == 1:  # two patients with that number: do not guess, register a new one
            fhir_id = found[0]
    if fhir_id is None:
        system = f"{PATIENT_ID_SYSTEM}:{org}" if org else PATIENT_ID_SYSTEM
        fhir_id = repo.create("Patient", model.patient_resource(org or None, attrs, system)).resource["id"]
    values = {"owner_org": org, "patient_id": pid, "fhir_id": fhir_id}
    values.update({k: attrs.get(k) for k in ("patient_name", "birth_date", "sex")})
    pk = conn.execute(insert(t_patient).values(**values).returning(t_patient.c.id)).scalar_one()
    return pk, fhir_id


def _record(conn, ctx, platform, outcome: str, entity: str | None, patient: str | None, description: str) -> None:
    audit.record(
        conn, ctx, audit.AuditRecord("create", outcome, entity, None, patient, description=description), platform.clock
    )


def store_instance(
    platform: Platform,
    ctx: AccessContext,
    raw: bytes,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    study_uid: str | None = None,
) -> StoreResult:
    """Check, keep and index one Part 10 instance; raises :class:`NonConformant` when refused.

    ``sop_class_uid``/``sop_instance_uid`` are what the C-STORE request announced (they must match
    the dataset, PS3.4 §B.2.3); ``study_uid`` is the STOW-RS target study, if any.
    """
    parsed = model.parse_instance(raw)
    if sop_class_uid and parsed.sop_class_uid != sop_class_uid:
        raise NonConformant(f"SOP Class {parsed.sop_class_uid} does not match the request's {sop_class_uid}")
    if sop_instance_uid and parsed.sop_instance_uid != sop_instance_uid:
        raise NonConformant("SOP Instance UID does not match the request's Affected SOP Instance UID")
    if study_uid and parsed.study_uid != study_uid:
        raise NonConformant(f"The instance belongs to study {parsed.study_uid}, not {study_uid}", 0xA900)
    # The file is written (and fsynced) in another thread while this one indexes; the transaction
    # waits for it before its last statement, so no committed row ever points at a missing file.
    stored = _WRITERS.submit(platform.blobs.put, raw)
    metadata = model.metadata_json(parsed)
    for attempt in range(5):
        try:
            with unit_of_work(platform.engine) as conn:
                return _index(conn, platform, ctx, parsed, stored.result, metadata)
        except IntegrityError:
            # Another association created the same patient, study or series a moment earlier: retry
            # (the winner's rows are now visible).
            if attempt == 4:
                raise
        except OperationalError as exc:  # PostgreSQL serialization/deadlock: retry too
            if attempt == 4 or "deadlock" not in str(exc).lower():
                raise
        time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _index(
    conn: Connection,
    platform: Platform,
    ctx: AccessContext,
    parsed: ParsedInstance,
    blob_key: Callable[[], str],
    metadata: bytes,
) -> StoreResult:
    now = platform.clock.now()
    repo = platform.repository(conn, ctx)
    org = ctx.organization or ""
    attrs = parsed.index
    study = conn.execute(
        select(t_study.c.owner_org, t_study.c.fhir_id, t_study.c.patient_pk, t_study.c.modalities).where(
            t_study.c.study_uid == parsed.study_uid
        )
    ).first()
    if study is not None and study.owner_org != org and not ctx.sees_all:
        raise NonConformant("The study cannot be stored by this sender", 0xA700)
    existing = conn.execute(
        select(t_instance.c.series_uid, t_instance.c.study_uid).where(
            t_instance.c.sop_instance_uid == parsed.sop_instance_uid
        )
    ).first()
    if existing is not None and (existing.series_uid, existing.study_uid) != (parsed.series_uid, parsed.study_uid):
        raise NonConformant("This SOP Instance UID is already stored in another series", 0xA900)
    row = {
        "sop_class_uid": parsed.sop_class_uid,
        "transfer_syntax": parsed.transfer_syntax,
        "size": len(parsed.raw),
        "metadata": metadata,
        "received": now,
        **attrs["instance"],
    }
    created_study = False
    if existing is not None:  # the same instance again: the new copy replaces the old (same UIDs)
        conn.execute(update(t_study).where(t_study.c.study_uid == parsed.study_uid).values(fhir_stale=True))
        patient_fhir = None
    else:
        series_new = (
            conn.execute(
                update(t_series)
                .where(t_series.c.series_uid == parsed.series_uid)
                .values(num_instances=t_series.c.num_instances + 1)
            ).rowcount
            == 0
        )
        if series_new:
            conn.execute(
                insert(t_series).values(
                    series_uid=parsed.series_uid, study_uid=parsed.study_uid, num_instances=1, **attrs["series"]
                )
            )
        modality = attrs["series"].get("modality")
        if study is None:
            patient_pk, patient_fhir = _patient(conn, repo, ctx, attrs["patient"])
            conn.execute(
                insert(t_study).values(
                    study_uid=parsed.study_uid,
                    patient_pk=patient_pk,
                    fhir_id="",
                    owner_org=org,
                    modalities=modality,
                    num_series=1,
                    num_instances=1,
                    fhir_stale=False,
                    updated=now,
                    **attrs["study"],
                )
            )
            endpoint = ensure_dicomweb_endpoint(conn, platform)
            res = model.imaging_study(
                {"study_uid": parsed.study_uid, **attrs["study"]},
                patient_fhir,
                [{"series_uid": parsed.series_uid, **attrs["series"]}],
                {parsed.series_uid: [{"sop_instance_uid": parsed.sop_instance_uid, **row}]},
                endpoint,
            )
            fhir_id = repo.create("ImagingStudy", res).resource["id"]
            conn.execute(update(t_study).where(t_study.c.study_uid == parsed.study_uid).values(fhir_id=fhir_id))
            created_study = True
        else:
            patient_fhir = None
            values: dict = {
                "num_instances": t_study.c.num_instances + 1,
                "num_series": t_study.c.num_series + (1 if series_new else 0),
                "fhir_stale": True,
                "updated": now,
            }
            mods = set((study.modalities or "").split("\\")) - {""}
            if modality and modality not in mods:
                values["modalities"] = "\\".join(sorted(mods | {modality}))
            conn.execute(update(t_study).where(t_study.c.study_uid == parsed.study_uid).values(**values))
    row["blob_key"] = blob_key()  # the file is on disk (a failure here rolls the whole instance back)
    if existing is not None:
        conn.execute(update(t_instance).where(t_instance.c.sop_instance_uid == parsed.sop_instance_uid).values(**row))
    else:
        conn.execute(
            insert(t_instance).values(
                sop_instance_uid=parsed.sop_instance_uid,
                series_uid=parsed.series_uid,
                study_uid=parsed.study_uid,
                **row,
            )
        )
    _record(
        conn,
        ctx,
        platform,
        "0",
        f"ImagingStudy/{study.fhir_id}" if study is not None else None,
        patient_fhir,
        f"DICOM store {parsed.sop_class_uid} {parsed.sop_instance_uid}",
    )
    if patient_fhir is None and study is not None:
        patient_fhir = conn.execute(select(t_patient.c.fhir_id).where(t_patient.c.id == study.patient_pk)).scalar()
    return StoreResult(
        parsed.sop_class_uid,
        parsed.sop_instance_uid,
        parsed.study_uid,
        parsed.series_uid,
        created_study,
        existing is not None,
        patient_fhir,
    )


def refresh_study(conn: Connection, platform: Platform, study_uid: str) -> None:
    """Rewrite a study's ImagingStudy from the index (as the platform: the owner stays the sender's)."""
    study = conn.execute(select(t_study).where(t_study.c.study_uid == study_uid)).first()
    if study is None or not study.fhir_id:
        return
    patient = conn.execute(select(t_patient.c.fhir_id).where(t_patient.c.id == study.patient_pk)).scalar_one()
    series = [dict(r._mapping) for r in conn.execute(select(t_series).where(t_series.c.study_uid == study_uid))]
    series.sort(key=lambda s: (s.get("series_number") is None, s.get("series_number") or 0, s["series_uid"]))
    insts: dict[str, list[dict]] = {}
    for r in conn.execute(
        select(
            t_instance.c.sop_instance_uid,
            t_instance.c.series_uid,
            t_instance.c.sop_class_uid,
            t_instance.c.instance_number,
        )
        .where(t_instance.c.study_uid == study_uid)
        .order_by(t_instance.c.instance_number, t_instance.c.sop_instance_uid)
    ):
        insts.setdefault(r.series_uid, []).append(dict(r._mapping))
    repo = platform.repository(conn, AccessContext.system())
    res = model.imaging_study(dict(study._mapping), patient, series, insts, ensure_dicomweb_endpoint(conn, platform))
    res["id"] = study.fhir_id
    repo.update("ImagingStudy", study.fhir_id, res)
    conn.execute(update(t_study).where(t_study.c.study_uid == study_uid).values(fhir_stale=False))


def refresh_stale(platform: Platform, study_uids: set[str] | None = None) -> int:
    """Bring the ImagingStudy of stale studies (these, or all) up to date; returns how many."""
    with unit_of_work(platform.engine, write=False) as conn:
        q = select(t_study.c.study_uid).where(t_study.c.fhir_stale.is_(True))
        if study_uids is not None:
            if not study_uids:
                return 0
            q = q.where(t_study.c.study_uid.in_(sorted(study_uids)))
        stale = [r.study_uid for r in conn.execute(q)]
    done = 0
    for uid in stale:
        try:
            with unit_of_work(platform.engine) as conn:
                refresh_study(conn, platform, uid)
                done += 1
        except (TelemedError, IntegrityError, OperationalError):
            log.exception("could not refresh the ImagingStudy of %s (left stale, retried later)", uid)
    return done
