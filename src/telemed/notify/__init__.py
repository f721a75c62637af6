"""Notifications by email and SMS, sent from a durable outbox (the job table).

Public API: the names in ``__all__``. A domain renders the text in the recipient's language and
calls ``outbox.enqueue(conn, Notification(...))`` in the transaction of its business change; the
job runner delivers it after the commit. Guarantees: :mod:`telemed.notify.outbox`.
"""

from telemed.notify.delivery import BACKOFF, MAX_ATTEMPTS, channels, register
from telemed.notify.email import EmailSender, SmtpSender
from telemed.notify.errors import DeliveryRefused
from telemed.notify.message import SMS_MAX_CHARS, Notification, Recipient
from telemed.notify.outbox import EMAIL_JOB, SMS_JOB, Delivery, Outbox
from telemed.notify.sms import LogSmsGateway, SentSms, SmsGateway

__all__ = [
    "BACKOFF",
    "EMAIL_JOB",
    "MAX_ATTEMPTS",
    "SMS_JOB",
    "SMS_MAX_CHARS",
    "Delivery",
    "DeliveryRefused",
    "EmailSender",
    "LogSmsGateway",
    "Notification",
    "Outbox",
    "Recipient",
    "SentSms",
    "SmsGateway",
    "SmtpSender",
    "channels",
    "register",
]
