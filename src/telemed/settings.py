"""The only place configuration is read. Environment prefix ``TELEMED_``.

Demo mode (the default for ``make run``) uses SQLite and files under ``./var`` and generates a
secret key there on first use; production (``TELEMED_DEMO=false``) refuses to start without an
explicit ``TELEMED_SECRET_KEY``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEMED_", extra="ignore")

    demo: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    var_dir: Path = Path("./var")
    database_url: str = "sqlite:///./var/telemed.db"
    blob_url: str = "file:./var/blobs"
    secret_key: str | None = None
    base_url: str | None = Field(default=None, description="Public base URL; derived from the request if unset")
    max_body_bytes: int = 16 * 1024 * 1024
    # Attachment/Binary data larger than this goes to the blob store instead of the row.
    blob_threshold_bytes: int = 4096
    token_ttl_seconds: int = 3600
    default_page_size: int = 50
    max_page_size: int = 1000
    workers: int = 1
    # Field encryption of ID numbers, phones and addresses: "kid:BASE64KEY,..." newest first;
    # generated into var_dir in demo mode. The blind index key makes encrypted values searchable.
    encryption_keys: str | None = None
    index_key: str | None = None
    # Fan-out of subscription notifications between instances (redis://...); empty = in-process only.
    broker_url: str | None = None
    # Outgoing email: smtp://host:25, smtp+starttls://user:pass@host:587 or smtps://user:pass@host:465;
    # empty = no email notifications.
    smtp_url: str | None = None
    mail_from: str = "Telemed <noreply@telemed.local>"
    # Teleconsultation deadlines, e.g. "urgent:accept=10m,opinion=60m;routine:opinion=48h"
    # (telemed.consultation.sla); empty = the defaults there.
    consultation_sla: str | None = None
    # Remote ECG (telemed.ecg.watch): minutes before an unclaimed ECG escalates (routine, urgent), and
    # before an unacknowledged critical report is raised to its sender again.
    ecg_escalate_minutes: int = 15
    ecg_escalate_urgent_minutes: int = 3
    ecg_critical_ack_minutes: int = 10
    log_level: str = "INFO"
    # The DICOM service (telemed.imaging): its AE title, and the port ``telemed serve`` also listens on
    # for DICOM (``telemed dicom-scp`` runs it alone). Unset: 11112 in demo mode, off otherwise; 0: off.
    dicom_ae_title: str = "TELEMED"
    dicom_port: int | None = None
    # Video calls (telemed.video): ICE servers as comma-separated URLs, e.g.
    # "stun:turn.example.cn:3478,turn:turn.example.cn:3478,turns:turn.example.cn:5349?transport=tcp", and coturn's
    # static-auth-secret for TURN REST API credentials (valid turn_ttl_seconds). Unset: browsers connect directly.
    turn_urls: str | None = None
    turn_secret: str | None = None
    turn_ttl_seconds: int = 3600
    # Send media only through TURN (hides the participants' addresses from each other; needs TURN).
    turn_relay_only: bool = False
    # MDT rooms (three or more participants) on Janus's VideoRoom: the HTTP API URL the server reaches
    # (e.g. http://127.0.0.1:8088/janus; browsers never see it) and its api_secret if one is set.
    # Unset: MDT rooms are a browser mesh of at most 4.
    janus_url: str | None = None
    janus_api_secret: str | None = None
    janus_bitrate: int = 512_000  # the cap asked of every publisher (bits/s)
    # Years a consultation's video recording is kept at least (a retention hold the store enforces;
    # the 2018 telemedicine rules ask for 3 years of audio and video).
    recording_retention_years: int = 3
    # Login throttling per client address (telemed.identity.throttle): after this many failed sign-ins
    # from one address within the window, the address is refused (429) for a window. Shared through
    # the database, or Redis when broker_url is set.
    login_throttle_failures: int = 50
    login_throttle_window_seconds: int = 900
    # Reverse proxies (comma-separated addresses or CIDRs) whose X-Forwarded-For names the client's
    # address; from any other peer the header is ignored. Unset: the socket's peer is the client.
    trusted_proxies: str | None = None

    def dicom_listen_port(self) -> int | None:
        port = self.dicom_port if self.dicom_port is not None else (11112 if self.demo else None)
        return port or None

    def problems(self) -> list[str]:
        """Configuration problems, as ``telemed check`` prints them (empty when fine)."""
        found = []
        if not self.demo:
            if not self.secret_key:
                found.append("TELEMED_SECRET_KEY is required outside demo mode")
            elif len(self.secret_key) < MIN_SECRET_LENGTH:
                found.append(f"TELEMED_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")
            if not self.encryption_keys or not self.index_key:
                found.append("TELEMED_ENCRYPTION_KEYS and TELEMED_INDEX_KEY are required (field encryption)")
            if self.database_url.startswith("sqlite"):
                found.append("SQLite is for demo and single-user use; set TELEMED_DATABASE_URL=postgresql://...")
        if self.recording_retention_years < 3:
            found.append("TELEMED_RECORDING_RETENTION_YEARS must be at least 3 (2018 rules: audio and video 3 years)")
        if not (self.database_url.startswith("sqlite:") or self.database_url.startswith("postgresql")):
            found.append(f"TELEMED_DATABASE_URL has an unsupported scheme: {self.database_url!r}")
        if self.workers > 1 and not self.broker_url:
            found.append(
                "TELEMED_WORKERS > 1 without TELEMED_BROKER_URL: websocket notifications reach only the "
                "sockets of the worker that delivers them; set TELEMED_BROKER_URL=redis://..."
            )
        if self.smtp_url and self.smtp_url.split("://", 1)[0] not in ("smtp", "smtp+starttls", "smtps"):
            # (not echoing the URL: it may hold a password)
            found.append("TELEMED_SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        if self.consultation_sla:
            from telemed.consultation.sla import SlaPolicy

            try:
                SlaPolicy.parse(self.consultation_sla)
            except ValueError as exc:
                found.append(f"TELEMED_CONSULTATION_SLA: {exc}")
        if self.trusted_proxies:
            import ipaddress

            for part in self.trusted_proxies.split(","):
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    found.append(f"TELEMED_TRUSTED_PROXIES: {part.strip()!r} is not an address or CIDR")
        if not self.blob_url.startswith("file:"):
            found.append(f"TELEMED_BLOB_URL has an unsupported scheme: {self.blob_url!r}")
        return found

    def field_cipher(self):
        """The cipher for sensitive fields; demo mode keeps its generated keys in ``var_dir``."""
        import base64
        import json

        from telemed.kernel.crypto import FieldCipher, new_key, parse_keys

        keys, index_key = self.encryption_keys, self.index_key
        if not keys or not index_key:
            if not self.demo:
                raise RuntimeError("TELEMED_ENCRYPTION_KEYS and TELEMED_INDEX_KEY are required outside demo mode")
            path = self.var_dir / "field-keys.json"
            if not path.exists():
                self.var_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"encryption_keys": f"k1:{new_key()}", "index_key": new_key()}))
                path.chmod(0o600)
            stored = json.loads(path.read_text())
            keys, index_key = keys or stored["encryption_keys"], index_key or stored["index_key"]
        return FieldCipher(parse_keys(keys), base64.b64decode(index_key))

    def resolved_secret_key(self) -> str:
        """The signing key; in demo mode generated once into ``var_dir`` so restarts keep tokens valid."""
        if self.secret_key:
            return self.secret_key
        if not self.demo:
            raise RuntimeError("TELEMED_SECRET_KEY is required outside demo mode")
        path = self.var_dir / "secret.key"
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()
