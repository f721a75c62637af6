"""Durable background jobs (bulk export, reindex, notifications) run by an in-process worker thread.

Jobs live in the ``job`` table, so they survive a restart: a job whose worker stopped sending
heartbeats is put back in the queue and run again from the start (handlers are restartable).
Several server instances can share one PostgreSQL: a job is claimed with ``FOR UPDATE SKIP
LOCKED``, so exactly one instance runs it.

A handler whose work may succeed later (a mail server that is down) raises :class:`RetryLater`:
the job goes back to the queue and is not claimed before the delay has passed. The handler owns
the policy (``ctx.attempt`` counts the claims, including those that ended in a crash); the runner
only schedules. :meth:`JobContext.record` commits a result before the job finishes, so a handler
that runs again after a crash can see that its side effect already happened.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, insert, or_, select, update

from telemed.db.engine import unit_of_work
from telemed.db.schema import job as t_job
from telemed.kernel.clock import Clock
from telemed.kernel.worker import BackgroundWorker

log = logging.getLogger("telemed.jobs")
STALE_AFTER = timedelta(seconds=60)


class Cancelled(Exception):
    """Raised inside a handler when its job was cancelled."""


class RetryLater(Exception):
    """Raised by a handler to put its job back in the queue, not to be claimed before ``delay``."""

    def __init__(self, delay: timedelta, reason: str = ""):
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


@dataclass
class JobContext:
    id: str
    params: dict
    engine: Engine
    clock: Clock
    _runner: JobRunner
    attempt: int = 1  # 1 on the first claim; counts claims that crashed, too
    recorded: dict | None = None  # what an earlier attempt saved with record()

    def record(self, result: dict) -> None:
        """Commit ``result`` now, before the job finishes: a run after a crash finds it in ``recorded``.

        Written whatever the status: if the job was requeued or cancelled meanwhile, the result is
        still what happened."""
        with unit_of_work(self.engine) as conn:
            conn.execute(update(t_job).where(t_job.c.id == self.id).values(result=result, updated=self.clock.now()))
        self.recorded = result

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record progress (0..1) and a heartbeat; raises :class:`Cancelled` if the job was cancelled."""
        with unit_of_work(self.engine) as conn:
            status = conn.execute(select(t_job.c.status).where(t_job.c.id == self.id)).scalar_one_or_none()
            if status != "running":
                raise Cancelled(self.id)
            now = self.clock.now()
            conn.execute(
                update(t_job)
                .where(t_job.c.id == self.id)
                .values(progress=min(max(fraction, 0.0), 1.0), message=message, heartbeat=now, updated=now)
            )


Handler = Callable[[JobContext], dict]


class JobRunner(BackgroundWorker):
    thread_name = "telemed-jobs"

    def __init__(self, engine: Engine, clock: Clock, poll_seconds: float = 1.0):
        super().__init__(poll_seconds)
        self.engine = engine
        self.clock = clock
        self.handlers: dict[str, Handler] = {}
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def submit(self, conn, kind: str, params: dict, owner: str | None = None) -> str:
        """Queue a job in the caller's transaction; it starts once that transaction commits."""
        job_id = uuid.uuid4().hex
        now = self.clock.now()
        conn.execute(
            insert(t_job).values(
                id=job_id,
                kind=kind,
                status="queued",
                owner=owner,
                params=params,
                progress=0.0,
                created=now,
                updated=now,
            )
        )
        self.wake()
        return job_id

    def tick(self) -> None:
        self._requeue_stale()
        while not self._stop.is_set() and self.run_one():
            pass

    def _requeue_stale(self) -> None:
        cutoff = self.clock.now() - STALE_AFTER
        with unit_of_work(self.engine) as conn:
            conn.execute(
                update(t_job)
                .where(t_job.c.status == "running", t_job.c.heartbeat < cutoff)
                .values(status="queued", worker=None, message="restarted after its worker stopped")
            )

    def _claim(self):
        now = self.clock.now()
        with unit_of_work(self.engine) as conn:
            q = select(t_job.c.id).where(
                t_job.c.status == "queued",
                t_job.c.kind.in_(list(self.handlers)),
                or_(t_job.c.not_before.is_(None), t_job.c.not_before <= now),
            )
            q = q.order_by(t_job.c.created).limit(1)
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            job_id = conn.execute(q).scalar_one_or_none()
            if job_id is None:
                return None
            conn.execute(
                update(t_job)
                .where(t_job.c.id == job_id)
                .values(
                    status="running", worker=self.worker_id, heartbeat=now, updated=now, attempts=t_job.c.attempts + 1
                )
            )
            return conn.execute(select(t_job).where(t_job.c.id == job_id)).first()

    def run_one(self) -> bool:
        """Run the oldest queued job, if any; True when one ran (tests call this directly)."""
        row = self._claim()
        if row is None:
            return False
        ctx = JobContext(
            row.id, dict(row.params), self.engine, self.clock, self, attempt=row.attempts, recorded=row.result
        )
        try:
            result = self.handlers[row.kind](ctx)
            values = {"status": "done", "progress": 1.0, "result": result, "message": None}
        except Cancelled:
            return True
        except RetryLater as retry:
            log.warning("job %s (%s) attempt %d: retry in %s: %s", row.id, row.kind, row.attempts, retry.delay, retry)
            values = {
                "status": "queued",
                "worker": None,
                "not_before": self.clock.now() + retry.delay,
                "message": f"attempt {row.attempts} failed, retrying: {retry}"[:1000],
            }
        except Exception as exc:  # noqa: BLE001 - recorded on the job for the client to see
            log.exception("job %s (%s) failed", row.id, row.kind)
            values = {"status": "failed", "message": f"{exc.__class__.__name__}: {exc}"[:1000]}
        with unit_of_work(self.engine) as conn:
            conn.execute(
                update(t_job)
                .where(t_job.c.id == row.id, t_job.c.status == "running")
                .values(updated=self.clock.now(), **values)
            )
        return True


def get_job(conn, job_id: str):
    return conn.execute(select(t_job).where(t_job.c.id == job_id)).first()


def cancel_job(conn, job_id: str, now) -> bool:
    result = conn.execute(
        update(t_job)
        .where(t_job.c.id == job_id, t_job.c.status.in_(["queued", "running"]))
        .values(status="cancelled", updated=now)
    )
    return result.rowcount == 1
