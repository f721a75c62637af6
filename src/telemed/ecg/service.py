"""Remote-ECG use cases: f(repo, clock, ...), no HTTP, no SQL strings; the caller owns the transaction.

``ingest`` reads and analyses the file(s) before anything is written, so a corrupt or unsupported
file stores nothing; what it writes (original, leads, measurements, request, task, report) goes in
the caller's one transaction. Pool routing (who is on duty for which sender) is platform logic read
with a system repository (:class:`Pools`), while the ECG itself is written and read as the user.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from telemed.ecg import model
from telemed.ecg import workflow as wf
from telemed.ecg.analysis import Analysis, analyze
from telemed.ecg.dicom import ECG_SOP_CLASSES
from telemed.ecg.formats import read_files
from telemed.ecg.recording import Recording
from telemed.fhir.search.query import parse
from telemed.fhir.store import searching
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository, Stored
from telemed.kernel.blobs import BlobStore
from telemed.kernel.errors import Category, TelemedError

CHINA = ZoneInfo("Asia/Shanghai")
TOPIC = "ecg-pool"  # the hub topic of pool events (JSON of :class:`Push`)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
REFUSALS = {
    "already-claimed": "Another reader has already claimed this ECG",
    "not-yours": "This ECG is not claimed by you",
    "not-a-colleague": "The colleague is not a reader of this pool",
}


def find(repo: Repository, rt: str, params: list[tuple[str, str]], count: int = 500) -> list[Stored]:
    return searching.search(repo, parse(rt, [*params, ("_count", str(count))], pageable=False), "").matches


@dataclass
class Pool:
    id: str
    name: str
    centre: str
    members: list[str]
    serves: set[str]


@dataclass
class Pools:
    """The reading pools and the readers' duty hours (directory data, read with a system repository)."""

    pools: list[Pool] = field(default_factory=list)
    duty: dict[str, list[dict]] = field(default_factory=dict)  # practitioner -> availableTime

    @classmethod
    def load(cls, repo: Repository) -> Pools:
        pools = []
        code = f"{model.POOL_CODE['system']}|{model.POOL_CODE['code']}"
        for g in find(repo, "Group", [("code", code)]):
            r = g.resource
            if r.get("active") is False:
                continue
            members = [model.ref_id(m.get("entity"), "Practitioner") for m in r.get("member", [])
                       if not m.get("inactive")]  # fmt: skip
            serves = {model.ref_id(c.get("valueReference"), "Organization") for c in r.get("characteristic", [])
                      if c.get("code") == model.SERVES and not c.get("exclude")}  # fmt: skip
            centre = model.ref_id(r.get("managingEntity"), "Organization")
            pools.append(Pool(r["id"], r.get("name", r["id"]), centre, [m for m in members if m], serves - {None}))
        duty: dict[str, list[dict]] = {}
        role = f"{model.READER_ROLE['system']}|{model.READER_ROLE['code']}"
        for pr in find(repo, "PractitionerRole", [("role", role)]):
            r = pr.resource
            practitioner = model.ref_id(r.get("practitioner"), "Practitioner")
            if practitioner and r.get("active", True):
                duty.setdefault(practitioner, []).extend(r.get("availableTime", []))
        return cls(pools, duty)

    def pool_for(self, sender: str) -> Pool:
        for p in self.pools:
            if sender in p.serves:
                return p
        raise TelemedError(Category.UNPROCESSABLE, f"Organization/{sender} is attached to no ECG reading pool")

    def pool(self, pool_id: str) -> Pool | None:
        return next((p for p in self.pools if p.id == pool_id), None)

    def on_duty(self, practitioner: str, now: datetime) -> bool:
        local = now.astimezone(CHINA)
        day, clock = _DAYS[local.weekday()], local.strftime("%H:%M:%S")
        for slot in self.duty.get(practitioner, []):
            if slot.get("daysOfWeek") and day not in slot["daysOfWeek"]:
                continue
            if slot.get("allDay"):
                return True
            start, end = slot.get("availableStartTime", "00:00:00"), slot.get("availableEndTime", "24:00:00")
            if (start <= clock < end) if start <= end else (clock >= start or clock < end):  # a night shift
                return True
        return False

    def readers_on_duty(self, pool: Pool, now: datetime) -> list[str]:
        return [m for m in pool.members if self.on_duty(m, now)]


@dataclass
class Push:
    """Who must be told now: the portal publishes this on the hub (the live pool page)."""

    ecg: str
    event: str  # new | claimed | released | passed | escalated | reported | critical
    priority: str
    readers: list[str]
    pool: str | None = None
    sender: str | None = None

    def as_dict(self) -> dict:
        return {"ecg": self.ecg, "event": self.event, "priority": self.priority, "readers": self.readers,
                "pool": self.pool, "sender": self.sender}  # fmt: skip


@dataclass
class Ingested:
    ecg: str
    recording: Recording
    analysis: Analysis | None  # None until :func:`add_analysis` (the ECG is in the pool before it)
    push: Push
    patient: str = ""
    sender: str = ""
    lead: str | None = None


def _content_type(name: str, recording: Recording) -> str:
    if recording.format == "dicom":
        return "application/dicom"
    if recording.format == "hl7-aecg":
        return "application/xml"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _put(repo: Repository, resource: dict) -> Stored:
    return repo.update(resource["resourceType"], resource["id"], resource)


def receive(repo: Repository, blobs: BlobStore, pools: Pools, now: datetime, ecg: str, *, files: dict[str, bytes],
            patient: str, ctx: AccessContext, priority: str = wf.ROUTINE, note: str | None = None,
            lead: str | None = None) -> Ingested:  # fmt: skip
    """Step one of an ECG from ``ctx``'s institution for ``patient``: read the file(s) (a corrupt or
    unsupported file raises before anything is written), keep the original, write the leads, the
    request, the preliminary report and the reading ``Task`` in the pool. The caller commits and
    pushes ``push`` to the readers at once, then runs :func:`add_analysis` (the automatic measurements
    take as long as all these writes, and a reader needs a moment to open the ECG anyway)."""
    if priority not in wf.PRIORITIES:
        raise TelemedError(Category.INCORRECT, f"priority must be one of {', '.join(wf.PRIORITIES)}")
    sender = ctx.organization
    if not sender:
        raise TelemedError(Category.FORBIDDEN, "Only a user of an institution can send an ECG")
    recording = read_files(files)  # raises UnreadableRecording (422) before anything is stored
    if lead is not None:
        recording.lead(lead)  # an unknown lead is refused now, not after the ECG is in the pool
    pool = pools.pool_for(sender)
    repo.read("Patient", patient)  # 404 unless the sender may see the patient
    stored_files = [(name, data, _content_type(name, recording), blobs.put(data)) for name, data in files.items()]
    effective = model.effective(recording, now)
    # The request first: its performer opens the patient's record to the reading centre.
    _put(repo, model.service_request(ecg, patient, sender, ctx.practitioner, pool.centre, priority, now, note,
                                     pool.members))  # fmt: skip
    _put(repo, model.original_document(ecg, patient, sender, stored_files, recording, now))
    for i in range(len(recording.leads)):
        _put(repo, model.lead_observation(ecg, patient, sender, recording, i, now))
    _put(repo, model.ecg_observation(ecg, patient, sender, recording, now))
    _put(repo, model.diagnostic_report(ecg, patient, sender, [], effective, now))
    reading = wf.Reading(priority=priority)
    _put(repo, model.task(ecg, patient, sender, pool.id, reading, now))
    push = Push(ecg, "new", priority, pools.readers_on_duty(pool, now), pool.id, sender)
    return Ingested(ecg, recording, None, push, patient, sender, lead)


def add_analysis(repo: Repository, now: datetime, received: Ingested) -> Analysis:
    """Step two: the automatic measurements of a received ECG (machine-generated, preliminary) and the
    report's ``result``; measurements a reader has already signed are left alone."""
    analysis = analyze(received.recording, received.lead)
    stored = repo.read("DiagnosticReport", received.ecg)
    report = dict(stored.resource)
    if report.get("status") != "preliminary":
        received.analysis = analysis
        return analysis
    effective = model.effective(received.recording, now)
    measurements = model.measurement_observations(received.ecg, received.patient, received.sender, analysis,
                                                  effective)  # fmt: skip
    for m in measurements:
        if not repo.exists("Observation", m["id"]):
            _put(repo, m)
    report.pop("meta", None)
    report["result"] = [model.ref("Observation", m["id"]) for m in measurements]
    try:  # If-Match: a report signed meanwhile stays as signed
        repo.update("DiagnosticReport", received.ecg, report, if_match=stored.etag)
    except TelemedError as exc:
        if exc.category is not Category.PRECONDITION_FAILED:
            raise
    received.analysis = analysis
    return analysis


def ingest(repo: Repository, blobs: BlobStore, pools: Pools, now: datetime, ecg: str, *, files: dict[str, bytes],
           patient: str, ctx: AccessContext, priority: str = wf.ROUTINE, note: str | None = None,
           lead: str | None = None) -> Ingested:  # fmt: skip
    """Both steps in the caller's one transaction (scripts, the demo): the ECG with its measurements."""
    received = receive(repo, blobs, pools, now, ecg, files=files, patient=patient, ctx=ctx, priority=priority,
                       note=note, lead=lead)  # fmt: skip
    add_analysis(repo, now, received)
    return received


def dicom_ecg_id(sop_instance_uid: str) -> str:
    """The ECG id of a DICOM waveform received by C-STORE: the same instance sent again is the same ECG."""
    return "ecg-dcm-" + hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:24]


def receive_dicom(repo: Repository, blobs: BlobStore, pools: Pools, now: datetime, *, raw: bytes, sop_class: str,
                  sop_instance_uid: str, patient: str, ctx: AccessContext,
                  priority: str = wf.ROUTINE) -> Ingested | None:  # fmt: skip
    """An ECG waveform a device stored by DICOM C-STORE (already kept by the imaging service, which
    found or registered ``patient``): into the pool of the sender as an upload (step one, see
    :func:`receive`). None when the SOP class is not an ECG, or this instance already reached the
    pool (a resend)."""
    if sop_class not in ECG_SOP_CLASSES:
        return None
    ecg = dicom_ecg_id(sop_instance_uid)
    if repo.exists("Task", ecg):
        return None
    return receive(repo, blobs, pools, now, ecg, files={f"{sop_instance_uid}.dcm": raw}, patient=patient, ctx=ctx,
                   priority=priority, note="DICOM C-STORE")  # fmt: skip


@dataclass
class Loaded:
    task: Stored
    reading: wf.Reading

    @property
    def etag(self) -> str:
        return self.task.etag

    @property
    def pool(self) -> str | None:
        return model.ref_id(self.task.resource.get("owner"), "Group")

    @property
    def sender(self) -> str | None:
        return model.ref_id(self.task.resource.get("requester"), "Organization")


def load(repo: Repository, ecg: str) -> Loaded:
    stored = repo.read("Task", ecg)
    return Loaded(stored, model.reading_of(stored.resource))


def _apply(repo: Repository, loaded: Loaded, new: wf.Reading, pool: str | None, now: datetime,
           if_match: str | None) -> Stored:  # fmt: skip
    t = loaded.task.resource
    patient = model.ref_id(t.get("for"), "Patient")
    resource = model.task(t["id"], patient, loaded.sender, pool, new, now, previous=t)
    try:
        return repo.update("Task", t["id"], resource, if_match=if_match or loaded.etag)
    except TelemedError as exc:
        if exc.category is Category.PRECONDITION_FAILED:
            # Someone else changed the reading between our read and our write (two claims at once).
            raise TelemedError(Category.CONFLICT, REFUSALS["already-claimed"]) from None
        raise


def _step(fn, *args) -> wf.Reading:
    try:
        return fn(*args)
    except wf.IllegalTransition as exc:
        msg = REFUSALS.get(exc.reason) or f"This ECG cannot be changed now ({exc.reason})"
        raise TelemedError(Category.CONFLICT, msg) from None


def _pool_of(pools: Pools, loaded: Loaded) -> Pool:
    return pools.pool_for(loaded.sender or "")


def claim(repo: Repository, pools: Pools, now: datetime, ecg: str, reader: str, if_match: str | None = None) -> Push:
    """One reader takes the ECG. Two claims at once: both read version n, both write with If-Match n,
    and the store lets exactly one of them through; the other gets a 409 naming the refusal."""
    loaded = load(repo, ecg)
    pool = _pool_of(pools, loaded)
    if reader not in pool.members:
        raise TelemedError(Category.FORBIDDEN, "Only a reader of this ECG's pool can claim it")
    new = _step(wf.claim, loaded.reading, reader)
    if new != loaded.reading:
        _apply(repo, loaded, new, pool.id, now, if_match)
    return Push(ecg, "claimed", new.priority, [m for m in pool.members if m != reader], pool.id, loaded.sender)


def release(repo: Repository, pools: Pools, now: datetime, ecg: str, reader: str) -> Push:
    loaded = load(repo, ecg)
    pool = _pool_of(pools, loaded)
    new = _step(wf.release, loaded.reading, reader)
    _apply(repo, loaded, new, pool.id, now, None)
    return Push(ecg, "released", new.priority, pools.readers_on_duty(pool, now), pool.id, loaded.sender)


def pass_to(repo: Repository, pools: Pools, now: datetime, ecg: str, reader: str, colleague: str) -> Push:
    loaded = load(repo, ecg)
    pool = _pool_of(pools, loaded)
    new = _step(wf.pass_to, loaded.reading, reader, colleague, set(pool.members))
    _apply(repo, loaded, new, pool.id, now, None)
    return Push(ecg, "passed", new.priority, [colleague], pool.id, loaded.sender)


def cancel(repo: Repository, now: datetime, ecg: str) -> None:
    loaded = load(repo, ecg)
    new = _step(wf.cancel, loaded.reading)
    _apply(repo, loaded, new, None, now, None)
    sr = dict(repo.read("ServiceRequest", ecg).resource)
    sr["status"] = "revoked"
    repo.update("ServiceRequest", ecg, sr)


def waiting(repo: Repository, pool: str | None = None) -> list[Stored]:
    """The ECGs waiting in a pool (or in every pool the caller can see), urgent first, oldest first."""
    params = [("status", "requested"), ("code", f"{model.SNOMED}|{model.ECG_PROCEDURE['code']}")]
    if pool:
        params.append(("owner", f"Group/{pool}"))
    rows = find(repo, "Task", params)
    return sorted(rows, key=lambda s: (s.resource.get("priority") != "urgent", s.resource.get("authoredOn", "")))


def claimed_by(repo: Repository, reader: str) -> list[Stored]:
    return find(repo, "Task", [("status", "accepted"), ("owner", f"Practitioner/{reader}")])


def escalate_overdue(repo: Repository, pools: Pools, now: datetime, after: timedelta,
                     urgent_after: timedelta | None = None) -> list[Push]:  # fmt: skip
    """Escalate each ECG unclaimed for longer than ``after`` (``urgent_after`` for urgent ones) since it
    arrived or was last escalated: its level goes up and every reader of the pool is alerted, on
    duty or not (level 1), then the pool's centre as well (level 2 and up, ``readers`` empty means the
    portal shows it to the centre's staff)."""
    pushes = []
    for stored in waiting(repo):
        t = stored.resource
        reading = model.reading_of(t)
        limit = urgent_after if (reading.priority == wf.URGENT and urgent_after) else after
        since = datetime.fromisoformat(t.get("lastModified") or t["authoredOn"])
        if now - since < limit:
            continue
        loaded = Loaded(stored, reading)
        pool = _pool_of(pools, loaded)
        try:
            _apply(repo, loaded, wf.escalate(reading), pool.id, now, None)
        except TelemedError as exc:
            if exc.category is Category.CONFLICT:
                continue  # claimed meanwhile
            raise
        pushes.append(Push(t["id"], "escalated", reading.priority, list(pool.members), pool.id, loaded.sender))
    return pushes
