"""The background watcher of frozen sections: each tick raises every open frozen section to the
escalation level its time calls for (telemed.pathology.workflow.Policy) and queues the alerts
(portal, email, SMS through telemed.notify) in the same unit of work."""

from __future__ import annotations

import logging
import threading

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.pathology import cases
from telemed.pathology import workflow as wf

log = logging.getLogger("telemed.pathology")


class FrozenSectionWatcher:
    def __init__(self, engine, clock, repository, ids, outbox, base_url: str, policy: wf.Policy | None = None,
                 interval: float = 20.0):  # fmt: skip
        self.engine, self.repository, self.outbox, self.base_url = engine, repository, outbox, base_url
        self.env = cases.Env(clock, ids, policy or wf.Policy.from_env())
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now=None) -> list[cases.Notice]:
        with unit_of_work(self.engine) as conn:
            repo = self.repository(conn, AccessContext.system())
            notices = cases.escalate_due(repo, self.env, now)
            if notices and self.outbox is not None:
                cases.enqueue(repo, self.outbox, notices, self.base_url, self.env)
        return notices

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed tick is logged and retried at the next one
                log.exception("Frozen-section escalation tick failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pathology-escalation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
