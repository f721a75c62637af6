"""Experts' availability as FHIR Schedule and Slot (R4 §14.4-14.5), and booking a slot.

Each expert publishes a ``Schedule`` (actor: the Practitioner) with ``Slot``s; triage sees the
free ones and books one when scheduling a session. Booking changes the Slot to ``busy`` with the
version it was read at, so two dispatchers cannot book the same slot: the second one is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from telemed.consultation import model
from telemed.consultation.lookup import find
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError


@dataclass(frozen=True)
class FreeSlot:
    id: str
    practitioner: str
    start: datetime
    end: datetime
    version: int


def schedules_of(repo: Repository, practitioners: list[str]) -> dict[str, str]:
    """Schedule id -> practitioner id, for the practitioners' active schedules."""
    if not practitioners:
        return {}
    refs = ",".join(f"Practitioner/{p}" for p in practitioners)
    out = {}
    for s in find(repo, "Schedule", [("actor", refs), ("active", "true")], 500):
        for actor in s.resource.get("actor", []):
            p = model.ref_id(actor, "Practitioner")
            if p in practitioners:
                out[s.resource["id"]] = p
    return out


def free_slots(repo: Repository, practitioners: list[str], now: datetime, days: int = 7) -> dict[str, list[FreeSlot]]:
    """The experts' free slots from now for ``days`` days, earliest first, by practitioner."""
    schedules = schedules_of(repo, practitioners)
    out: dict[str, list[FreeSlot]] = {p: [] for p in practitioners}
    _collect(repo, schedules, now, now + timedelta(days=days), out)
    return out


def first_free_slots(
    repo: Repository, practitioners: list[str], now: datetime, days: int = 7
) -> dict[str, list[FreeSlot]]:
    """Like :func:`free_slots`, for a page that shows each expert's *next* free time only: today's
    slots first, the rest of the week only for those with none left today (a week of every
    expert's slots made the triage page several times slower)."""
    schedules = schedules_of(repo, practitioners)
    out: dict[str, list[FreeSlot]] = {p: [] for p in practitioners}
    today = now + timedelta(days=1)
    _collect(repo, schedules, now, today, out)
    later = {s: p for s, p in schedules.items() if not out[p]}
    _collect(repo, later, today, now + timedelta(days=days), out)
    return out


def _collect(repo: Repository, schedules: dict[str, str], start: datetime, end: datetime,
             out: dict[str, list[FreeSlot]]) -> None:  # fmt: skip
    if not schedules:
        return
    params = [
        ("schedule", ",".join(f"Schedule/{s}" for s in schedules)),
        ("status", "free"),
        ("start", f"ge{start.isoformat()}"),
        ("start", f"lt{end.isoformat()}"),
    ]
    for s in find(repo, "Slot", params, 1000):
        r = s.resource
        p = schedules.get(model.ref_id(r.get("schedule"), "Schedule") or "")
        if p:
            out[p].append(FreeSlot(r["id"], p, model.parse_dt(r["start"]), model.parse_dt(r["end"]), s.version_id))
    for slots in out.values():
        slots.sort(key=lambda f: f.start)


def book(repo: Repository, slot_id: str) -> dict:
    """Mark a free slot busy; a slot taken in the meantime is a 409 that says so."""
    stored = repo.read("Slot", slot_id)
    if stored.resource.get("status") != "free":
        raise TelemedError(Category.CONFLICT, "This time slot has just been taken; choose another one")
    try:
        return repo.update("Slot", slot_id, {**stored.resource, "status": "busy"}, if_match=stored.etag).resource
    except TelemedError as exc:
        if exc.category is Category.PRECONDITION_FAILED:
            raise TelemedError(Category.CONFLICT, "This time slot has just been taken; choose another one") from None
        raise


def release(repo: Repository, slot_id: str) -> None:
    stored = repo.read("Slot", slot_id)
    if stored.resource.get("status") == "busy":
        repo.update("Slot", slot_id, {**stored.resource, "status": "free"})


def publish_week(
    practitioner: str, start_day: datetime, days: int = 7, hours=(10, 15), minutes: int = 30
) -> list[dict]:
    """A Schedule and its Slots for a week of consultation hours (the demo's experts; an
    institution administrator publishes real ones through the FHIR API)."""
    sched_id = f"sched-{practitioner}"
    out: list[dict] = [{
        "resourceType": "Schedule", "id": sched_id, "active": True,
        "serviceType": [{"coding": [model.CONSULTATION_CODE]}],
        "actor": [model.ref("Practitioner", practitioner)],
        "comment": "远程会诊出诊时间",
    }]  # fmt: skip
    for d in range(days):
        day = start_day + timedelta(days=d)
        for h in hours:
            begin = day.replace(hour=h, minute=0, second=0, microsecond=0)
            out.append({
                "resourceType": "Slot", "id": f"slot-{practitioner}-{begin:%Y%m%d%H%M}",
                "schedule": model.ref("Schedule", sched_id), "status": "free",
                "start": model.iso(begin), "end": model.iso(begin + timedelta(minutes=minutes)),
            })  # fmt: skip
    return out
