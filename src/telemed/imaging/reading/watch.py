"""The background watcher of remote readings: each tick puts readings whose images have arrived on
the worklist (:func:`service.match_arrivals`, for studies that came by STOW-RS or a portal upload,
which have no hook) and escalates unacknowledged critical findings
(:func:`critical.escalate_due`), queueing the alerts in the same unit of work."""

from __future__ import annotations

import logging
import threading

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.imaging.reading import critical, notifications
from telemed.imaging.reading import service as rs
from telemed.imaging.reading import workflow as wf

log = logging.getLogger("telemed.imaging.reading")


class ReadingWatcher:
    def __init__(self, engine, clock, repository, ids, outbox, base_url: str, policy: wf.Policy | None = None,
                 interval: float = 20.0):  # fmt: skip
        self.engine, self.repository, self.outbox, self.base_url = engine, repository, outbox, base_url
        self.env = rs.Env(clock, ids, policy or wf.Policy.from_env())
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now=None) -> list[rs.Notice]:
        with unit_of_work(self.engine) as conn:
            repo = self.repository(conn, AccessContext.system())
            notices = [n for loaded in rs.match_arrivals(repo, self.env) for n in loaded.notices]
            notices += critical.escalate_due(repo, self.env, now)
            if notices and self.outbox is not None:
                notifications.enqueue(repo, self.outbox, notices, self.base_url)
        return notices

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed tick is logged and retried at the next one
                log.exception("Imaging reading watcher tick failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="imaging-reading", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
