"""JobRunner retries (``RetryLater``, ``attempts``, ``not_before``) and ``record``, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect

from telemed.db.engine import make_engine, unit_of_work
from telemed.db.jobs import JobRunner, RetryLater, get_job
from telemed.db.migrate import _config, upgrade
from telemed.kernel.clock import FixedClock


@pytest.fixture
def engine(backend, tmp_path, request) -> Iterator:
    url = f"sqlite:///{tmp_path}/jobs.db" if backend == "sqlite" else request.getfixturevalue("own_pg_database")
    eng = make_engine(url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 27, 8, 0, tzinfo=UTC))


def _submit(engine, runner, kind="flaky", params=None) -> str:
    with unit_of_work(engine) as conn:
        return runner.submit(conn, kind, params or {})


def _job(engine, job_id):
    with unit_of_work(engine, write=False) as conn:
        return get_job(conn, job_id)


def test_retry_later_requeues_until_due_and_counts_attempts(engine, clock):
    runner = JobRunner(engine, clock)
    seen = []

    def flaky(ctx):
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RetryLater(timedelta(minutes=ctx.attempt), f"try {ctx.attempt}")
        return {"ok": True}

    runner.register("flaky", flaky)
    job_id = _submit(engine, runner)

    assert runner.run_one() is True
    job = _job(engine, job_id)
    assert (job.status, job.attempts, job.worker) == ("queued", 1, None)
    assert "try 1" in job.message
    assert runner.run_one() is False
    clock.at += timedelta(minutes=1)
    runner.tick()  # attempt 2 fails; attempt 3 is not due within the same tick
    assert _job(engine, job_id).status == "queued"
    clock.at += timedelta(minutes=2)
    runner.tick()

    job = _job(engine, job_id)
    assert (job.status, job.attempts, job.result, job.message) == ("done", 3, {"ok": True}, None)
    assert seen == [1, 2, 3]


def test_a_plain_exception_still_fails_the_job(engine, clock):
    runner = JobRunner(engine, clock)
    runner.register("broken", lambda ctx: 1 / 0)
    job_id = _submit(engine, runner, "broken")
    runner.run_one()
    job = _job(engine, job_id)
    assert (job.status, job.attempts) == ("failed", 1) and "ZeroDivisionError" in job.message


def test_record_survives_a_crash_and_is_seen_by_the_next_run(engine, clock):
    runner = JobRunner(engine, clock)
    runs = []

    def crashes_after_recording(ctx):
        runs.append(ctx.recorded)
        if ctx.recorded is None:
            ctx.record({"sent": 1})
            raise SystemExit("the worker died")  # not an Exception: the runner does not finish the job
        return ctx.recorded

    runner.register("once", crashes_after_recording)
    job_id = _submit(engine, runner, "once")
    with pytest.raises(SystemExit):
        runner.run_one()
    job = _job(engine, job_id)
    assert (job.status, job.result) == ("running", {"sent": 1})

    clock.at += timedelta(minutes=2)  # the heartbeat goes stale; another runner takes over
    other = JobRunner(engine, clock)
    other.register("once", crashes_after_recording)
    other.tick()
    job = _job(engine, job_id)
    assert (job.status, job.attempts, job.result) == ("done", 2, {"sent": 1})
    assert runs == [None, {"sent": 1}]


def test_migration_0009_goes_down_and_up(engine):
    with engine.connect() as conn:
        conn.info["write"] = True
        with conn.begin():
            command.downgrade(_config(conn), "0008")
    with engine.connect() as conn:
        assert {"attempts", "not_before"}.isdisjoint(c["name"] for c in inspect(conn).get_columns("job"))
    upgrade(engine)
    with engine.connect() as conn:
        assert {"attempts", "not_before"} <= {c["name"] for c in inspect(conn).get_columns("job")}
