"""Delivery of outbox notifications: a worker thread per instance, retries with exponential backoff.

A row is claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so with several instances each
notification is delivered once. The thread wakes right after a commit that wrote outbox rows (the
commit hook in the app) and otherwise polls every second. A rest-hook endpoint that keeps failing
exhausts ``MAX_ATTEMPTS``; the Subscription then gets ``status=error`` and the reason in ``error``.
Websocket notifications go to the :class:`~telemed.fhir.subscriptions.websocket.Hub`, which fans
them out through the broker when several instances run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import httpx
import orjson
from sqlalchemy import Engine, select, update

from telemed.db.engine import unit_of_work
from telemed.db.schema import resource as t_resource
from telemed.db.schema import subscription_outbox as t_outbox
from telemed.fhir.store.context import AccessContext
from telemed.fhir.subscriptions.active import ActiveSubscription, ActiveSubscriptions
from telemed.kernel.clock import Clock
from telemed.kernel.worker import BackgroundWorker

log = logging.getLogger("telemed.subscriptions")
MAX_ATTEMPTS = 6
BASE_BACKOFF = timedelta(seconds=1)
MAX_BACKOFF = timedelta(minutes=10)
BATCH = 50


def backoff(attempts: int, base: timedelta = BASE_BACKOFF) -> timedelta:
    """Exponential: base, 2x base, 4x base ... capped at MAX_BACKOFF."""
    return min(base * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)


class Dispatcher(BackgroundWorker):
    thread_name = "telemed-subscriptions"

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        subscriptions: ActiveSubscriptions,
        publish: Callable[[str, str], None],
        repository: Callable,
        base_url: str | None = None,
        poll_seconds: float = 1.0,
    ):
        super().__init__(poll_seconds)
        self.engine = engine
        self.clock = clock
        self.subscriptions = subscriptions
        self.publish = publish  # (subscription id, message) -> websocket hub
        self.repository = repository
        self.base_url = base_url or ""
        self.http = httpx.Client(timeout=5.0)
        self.max_attempts = MAX_ATTEMPTS
        self.base_backoff = BASE_BACKOFF

    def stop(self) -> None:
        super().stop()
        self.http.close()

    def tick(self) -> None:
        while not self._stop.is_set() and self.deliver_due() == BATCH:
            pass

    def deliver_due(self) -> int:
        """Deliver the notifications that are due; returns how many were attempted."""
        with unit_of_work(self.engine) as conn:
            q = (
                select(t_outbox)
                .where(t_outbox.c.status == "pending", t_outbox.c.next_attempt <= self.clock.now())
                .order_by(t_outbox.c.seq)
                .limit(BATCH)
            )
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            rows = conn.execute(q).all()
            for row in rows:
                self._deliver(conn, row)
        return len(rows)

    def _deliver(self, conn, row) -> None:
        sub = self.subscriptions.get(conn, row.subscription_id)
        now = self.clock.now()
        if sub is None:  # deleted or deactivated since the write
            conn.execute(update(t_outbox).where(t_outbox.c.seq == row.seq).values(status="dropped"))
            return
        try:
            if sub.channel == "websocket":
                self.publish(sub.id, f"ping {sub.id}")
            else:
                self._rest_hook(conn, sub, row)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported on the Subscription
            attempts = row.attempts + 1
            reason = f"{exc.__class__.__name__}: {exc}"[:1000]
            if attempts >= self.max_attempts:
                conn.execute(
                    update(t_outbox)
                    .where(t_outbox.c.seq == row.seq)
                    .values(status="failed", attempts=attempts, last_error=reason)
                )
                self._mark_error(conn, sub, reason)
            else:
                conn.execute(
                    update(t_outbox)
                    .where(t_outbox.c.seq == row.seq)
                    .values(
                        attempts=attempts, last_error=reason, next_attempt=now + backoff(attempts, self.base_backoff)
                    )
                )
            log.warning("notification for Subscription/%s failed (attempt %s): %s", sub.id, attempts, reason)
            return
        conn.execute(
            update(t_outbox).where(t_outbox.c.seq == row.seq).values(status="delivered", attempts=row.attempts + 1)
        )

    def _rest_hook(self, conn, sub: ActiveSubscription, row) -> None:
        headers = {}
        for h in sub.headers:
            name, _, value = h.partition(":")
            if name.strip():
                headers[name.strip()] = value.strip()
        url = f"{self.base_url}/{row.resource_type}/{row.resource_id}"
        body = b""
        if sub.payload == "full-resource":
            content = conn.execute(
                select(t_resource.c.content, t_resource.c.has_blobs).where(
                    t_resource.c.resource_type == row.resource_type, t_resource.c.id == row.resource_id
                )
            ).first()
            if content is None or content.content is None:
                return  # deleted since: nothing to send
            repo = self.repository(conn, AccessContext.system())
            body = orjson.dumps(repo._load(content.content, content.has_blobs))
            headers["Content-Type"] = "application/fhir+json"
        elif sub.payload == "id-only":
            bundle = {
                "resourceType": "Bundle",
                "type": "history",
                "entry": [{"fullUrl": url, "request": {"method": "PUT", "url": url}}],
            }
            body = orjson.dumps(bundle)
            headers["Content-Type"] = "application/fhir+json"
        response = self.http.post(sub.endpoint, content=body, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"endpoint answered HTTP {response.status_code}")

    def _mark_error(self, conn, sub: ActiveSubscription, reason: str) -> None:
        repo = self.repository(conn, AccessContext.system())
        current = repo.read("Subscription", sub.id).resource
        updated = {**current, "status": "error", "error": f"Delivery failed {self.max_attempts} times: {reason}"}
        repo.update("Subscription", sub.id, updated)
