"""ECG statistics over the readings the caller may see: ECGs per sending institution, per reader and
per day (China time), the time from upload to the first claim and to the signed report
(``Task.authoredOn`` → ``Task.executionPeriod.start`` / ``.end``), and the critical values with the
time the sender took to acknowledge them (``Communication.sent`` → ``.received``)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from telemed.ecg import model, service
from telemed.fhir.store.repository import Repository

MAX_READINGS = 5000


@dataclass
class Stats:
    total: int = 0
    days: list[tuple[date, int]] = field(default_factory=list)  # oldest first, every day of the span
    senders: list[tuple[str, int]] = field(default_factory=list)  # Organization id, most first
    readers: list[tuple[str, int]] = field(default_factory=list)  # Practitioner id, most first
    waiting: int = 0
    to_claim_min: float | None = None  # medians, minutes
    to_report_min: float | None = None
    critical: int = 0
    critical_open: int = 0
    to_acknowledge_min: float | None = None


def _minutes(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() / 60.0


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def compute(repo: Repository, now: datetime, days: int = 14) -> Stats:
    """The last ``days`` days (today included) of the ECG readings ``repo``'s caller may see."""
    today = now.astimezone(model.CHINA).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), model.CHINA)
    code = f"{model.SNOMED}|{model.ECG_PROCEDURE['code']}"
    tasks = service.find(repo, "Task", [("code", code), ("authored-on", f"ge{since.isoformat()}")], MAX_READINGS)
    out = Stats()
    per_day: Counter[date] = Counter()
    senders: Counter[str] = Counter()
    readers: Counter[str] = Counter()
    to_claim, to_report = [], []
    for stored in tasks:
        t = stored.resource
        reading = model.reading_of(t)
        if reading.state == "cancelled":
            continue
        out.total += 1
        per_day[datetime.fromisoformat(t["authoredOn"]).astimezone(model.CHINA).date()] += 1
        senders[model.ref_id(t.get("requester"), "Organization") or "?"] += 1
        if reading.reader:
            readers[reading.reader] += 1
        if reading.state == "waiting":
            out.waiting += 1
        period = t.get("executionPeriod") or {}
        for values, key in ((to_claim, "start"), (to_report, "end")):
            minutes = _minutes(t.get("authoredOn"), period.get(key))
            if minutes is not None:
                values.append(minutes)
    out.days = [(first + timedelta(days=i), per_day.get(first + timedelta(days=i), 0)) for i in range(days)]
    out.senders = senders.most_common()
    out.readers = readers.most_common()
    out.to_claim_min, out.to_report_min = _median(to_claim), _median(to_report)
    acks = []
    for c in service.find(repo, "Communication", [("category:text", "critical-result"),
                                                  ("sent", f"ge{since.isoformat()}")], MAX_READINGS):  # fmt: skip
        r = c.resource
        out.critical += 1
        if r.get("status") != "completed":
            out.critical_open += 1
        minutes = _minutes(r.get("sent"), r.get("received"))
        if minutes is not None:
            acks.append(minutes)
    out.to_acknowledge_min = _median(acks)
    return out


def bars(values: list[tuple[str, int]], width: float = 600.0, bar: float = 18.0, gap: float = 6.0,
         label_width: float = 160.0) -> dict:  # fmt: skip
    """Geometry of a horizontal SVG bar chart (drawn by the template): one row per (label, value)."""
    top = max((v for _, v in values), default=0) or 1
    rows = []
    for i, (label, value) in enumerate(values):
        y = i * (bar + gap)
        rows.append({"label": label, "value": value, "y": y, "ty": y + bar * 0.72,
                     "w": round((width - label_width - 50) * value / top, 1)})  # fmt: skip
    return {"rows": rows, "width": width, "height": max(bar, len(values) * (bar + gap)), "bar": bar,
            "x0": label_width}  # fmt: skip
