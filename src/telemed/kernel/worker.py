"""A background worker thread: runs ``tick()`` when woken, and at least every ``poll_seconds``.

Used by the job runner, the subscription dispatcher and the audit sealer. The wake flag is
cleared *before* each tick, so a wake that arrives during a tick leads to another tick at once.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("telemed.worker")


class BackgroundWorker:
    thread_name = "telemed-worker"

    def __init__(self, poll_seconds: float):
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a worker must outlive a failing database call
                log.exception("%s: error", self.thread_name)
            self._wake.wait(self.poll_seconds)
