"""Email over SMTP (RFC 5321), composed as an RFC 5322 / MIME message in UTF-8.

``TELEMED_SMTP_URL`` names the server: ``smtp://host:25`` (plain), ``smtp+starttls://user:pass@host:587``
(STARTTLS, RFC 3207), ``smtps://user:pass@host:465`` (implicit TLS, RFC 8314). User and password
are percent-decoded. Certificates are verified, against the system's trust store unless a
``tls_context`` (a hospital's own CA) is given.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol
from urllib.parse import unquote, urlsplit

from telemed.notify.errors import DeliveryRefused

# scheme -> (default port, security)
SCHEMES = {"smtp": (25, None), "smtp+starttls": (587, "starttls"), "smtps": (465, "tls")}
# Per socket operation. A whole send must stay well inside the job runner's STALE_AFTER (60 s):
# a send still running then would be handed to another worker and sent twice.
TIMEOUT_SECONDS = 15.0


class EmailSender(Protocol):
    mail_from: str

    def send(self, message: EmailMessage) -> str:
        """Hand ``message`` to the mail system; return its Message-ID."""
        ...


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    security: str | None  # None | "starttls" | "tls"
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpServer:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"unsupported SMTP URL scheme {parts.scheme!r}; use one of {sorted(SCHEMES)}")
    if not parts.hostname:
        raise ValueError("the SMTP URL has no host")
    default_port, security = SCHEMES[parts.scheme]
    return SmtpServer(
        host=parts.hostname,
        port=parts.port or default_port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def message_id(job_id: str, mail_from: str) -> str:
    """``<job-id@domain>``: the same for every attempt of one job, so a resend is recognisably the
    same message (RFC 5322 3.6.4), on the domain of the From address."""
    local, at, domain = parseaddr(mail_from)[1].rpartition("@")
    domain = domain if at and local else "telemed"
    return f"<{job_id}@{domain}>"


def compose(
    *,
    mail_from: str,
    to: str,
    display_name: str,
    subject: str,
    body: str,
    link: str | None,
    message_id: str,
    date: datetime,
) -> EmailMessage:
    """A text/plain UTF-8 message; non-ASCII headers become RFC 2047 encoded words."""
    try:
        recipient = Address(display_name=display_name, addr_spec=to)
    except (ValueError, HeaderParseError) as exc:
        raise DeliveryRefused(f"invalid email address: {exc}") from None
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = mail_from
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    # RFC 3834: a machine sent this, so vacation responders and the like do not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(f"{body}\n\n{link}\n" if link else f"{body}\n", charset="utf-8")
    return msg


class SmtpSender:
    """Sends each message over a connection of its own (notifications are few; a pooled
    connection would need liveness checks for little gain)."""

    def __init__(
        self, url: str, mail_from: str, timeout: float = TIMEOUT_SECONDS, tls_context: ssl.SSLContext | None = None
    ):
        self.server = parse_smtp_url(url)
        self.mail_from = mail_from
        self.timeout = timeout
        self.tls_context = tls_context

    def send(self, message: EmailMessage) -> str:
        """Raises :class:`DeliveryRefused` when the server refuses the recipient or the content
        permanently (5xx, RFC 5321 4.2.1); connection failures and 4xx replies propagate as they
        are, to be retried."""
        smtp = self._connect()
        try:
            smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            if all(code >= 500 for code, _ in exc.recipients.values()):
                raise DeliveryRefused(f"recipient refused: {_replies(exc.recipients)}") from exc
            raise
        except smtplib.SMTPDataError as exc:
            if exc.smtp_code >= 500:
                raise DeliveryRefused(f"message refused: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
            raise
        finally:
            # Once the server has accepted the message, a failing QUIT must not turn the send into
            # a failure (smtplib's context manager would raise it, and we would send again).
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        return message["Message-ID"]

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        context = self.tls_context or ssl.create_default_context()
        if server.security == "tls":
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
        try:
            if server.security == "starttls":
                smtp.starttls(context=context)
            if server.username:
                smtp.login(server.username, server.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _replies(refused: dict) -> str:
    return "; ".join(f"{code} {_text(text)}" for code, text in refused.values())
