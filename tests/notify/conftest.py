"""A real SMTP server (aiosmtpd) on a free localhost port, and services of their own per backend.

The notification tests get a database of their own (SQLite file or a fresh PostgreSQL database):
the shared ``services`` fixture may be serving a live app whose job thread would race these tests
for the jobs they queue. They drive the job runner by hand and move an injected clock instead
of sleeping through the backoff.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import delete

from telemed.app import Services, register_jobs
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.db.schema import job as t_job
from telemed.kernel.clock import FixedClock
from telemed.notify import EMAIL_JOB, SMS_JOB
from tests.conftest import _new_pg_database, free_port, make_settings

MAIL_FROM = "Telemed 远程医疗 <noreply@telemed.example>"


class Inbox:
    """aiosmtpd handler: keeps what it accepts; ``refuse`` makes it answer RCPT with a 550."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


class SmtpServer:
    """Start and stop a real SMTP server on one port (stopping it is "the mail server is down")."""

    def __init__(self, port: int, **options) -> None:
        self.port = port
        self.inbox = Inbox()
        self.options = options
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **self.options)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass
class NotifyEnv:
    services: Services
    clock: FixedClock
    smtp: SmtpServer

    @property
    def inbox(self) -> Inbox:
        return self.smtp.inbox


@pytest.fixture(scope="package")
def smtp_port() -> int:
    return free_port()


@pytest.fixture(scope="package")
def notify_services(backend, smtp_port, tmp_path_factory) -> Iterator[tuple[Services, FixedClock]]:
    tmp = tmp_path_factory.mktemp(f"notify-{backend}")
    databases = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp}/telemed.db"
    else:
        databases = _new_pg_database()
        url = next(databases)
    settings = make_settings(tmp, url).model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{smtp_port}", "mail_from": MAIL_FROM}
    )
    clock = FixedClock(datetime(2026, 11, 27, 8, 0, tzinfo=UTC))
    services = Services.from_settings(settings, clock=clock)
    upgrade(services.engine)
    register_jobs(services)
    yield services, clock
    services.engine.dispose()
    if databases is not None:
        next(databases, None)


@pytest.fixture
def env(notify_services, smtp_port) -> Iterator[NotifyEnv]:
    services, clock = notify_services
    smtp = SmtpServer(smtp_port)
    smtp.start()
    try:
        yield NotifyEnv(services, clock, smtp)
    finally:
        smtp.stop()
        # What one test left queued (a retry not yet due) must not be delivered in the next.
        with unit_of_work(services.engine) as conn:
            conn.execute(delete(t_job).where(t_job.c.kind.in_([EMAIL_JOB, SMS_JOB])))
        services.sms.sent.clear()
        register_jobs(services)  # undo a test's own senders
