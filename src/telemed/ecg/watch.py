"""The background watcher of the reading pools: escalates ECGs nobody claimed in time and alerts the
sender again about critical reports left unacknowledged. Each tick is one unit of work with the
platform's own repository; what it finds is pushed like any other pool event (``service.TOPIC``)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from telemed.db.engine import unit_of_work
from telemed.ecg import report, service
from telemed.fhir.store.context import AccessContext

log = logging.getLogger("telemed.ecg")


class EscalationWatcher:
    def __init__(self, engine, clock, repository, publish: Callable[[str, str], None], *, after: timedelta,
                 urgent_after: timedelta, ack_after: timedelta, interval: float = 30.0):  # fmt: skip
        self.engine, self.clock, self.repository, self.publish = engine, clock, repository, publish
        self.after, self.urgent_after, self.ack_after, self.interval = after, urgent_after, ack_after, interval
        self._alerted: dict[str, int] = {}  # ECG -> how many ack periods it has been re-alerted for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime | None = None) -> list[service.Push]:
        now = now or self.clock.now()
        with unit_of_work(self.engine) as conn:
            repo = self.repository(conn, AccessContext.system())
            pushes = service.escalate_overdue(repo, service.Pools.load(repo), now, self.after, self.urgent_after)
            for p in report.unacknowledged_critical(repo, now, self.ack_after):
                periods = int((now - _sent(repo, p.ecg)) / self.ack_after)
                if self._alerted.get(p.ecg) != periods:
                    self._alerted[p.ecg] = periods
                    pushes.append(p)
        for p in pushes:  # after the commit
            self.publish(service.TOPIC, json.dumps(p.as_dict()))
        return pushes

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed tick is logged and retried at the next one
                log.exception("ECG escalation tick failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ecg-escalation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


def _sent(repo, ecg: str) -> datetime:
    return datetime.fromisoformat(repo.read("Communication", f"{ecg}-critical").resource["sent"])
