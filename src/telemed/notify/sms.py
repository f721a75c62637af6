"""Text messages: the gateway boundary and the demo sink.

Production plugs a real provider (Aliyun SMS ``SendSms``, Tencent Cloud SMS ``SendSms``) behind
:class:`SmsGateway`. Both only send text from templates approved in advance, with variables, and
add the approved signature themselves; such an adapter maps the notification to its template. An
adapter raises :class:`~telemed.notify.errors.DeliveryRefused` for a refusal that a retry cannot
fix (an invalid or blacklisted number) and lets anything else (timeouts, throttling) propagate,
which is retried with backoff.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("telemed.sms")


class SmsGateway(Protocol):
    def send(self, phone: str, text: str) -> str:
        """Hand ``text`` to the provider for ``phone``; return the provider's message id."""
        ...


@dataclass(frozen=True)
class SentSms:
    provider_id: str
    phone: str
    text: str


def mask(phone: str) -> str:
    """138****5678: enough to tell messages apart in a log without writing the number into it."""
    return phone[:3] + "****" + phone[-4:] if len(phone) > 8 else "****"


class LogSmsGateway:
    """The demo sink: writes each message to the ``telemed.sms`` log (number masked) and keeps the
    last ``keep`` messages in :attr:`sent` for inspection."""

    def __init__(self, keep: int = 100):
        self.sent: deque[SentSms] = deque(maxlen=keep)

    def send(self, phone: str, text: str) -> str:
        provider_id = f"log-{uuid.uuid4().hex}"
        self.sent.append(SentSms(provider_id, phone, text))
        log.info("SMS %s to %s: %s", provider_id, mask(phone), text)
        return provider_id
