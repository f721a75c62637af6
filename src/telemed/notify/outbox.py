"""The notification outbox: one durable job per channel, written in the caller's transaction.

Guarantees, and where they stop:

* **Nothing is lost.** :meth:`Outbox.enqueue` inserts ``notify-email`` / ``notify-sms`` rows into
  the job table in the caller's transaction, so a notification exists if and only if the business
  change committed. A worker that dies before the provider accepted the message leaves the job to
  be requeued (``telemed.db.jobs``: stale heartbeat) and sent later.
* **Failures are retried** after 1 min, 5 min, 30 min and 2 h (:data:`~telemed.notify.delivery.BACKOFF`);
  after the fifth attempt the job is marked ``failed`` and logged. A permanent refusal (unknown
  mailbox: SMTP 5xx) fails at once.
* **Sent once where that can be known.** The job is claimed by one worker (``SKIP LOCKED``). Right
  after the provider accepts the message, the job commits ``sent_at`` and the provider's id
  (:meth:`~telemed.db.jobs.JobContext.record`), before it is marked done; a run after a crash
  finds them and does not send again.
* **The remaining at-least-once window**: a crash or a database failure between the provider's
  acceptance and that commit, or an acceptance whose reply never reached us (a connection cut
  after the end of the DATA phase), sends the message again on the next attempt. Every attempt of
  an email carries the same ``Message-ID: <job-id@domain>``, so mail clients and archives can
  recognise the copy; SMS has no such identifier and the recipient gets a second text. A send that
  outlasts the runner's stale timeout (60 s) could also be run by a second worker; the SMTP timeout
  (15 s per operation) keeps that unlikely.

Addresses and texts are personal data (phone numbers are stored encrypted elsewhere): with a
``cipher`` the message is sealed in the job's parameters and only the delivery handler opens it.
A notification still queued when its key is removed from ``TELEMED_ENCRYPTION_KEYS`` cannot be
opened and fails.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import orjson
from sqlalchemy import select

from telemed.db.jobs import JobRunner
from telemed.db.schema import job as t_job
from telemed.kernel.crypto import FieldCipher
from telemed.notify.errors import DeliveryRefused
from telemed.notify.message import CHANNELS, Notification

log = logging.getLogger("telemed.notify")

EMAIL_JOB = "notify-email"
SMS_JOB = "notify-sms"
JOB_KINDS = {"email": EMAIL_JOB, "sms": SMS_JOB}


@dataclass(frozen=True)
class Delivery:
    """One channel of a notification, as its job stands."""

    job_id: str
    channel: str
    status: str  # queued | running | done | failed | cancelled
    attempts: int
    sent_at: str | None
    provider_id: str | None  # the email's Message-ID, the SMS provider's message id
    error: str | None


class Outbox:
    def __init__(self, jobs: JobRunner, *, cipher: FieldCipher | None = None, channels: tuple[str, ...] = CHANNELS):
        """``channels``: those that this installation delivers (a sender is configured)."""
        self.jobs = jobs
        self.cipher = cipher
        self.channels = channels

    def enqueue(self, conn, notification: Notification) -> str:
        """Queue one job per channel the recipient has an address for, in ``conn``'s transaction;
        return the notification's id (see :meth:`deliveries`)."""
        notification_id = uuid.uuid4().hex
        recipient = notification.recipient
        queued = []
        for channel in notification.channels:
            if channel not in self.channels:
                continue
            if channel == "email" and recipient.email:
                message = {
                    "to": recipient.email,
                    "name": recipient.display_name,
                    "subject": notification.subject,
                    "body": notification.body,
                    "link": notification.link,
                }
            elif channel == "sms" and recipient.phone:
                message = {"to": recipient.phone, "text": notification.sms_text()}
            else:
                continue
            params = {
                "notification": notification_id,
                "kind": notification.kind,
                "channel": channel,
                "username": recipient.username,
                **self._seal(message),
            }
            self.jobs.submit(conn, JOB_KINDS[channel], params)
            queued.append(channel)
        if not queued:
            log.info(
                "notification %s (%s): no channel to reach %s", notification_id, notification.kind, recipient.username
            )
        return notification_id

    def deliveries(self, conn, notification_id: str) -> list[Delivery]:
        """The jobs of a notification (for status pages and tests; not indexed, so not for hot paths)."""
        rows = conn.execute(
            select(t_job)
            .where(
                t_job.c.kind.in_(list(JOB_KINDS.values())),
                t_job.c.params["notification"].as_string() == notification_id,
            )
            .order_by(t_job.c.kind)
        )
        return [
            Delivery(
                job_id=row.id,
                channel=row.params["channel"],
                status=row.status,
                attempts=row.attempts,
                sent_at=(row.result or {}).get("sent_at"),
                provider_id=(row.result or {}).get("provider_id"),
                error=row.message,
            )
            for row in rows
        ]

    def open(self, params: dict) -> dict:
        """The message of a job's parameters, unsealed."""
        if "message" in params:
            return params["message"]
        if self.cipher is None:
            raise DeliveryRefused("the message is sealed and no field cipher is configured")
        try:
            return orjson.loads(self.cipher.decrypt(params["sealed"]))
        except Exception as exc:  # noqa: BLE001 - a removed key or a corrupt value: no retry can fix it
            raise DeliveryRefused(f"the sealed message cannot be opened ({exc.__class__.__name__})") from None

    def _seal(self, message: dict) -> dict:
        if self.cipher is None:
            return {"message": message}
        return {"sealed": self.cipher.encrypt(orjson.dumps(message).decode())}
