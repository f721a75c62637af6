"""Read side: worklists per role, the live board of today's consultations, expert load, counts.

All are FHIR searches through the caller's repository, so each person sees only what the access
rules open to them (an expert's worklist holds only the consultations assigned to them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from telemed.consultation import model
from telemed.consultation import workflow as wf
from telemed.consultation.lookup import find, read_if_exists
from telemed.fhir.store.repository import Repository, Stored

OPEN_STATES = (wf.SUBMITTED, wf.RETURNED, wf.ACCEPTED, wf.ASSIGNED, wf.SCHEDULED, wf.IN_SESSION, wf.OPINION_DRAFTED)
DONE_STATES = (wf.CONCLUDED, wf.ACKNOWLEDGED, wf.ARCHIVED)


@dataclass
class Row:
    """One consultation as a list shows it."""

    id: str
    number: str
    kind: str
    state: str
    patient_id: str
    patient_name: str
    requester: str | None
    requester_org: str | None
    purpose: str
    specialty: str | None
    experts: list[str] = field(default_factory=list)
    requested_time: datetime | None = None
    scheduled_start: datetime | None = None
    room: str | None = None
    deadline: datetime | None = None
    overdue: bool = False
    last_modified: datetime | None = None
    version: int = 0
    rating: int | None = None


def _state(task: dict) -> str:
    return ((task.get("businessStatus") or {}).get("coding") or [{}])[0].get("code", "")


def find_tasks(repo: Repository, params: list[tuple[str, str]], count: int = 200) -> list[Stored]:
    return find(repo, "Task", params, count)


def states_param(states) -> tuple[str, str]:
    return ("business-status", ",".join(f"{model.STATE_SYSTEM}|{s}" for s in states))


def rows_for(repo: Repository, tasks: list[Stored], now: datetime) -> list[Row]:
    out = []
    # One search per resource type for the whole list, not four reads per row.
    ids = [t.resource["id"] for t in tasks]
    requests = by_id(repo, "ServiceRequest", ids)
    appointments = by_id(repo, "Appointment", ids)
    encounters = by_id(repo, "Encounter", ids)
    patients = {model.ref_id(sr.resource.get("subject"), "Patient") or "" for sr in requests.values()}
    names = {pid: _name(p.resource) for pid, p in by_id(repo, "Patient", sorted(patients - {""})).items()}
    for t in tasks:
        task = t.resource
        cid = task["id"]
        sr = requests.get(cid)
        if sr is None:
            continue
        r = sr.resource
        patient = model.ref_id(r.get("subject"), "Patient") or ""
        names.setdefault(patient, "")
        app = appointments.get(cid)
        enc = encounters.get(cid)
        deadline = model.parse_dt(((task.get("restriction") or {}).get("period") or {}).get("end"))
        details = model.details_of(r)
        out.append(Row(
            id=cid, number=r["identifier"][0]["value"], kind=model.kind_of(r), state=_state(task),
            patient_id=patient, patient_name=names[patient],
            requester=model.ref_id(r.get("requester"), "Practitioner"), requester_org=None,
            purpose=details.purpose, specialty=details.specialty,
            experts=[model.ref_id(p, "Practitioner") for p in r.get("performer", [])
                     if p.get("reference", "").startswith("Practitioner/")],
            requested_time=details.requested_time,
            scheduled_start=model.parse_dt(app.resource.get("start")) if app else None,
            room=next((i["value"] for i in (enc.resource.get("identifier", []) if enc else [])
                       if i.get("system") == model.ROOM_SYSTEM), None),
            deadline=deadline, overdue=bool(deadline and deadline < now and _state(task) in OPEN_STATES),
            last_modified=model.parse_dt(task.get("lastModified")), version=t.version_id,
            rating=next((e.get("valueInteger") for e in task.get("extension", []) if e.get("url") == model.RATING_URL),
                        None),
        ))  # fmt: skip
    return out


def by_id(repo: Repository, rt: str, ids: list[str]) -> dict[str, Stored]:
    """The visible resources of type ``rt`` among ``ids``."""
    return repo.read_many(rt, ids)


def _name(patient: dict) -> str:
    n = (patient.get("name") or [{}])[0]
    return n.get("text") or (n.get("family", "") + "".join(n.get("given", [])))


def mask_name(name: str) -> str:
    """张伟 -> 张*, 欧阳娜娜 -> 欧***: the board is shown on wall screens."""
    return name[:1] + "*" * max(len(name) - 1, 1) if name else ""


def my_requests(repo: Repository, practitioner: str, now: datetime) -> list[Row]:
    tasks = find_tasks(repo, [("requester", f"Practitioner/{practitioner}"), states_param(wf.STATES)])
    return sorted(rows_for(repo, tasks, now), key=lambda r: r.last_modified or now, reverse=True)


def queue(repo: Repository, states: tuple[str, ...], now: datetime) -> list[Row]:
    """A centre queue (QC: submitted; triage: accepted and assigned), urgent and oldest first."""
    rows = rows_for(repo, find_tasks(repo, [states_param(states)]), now)
    return sorted(rows, key=lambda r: (r.kind != wf.URGENT, r.deadline or now + timedelta(days=999)))


def expert_worklist(repo: Repository, practitioner: str, now: datetime) -> list[Row]:
    subs = find_tasks(repo, [("owner", f"Practitioner/{practitioner}"), ("status", "ready,in-progress,completed")])
    ids = {model.ref_id(s.resource.get("partOf", [{}])[0], "Task") for s in subs}
    tasks = [t for t in (read_if_exists(repo, "Task", i) for i in ids if i) if t is not None]
    rows = rows_for(repo, tasks, now)
    return sorted(rows, key=lambda r: (r.state in DONE_STATES, r.scheduled_start or r.deadline or now))


def expert_load(repo: Repository, practitioners: list[str]) -> dict[str, int]:
    """Open consultations per expert (for triage: who is free)."""
    subs = find_tasks(repo, [("owner", ",".join(f"Practitioner/{p}" for p in practitioners)),
                         ("status", "ready,in-progress")], 1000) if practitioners else []  # fmt: skip
    return Counter(model.ref_id(s.resource.get("owner"), "Practitioner") for s in subs)


@dataclass
class Board:
    today: list[Row]  # 今日会诊: scheduled for today
    waiting: list[Row]  # 待诊: in the queues, not yet concluded
    done: list[Row]  # 已诊: concluded today


def board(repo: Repository, now: datetime, day_start: datetime) -> Board:
    """Today's consultations for the centre's wall screen (patient names masked)."""
    day_end = day_start + timedelta(days=1)
    open_rows = rows_for(repo, find_tasks(repo, [states_param(OPEN_STATES)], 500), now)
    done_tasks = find_tasks(repo, [states_param(DONE_STATES), ("modified", f"ge{day_start.isoformat()}")], 500)
    done_rows = rows_for(repo, done_tasks, now)
    for r in (*open_rows, *done_rows):
        r.patient_name = mask_name(r.patient_name)
    today = [r for r in open_rows + done_rows if r.scheduled_start and day_start <= r.scheduled_start < day_end]
    waiting = [r for r in open_rows if r.state != wf.RETURNED]
    return Board(
        # The sessions still to come or running first (a wall screen shows the top of each column).
        today=sorted(today, key=lambda r: (r.state in DONE_STATES, r.scheduled_start)),
        waiting=sorted(waiting, key=lambda r: (r.kind != wf.URGENT, r.deadline or now)),
        done=sorted(done_rows, key=lambda r: r.last_modified or now, reverse=True),
    )


def counts(repo: Repository) -> dict[str, Counter]:
    """Consultations per state, kind, requesting institution and expert (the statistics page)."""
    tasks = find_tasks(repo, [states_param(wf.STATES)], 1000)
    out = {"state": Counter(), "kind": Counter(), "expert": Counter(), "specialty": Counter()}
    for t in tasks:
        out["state"][_state(t.resource)] += 1
        out["kind"][(t.resource.get("code") or {}).get("coding", [{}])[0].get("code")] += 1
    for sub in find_tasks(repo, [("status", "completed")], 1000):
        if sub.resource.get("partOf"):
            out["expert"][model.ref_id(sub.resource.get("owner"), "Practitioner")] += 1
    return out
