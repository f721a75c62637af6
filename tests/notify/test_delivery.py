"""Delivery: retries with backoff while the mail server is down, giving up, and the crash windows."""

from __future__ import annotations

import logging
from datetime import timedelta

from telemed import notify
from telemed.db.engine import unit_of_work
from telemed.notify import BACKOFF, MAX_ATTEMPTS, Notification, Recipient

NURSE = Recipient("n-zhou", "周护士", "zhou.nurse@hospital.example", None)
SECOND = timedelta(seconds=1)


def _enqueue(env) -> str:
    with unit_of_work(env.services.engine) as conn:
        return env.services.outbox.enqueue(conn, Notification("consultation.scheduled", NURSE, "会诊提醒", "明天九点"))


def _delivery(env, notification_id: str):
    with unit_of_work(env.services.engine, write=False) as conn:
        [delivery] = env.services.outbox.deliveries(conn, notification_id)
    return delivery


def test_smtp_down_is_retried_with_backoff_then_delivered(env):
    env.smtp.stop()
    nid = _enqueue(env)
    jobs = env.services.jobs

    assert jobs.run_one() is True  # attempt 1: connection refused
    d = _delivery(env, nid)
    assert (d.status, d.attempts, d.sent_at) == ("queued", 1, None)
    assert "ConnectionRefusedError" in d.error

    env.clock.at += BACKOFF[0] - SECOND
    assert jobs.run_one() is False  # not due yet
    env.clock.at += SECOND
    assert jobs.run_one() is True  # attempt 2: still down
    assert _delivery(env, nid).attempts == 2

    env.smtp.start()
    env.clock.at += BACKOFF[1] - SECOND
    assert jobs.run_one() is False
    env.clock.at += SECOND
    jobs.tick()  # attempt 3 delivers

    d = _delivery(env, nid)
    assert (d.status, d.attempts, d.error) == ("done", 3, None)
    assert d.sent_at == env.clock.now().isoformat()
    [msg] = env.inbox.messages
    assert msg["Message-ID"] == d.provider_id and msg["Subject"] == "会诊提醒"


def test_gives_up_after_the_last_attempt_and_logs_it(env, caplog):
    env.smtp.stop()
    nid = _enqueue(env)
    with caplog.at_level(logging.WARNING):
        for wait in (timedelta(0), *BACKOFF):
            env.clock.at += wait
            assert env.services.jobs.run_one() is True
    d = _delivery(env, nid)
    assert (d.status, d.attempts) == ("failed", MAX_ATTEMPTS)
    assert f"not sent after {MAX_ATTEMPTS} attempts" in d.error and "ConnectionRefusedError" in d.error
    retries = [r for r in caplog.records if r.name == "telemed.jobs" and r.levelno == logging.WARNING]
    failures = [r for r in caplog.records if r.name == "telemed.jobs" and r.levelno == logging.ERROR]
    assert len(retries) == MAX_ATTEMPTS - 1 and len(failures) == 1

    env.smtp.start()
    env.clock.at += timedelta(days=1)
    assert env.services.jobs.run_one() is False
    assert env.inbox.messages == []


class AcceptedThenLost:
    """The server accepts the message, then the worker fails before it can record that."""

    def __init__(self, inner):
        self.inner = inner
        self.mail_from = inner.mail_from
        self.lost = False

    def send(self, message):
        provider_id = self.inner.send(message)
        if not self.lost:
            self.lost = True
            raise ConnectionResetError("lost after the server accepted the message")
        return provider_id


def test_the_at_least_once_window_resends_with_the_same_message_id(env):
    services = env.services
    notify.register(services.jobs, services.outbox, email=AcceptedThenLost(services.email))
    nid = _enqueue(env)

    services.jobs.run_one()
    env.clock.at += BACKOFF[0]
    services.jobs.run_one()

    assert _delivery(env, nid).status == "done"
    first, second = env.inbox.messages
    assert first["Message-ID"] == second["Message-ID"] == _delivery(env, nid).provider_id
    assert first.get_content() == second.get_content()
