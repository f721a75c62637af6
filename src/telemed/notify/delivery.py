"""The job handlers that send queued notifications, and their retry policy.

See :mod:`telemed.notify.outbox` for what is guaranteed and the window where it is not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from telemed.db.jobs import JobContext, JobRunner, RetryLater
from telemed.notify.email import EmailSender, compose, message_id
from telemed.notify.errors import DeliveryRefused
from telemed.notify.outbox import EMAIL_JOB, SMS_JOB, Outbox
from telemed.notify.sms import SmsGateway

log = logging.getLogger("telemed.notify")

# Waits after the 1st, 2nd, ... failed attempt: rides out a mail server restart or a provider's
# throttling, and gives up within about three hours, while the news is still worth sending.
BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))
MAX_ATTEMPTS = len(BACKOFF) + 1


class GaveUp(Exception):
    """The last attempt failed; the job is marked failed (and the job runner logs it)."""


def channels(*, email: EmailSender | None, sms: SmsGateway | None) -> tuple[str, ...]:
    """The channels that these senders deliver (for :class:`Outbox`)."""
    return tuple(name for name, sender in (("email", email), ("sms", sms)) if sender is not None)


def register(jobs: JobRunner, outbox: Outbox, *, email: EmailSender | None = None, sms: SmsGateway | None = None):
    """Register the delivery handlers of the configured senders on ``jobs``."""
    if email is not None:
        jobs.register(EMAIL_JOB, lambda ctx: deliver_email(ctx, outbox, email))
    if sms is not None:
        jobs.register(SMS_JOB, lambda ctx: deliver_sms(ctx, outbox, sms))


def deliver_email(ctx: JobContext, outbox: Outbox, sender: EmailSender) -> dict:
    def send(message: dict) -> str:
        return sender.send(
            compose(
                mail_from=sender.mail_from,
                to=message["to"],
                display_name=message["name"],
                subject=message["subject"],
                body=message["body"],
                link=message["link"],
                message_id=message_id(ctx.id, sender.mail_from),
                date=ctx.clock.now(),
            )
        )

    return _deliver(ctx, outbox, send)


def deliver_sms(ctx: JobContext, outbox: Outbox, gateway: SmsGateway) -> dict:
    return _deliver(ctx, outbox, lambda message: gateway.send(message["to"], message["text"]))


def _deliver(ctx: JobContext, outbox: Outbox, send: Callable[[dict], str]) -> dict:
    what = f"notification {ctx.params['notification']} ({ctx.params['kind']}, {ctx.params['channel']})"
    if ctx.recorded and ctx.recorded.get("sent_at"):
        # An earlier attempt was accepted by the provider and recorded it, then died before the
        # job was marked done: sending again would duplicate the message.
        log.info("%s was sent at %s; not sending again", what, ctx.recorded["sent_at"])
        return ctx.recorded
    if ctx.attempt > MAX_ATTEMPTS:  # attempts that crashed the worker count too
        raise GaveUp(f"{what}: not sent after {MAX_ATTEMPTS} attempts")
    message = outbox.open(ctx.params)
    try:
        provider_id = send(message)
    except DeliveryRefused as exc:
        raise DeliveryRefused(f"{what}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a transport error may pass; retried, then given up
        error = f"{exc.__class__.__name__}: {exc}"
        if ctx.attempt >= MAX_ATTEMPTS:
            raise GaveUp(f"{what}: not sent after {ctx.attempt} attempts; last error {error}") from exc
        raise RetryLater(BACKOFF[ctx.attempt - 1], error) from exc
    result = {"sent_at": ctx.clock.now().isoformat(), "provider_id": provider_id}
    try:
        ctx.record(result)
    except Exception:  # noqa: BLE001 - the message is out: failing or retrying now would be wrong
        # The runner still writes the result with the final status; only if that fails too is the
        # message sent again (the at-least-once window).
        log.exception("%s was sent (%s) but could not be recorded", what, provider_id)
    return result
