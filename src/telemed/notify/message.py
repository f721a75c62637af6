"""What a notification is: a rendered message for one recipient, and the channels it may go by.

The caller renders ``subject`` and ``body`` in the recipient's language (the portal's gettext
catalogues); this package only transports them.
"""

from __future__ import annotations

from dataclasses import dataclass

CHANNELS = ("email", "sms")

# Chinese text always travels as UCS-2, 70 characters in one SMS or 67 per part of a concatenated
# one (3GPP TS 23.040 9.2.3.24.1). Two parts are enough for "your consultation is scheduled, see
# <link>"; longer bodies belong in the email.
SMS_MAX_CHARS = 134
# Below this much room for the body, a link would crowd out the message: send the text alone.
_SMS_MIN_BODY = 20


@dataclass(frozen=True)
class Recipient:
    username: str | None  # the account, when the recipient has one (for the record, not for sending)
    display_name: str
    email: str | None
    phone: str | None


@dataclass(frozen=True)
class Notification:
    kind: str  # what happened, e.g. "consultation.scheduled": for logs and monitoring
    recipient: Recipient
    subject: str
    body: str
    link: str | None = None
    channels: tuple[str, ...] = CHANNELS

    def __post_init__(self) -> None:
        unknown = set(self.channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"unknown notification channel(s): {sorted(unknown)}; known: {list(CHANNELS)}")
        # A line break in a header would end it (RFC 5322 2.2.3): fold the subject to one line here,
        # in the caller's transaction, rather than fail at send time.
        object.__setattr__(self, "subject", " ".join(self.subject.split()))

    def sms_text(self) -> str:
        """The body on one line, cut to :data:`SMS_MAX_CHARS` so that the link stays whole."""
        body = " ".join(self.body.split())
        tail = f" {self.link}" if self.link else ""
        if SMS_MAX_CHARS - len(tail) < _SMS_MIN_BODY:
            tail = ""
        room = SMS_MAX_CHARS - len(tail)
        if len(body) > room:
            body = body[: room - 1].rstrip() + "…"
        return body + tail
