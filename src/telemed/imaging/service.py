"""Imaging use cases without a protocol: store an instance, keep ImagingStudy in step, know remote AEs.

Storing (the C-STORE service of PS3.4 Annex B and STOW-RS of PS3.18 §10.5 both end here):

1. the bytes are parsed and checked (:func:`telemed.imaging.model.parse_instance`); a refused
   instance touches neither the blob store nor the database;
2. the bytes, exactly as received, go to the content-addressed blob store (idempotent: a crash
   after this leaves an unreferenced blob, never a row pointing at nothing);
3. one transaction writes the index rows, the FHIR Patient (matched by identifier at the sending
   institution, or created) and, for a new study, its FHIR ImagingStudy through the Repository
   (access rules and owner institution as for any FHIR write), and the AuditEvent naming the
   instances. Instances stored at the same time (several associations, a STOW-RS request) share
   that transaction (group commit, :class:`_GroupCommit`); each caller returns only once its own
   instance is committed, and a group that fails is redone one instance per transaction.

Updating the ImagingStudy on every instance would write a FHIR version per image; instead the
study row is marked ``fhir_stale`` in the same transaction and :func:`refresh_stale` rewrites the
ImagingStudy once per association (on release) or STOW request.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
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
    study_fhir_id: str | None = None  # its ImagingStudy


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


def _audit_stored(conn: Connection, platform: Platform, stored: list[tuple[AccessContext, StoreResult]]) -> None:
    """AuditEvents of the instances a transaction stored, in that transaction: one per sender and
    study, naming each instance (several events when the list would not fit one description)."""
    groups: dict[tuple, list[StoreResult]] = {}
    for ctx, result in stored:
        groups.setdefault((ctx, result.study_uid), []).append(result)
    for (ctx, _study), results in groups.items():
        first = results[0]
        chunk: list[str] = []
        for i, result in enumerate(results):
            chunk.append(result.sop_instance_uid)
            if i + 1 < len(results) and sum(len(u) + 1 for u in chunk) + len(results[i + 1].sop_instance_uid) < 900:
                continue
            classes = sorted({r.sop_class_uid for r in results})
            description = f"DICOM store {len(chunk)} instance(s) of {' '.join(classes)}: {' '.join(chunk)}"
            if len(description) > 1000:  # many SOP classes: the instances matter more
                description = f"DICOM store {len(chunk)} instance(s): {' '.join(chunk)}"
            rec = audit.AuditRecord(
                "create", "0", f"ImagingStudy/{first.study_fhir_id}", None, first.patient, description=description
            )
            audit.record(conn, ctx, rec, platform.clock)
            chunk = []


@dataclass
class _Pending:
    """An instance checked and on its way to disk, waiting for its index rows to be committed."""

    ctx: AccessContext
    parsed: ParsedInstance
    blob: Future
    metadata: bytes
    done: bool = False
    result: StoreResult | None = None
    error: BaseException | None = None

    def outcome(self) -> StoreResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _GroupCommit:
    """Group commit of the index (one per engine): a storing thread queues its instance, then whichever
    thread takes the lock writes every queued instance in one transaction and marks them done. Each
    thread returns (and its C-STORE success or STOW-RS result goes out) only once its own instance is
    committed; concurrent associations share one commit instead of queueing for SQLite's write lock
    (whose busy handler sleeps in milliseconds) or paying a PostgreSQL commit each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: deque[_Pending] = deque()


_GROUPS: weakref.WeakKeyDictionary[Engine, _GroupCommit] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()
MAX_GROUP = 64


def _group(engine: Engine) -> _GroupCommit:
    group = _GROUPS.get(engine)
    if group is None:
        with _GROUPS_LOCK:
            group = _GROUPS.setdefault(engine, _GroupCommit())
    return group


def _commit(platform: Platform, items: list[_Pending]) -> None:
    group = _group(platform.engine)
    group.waiting.extend(items)
    for item in items:
        while not item.done:
            with group.lock:
                if item.done:
                    break
                batch = []
                while group.waiting and len(batch) < MAX_GROUP:
                    batch.append(group.waiting.popleft())
                try:
                    if batch:
                        _write(platform, batch)
                finally:  # (only a BaseException leaves one undone: its thread must not wait forever)
                    for it in batch:
                        if not it.done:
                            it.error, it.done = RuntimeError("The instance was not stored"), True


def _write(platform: Platform, batch: list[_Pending]) -> None:
    """Index ``batch`` in one transaction; when that fails, each instance in a transaction of its own
    (so one refused or conflicting instance never takes the others down with it)."""
    if len(batch) > 1:
        try:
            with unit_of_work(platform.engine) as conn:
                results = _index_group(conn, platform, batch)
                if results is None:  # a new study or a resent instance among them: one by one, same transaction
                    rows: list[dict] = []  # the new instances' rows, inserted together (one executemany)
                    results = [
                        _index(conn, platform, it.ctx, it.parsed, it.blob.result, it.metadata, rows) for it in batch
                    ]
                    if rows:
                        conn.execute(_INSERT_INSTANCE, rows)
                _audit_stored(conn, platform, [(it.ctx, r) for it, r in zip(batch, results, strict=True)])
        except Exception:  # noqa: BLE001 - retried one by one below, where each gets its own outcome
            log.debug("group commit of %d instances failed; storing them one by one", len(batch), exc_info=True)
        else:
            for it, r in zip(batch, results, strict=True):
                it.result, it.done = r, True
            return
    for it in batch:
        try:
            it.result = _write_one(platform, it)
        except Exception as exc:  # noqa: BLE001 - handed to the storing thread, which raises it
            it.error = exc
        it.done = True


def _index_group(conn: Connection, platform: Platform, batch: list[_Pending]) -> list[StoreResult] | None:
    """The index rows of a group of new instances of studies already held, set by set: a few statements
    for the whole group (on PostgreSQL, a round trip each) instead of five per instance. None (nothing
    written) when the group holds a new study, an instance already stored or the same one twice:
    :func:`_index` then goes through them one by one."""
    uids = [it.parsed.sop_instance_uid for it in batch]
    if len(set(uids)) != len(uids):
        return None
    study_uids = sorted({it.parsed.study_uid for it in batch})
    studies = {r.study_uid: r for r in conn.execute(_STUDIES_OF, {"uids": study_uids})}
    if len(studies) != len(study_uids):
        return None
    for it in batch:
        if studies[it.parsed.study_uid].owner_org != (it.ctx.organization or "") and not it.ctx.sees_all:
            raise NonConformant("The study cannot be stored by this sender", 0xA700)
    if conn.execute(_ANY_EXISTING, {"uids": uids}).first() is not None:
        return None
    now = platform.clock.now()
    per_series: dict[str, list[_Pending]] = {}
    for it in batch:
        per_series.setdefault(it.parsed.series_uid, []).append(it)
    known = {r[0] for r in conn.execute(_SERIES_KNOWN, {"uids": sorted(per_series)})}
    new_series = [
        {"series_uid": uid, "study_uid": items[0].parsed.study_uid, "num_instances": len(items),
         **items[0].parsed.index["series"]}
        for uid, items in per_series.items() if uid not in known
    ]  # fmt: skip
    if new_series:
        conn.execute(insert(t_series), new_series)
    for uid, items in per_series.items():
        if uid in known:
            conn.execute(_SERIES_PLUS, {"uid": uid, "n": len(items)})
    for study_uid in study_uids:
        members = [it for it in batch if it.parsed.study_uid == study_uid]
        added = sum(1 for s in new_series if s["study_uid"] == study_uid)
        conn.execute(_STUDY_PLUS, {"uid": study_uid, "n": len(members), "new_series": added, "now": now})
        mods = set((studies[study_uid].modalities or "").split("\\")) - {""}
        seen = {it.parsed.index["series"].get("modality") for it in members} - {None, ""}
        if not seen <= mods:
            modalities = "\\".join(sorted(mods | seen))
            conn.execute(update(t_study).where(t_study.c.study_uid == study_uid).values(modalities=modalities))
    rows = []
    for it in batch:
        p = it.parsed
        rows.append(
            {"sop_instance_uid": p.sop_instance_uid, "series_uid": p.series_uid, "study_uid": p.study_uid,
             "sop_class_uid": p.sop_class_uid, "transfer_syntax": p.transfer_syntax, "size": len(p.raw),
             "metadata": it.metadata, "received": now, **p.index["instance"],
             "blob_key": it.blob.result()}  # the file is on disk before its row is committed
        )  # fmt: skip
    conn.execute(_INSERT_INSTANCE, rows)
    return [
        StoreResult(
            it.parsed.sop_class_uid, it.parsed.sop_instance_uid, it.parsed.study_uid, it.parsed.series_uid,
            False, False, studies[it.parsed.study_uid].patient_fhir, studies[it.parsed.study_uid].fhir_id,
        )
        for it in batch
    ]  # fmt: skip


def _write_one(platform: Platform, it: _Pending) -> StoreResult:
    for attempt in range(5):
        try:
            with unit_of_work(platform.engine) as conn:
                result = _index(conn, platform, it.ctx, it.parsed, it.blob.result, it.metadata)
                _audit_stored(conn, platform, [(it.ctx, result)])
                return result
        except IntegrityError:
            # Another process created the same patient, study or series a moment earlier: retry
            # (the winner's rows are now visible).
            if attempt == 4:
                raise
        except OperationalError as exc:  # PostgreSQL serialization/deadlock: retry too
            if attempt == 4 or "deadlock" not in str(exc).lower():
                raise
        time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _prepare(
    ctx: AccessContext,
    raw: bytes,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    study_uid: str | None = None,
    blobs: BlobStore | None = None,
) -> _Pending:
    parsed = model.parse_instance(raw)
    if sop_class_uid and parsed.sop_class_uid != sop_class_uid:
        raise NonConformant(f"SOP Class {parsed.sop_class_uid} does not match the request's {sop_class_uid}")
    if sop_instance_uid and parsed.sop_instance_uid != sop_instance_uid:
        raise NonConformant("SOP Instance UID does not match the request's Affected SOP Instance UID")
    if study_uid and parsed.study_uid != study_uid:
        raise NonConformant(f"The instance belongs to study {parsed.study_uid}, not {study_uid}", 0xA900)
    # The file is written (and fsynced) in another thread while this one builds the metadata; the
    # transaction waits for it before its last statement, so no committed row points at a missing file.
    assert blobs is not None
    stored = _WRITERS.submit(blobs.put, raw)
    return _Pending(ctx, parsed, stored, model.metadata_json(parsed))


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
    the dataset, PS3.4 §B.2.3); ``study_uid`` is the STOW-RS target study, if any. Returns once the
    file is on disk and the index rows are committed.
    """
    item = _prepare(ctx, raw, sop_class_uid, sop_instance_uid, study_uid, platform.blobs)
    _commit(platform, [item])
    return item.outcome()


def store_instances(
    platform: Platform, ctx: AccessContext, raws: list[bytes], *, study_uid: str | None = None
) -> list[StoreResult | Exception]:
    """:func:`store_instance` for many instances (a STOW-RS request): each checked, then committed
    in groups; one outcome per instance, in order (a result, or the exception that refused it)."""
    out: list[StoreResult | Exception] = []
    pending: list[_Pending] = []
    for raw in raws:
        try:
            item = _prepare(ctx, raw, study_uid=study_uid, blobs=platform.blobs)
        except Exception as exc:  # noqa: BLE001 - this instance's outcome; the others go on
            out.append(exc)
            continue
        pending.append(item)
        out.append(item)  # type: ignore[arg-type] - replaced below
    _commit(platform, pending)
    for i, o in enumerate(out):
        if isinstance(o, _Pending):
            out[i] = o.error if o.error is not None else o.outcome()  # type: ignore[assignment]
    return out


# The study of an instance with its FHIR Patient, in one statement (built once).
_STUDY_OF = (
    select(
        t_study.c.owner_org,
        t_study.c.fhir_id,
        t_study.c.patient_pk,
        t_study.c.modalities,
        t_patient.c.fhir_id.label("patient_fhir"),
    )
    .select_from(t_study.outerjoin(t_patient, t_patient.c.id == t_study.c.patient_pk))
    .where(t_study.c.study_uid == bindparam("uid"))
)
# The statements of every instance, built once (building and coercing them cost more than running them).
_EXISTING = select(t_instance.c.series_uid, t_instance.c.study_uid).where(
    t_instance.c.sop_instance_uid == bindparam("uid")
)
_SERIES_PLUS_ONE = (
    update(t_series).where(t_series.c.series_uid == bindparam("uid")).values(num_instances=t_series.c.num_instances + 1)
)
_STUDY_PLUS_ONE = (
    update(t_study)
    .where(t_study.c.study_uid == bindparam("uid"))
    .values(
        num_instances=t_study.c.num_instances + 1,
        num_series=t_study.c.num_series + bindparam("new_series"),
        fhir_stale=True,
        updated=bindparam("now"),
    )
)
_INSERT_INSTANCE = insert(t_instance)
# ... and those of a group (see _index_group)
_STUDIES_OF = (
    select(
        t_study.c.study_uid,
        t_study.c.owner_org,
        t_study.c.fhir_id,
        t_study.c.modalities,
        t_patient.c.fhir_id.label("patient_fhir"),
    )
    .select_from(t_study.outerjoin(t_patient, t_patient.c.id == t_study.c.patient_pk))
    .where(t_study.c.study_uid.in_(bindparam("uids", expanding=True)))
)
_ANY_EXISTING = select(t_instance.c.sop_instance_uid).where(
    t_instance.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
)
_SERIES_KNOWN = select(t_series.c.series_uid).where(t_series.c.series_uid.in_(bindparam("uids", expanding=True)))
_SERIES_PLUS = (
    update(t_series)
    .where(t_series.c.series_uid == bindparam("uid"))
    .values(num_instances=t_series.c.num_instances + bindparam("n"))
)
_STUDY_PLUS = (
    update(t_study)
    .where(t_study.c.study_uid == bindparam("uid"))
    .values(
        num_instances=t_study.c.num_instances + bindparam("n"),
        num_series=t_study.c.num_series + bindparam("new_series"),
        fhir_stale=True,
        updated=bindparam("now"),
    )
)


def _index(
    conn: Connection,
    platform: Platform,
    ctx: AccessContext,
    parsed: ParsedInstance,
    blob_key: Callable[[], str],
    metadata: bytes,
    deferred: list[dict] | None = None,
) -> StoreResult:
    """The index rows of one instance; a new instance's own row goes to ``deferred`` when given
    (the caller inserts them together)."""
    now = platform.clock.now()
    org = ctx.organization or ""
    attrs = parsed.index
    study = conn.execute(_STUDY_OF, {"uid": parsed.study_uid}).first()
    if study is not None and study.owner_org != org and not ctx.sees_all:
        raise NonConformant("The study cannot be stored by this sender", 0xA700)
    existing = conn.execute(_EXISTING, {"uid": parsed.sop_instance_uid}).first()
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
        assert study is not None  # (its study row was written with it)
        conn.execute(update(t_study).where(t_study.c.study_uid == parsed.study_uid).values(fhir_stale=True))
        fhir_id = study.fhir_id
        patient_fhir = study.patient_fhir if study is not None else None
    else:
        series_new = conn.execute(_SERIES_PLUS_ONE, {"uid": parsed.series_uid}).rowcount == 0
        if series_new:
            conn.execute(
                insert(t_series).values(
                    series_uid=parsed.series_uid, study_uid=parsed.study_uid, num_instances=1, **attrs["series"]
                )
            )
        modality = attrs["series"].get("modality")
        if study is None:
            repo = platform.repository(conn, ctx)
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
            fhir_id, patient_fhir = study.fhir_id, study.patient_fhir
            conn.execute(_STUDY_PLUS_ONE, {"uid": parsed.study_uid, "new_series": 1 if series_new else 0, "now": now})
            mods = set((study.modalities or "").split("\\")) - {""}
            if modality and modality not in mods:
                modalities = "\\".join(sorted(mods | {modality}))
                by_uid = t_study.c.study_uid == parsed.study_uid
                conn.execute(update(t_study).where(by_uid).values(modalities=modalities))
    row["blob_key"] = blob_key()  # the file is on disk (a failure here rolls the whole instance back)
    if existing is not None:
        conn.execute(update(t_instance).where(t_instance.c.sop_instance_uid == parsed.sop_instance_uid).values(**row))
    else:
        row.update(sop_instance_uid=parsed.sop_instance_uid, series_uid=parsed.series_uid, study_uid=parsed.study_uid)
        if deferred is not None:
            deferred.append(row)
        else:
            conn.execute(_INSERT_INSTANCE, row)
    return StoreResult(
        parsed.sop_class_uid,
        parsed.sop_instance_uid,
        parsed.study_uid,
        parsed.series_uid,
        created_study,
        existing is not None,
        patient_fhir,
        fhir_id,
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
