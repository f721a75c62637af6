"""Write-time matching: a written resource is checked against every active Subscription on its type
with the search engine itself (criteria + ``_id``), and each match becomes an outbox row in the
same transaction, so an acknowledged write is never missed, even across a restart."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert

from telemed.db.schema import subscription_outbox
from telemed.fhir.search import query
from telemed.fhir.store import access, searching
from telemed.fhir.store.context import AccessContext
from telemed.fhir.subscriptions import active
from telemed.fhir.subscriptions.active import ActiveSubscriptions
from telemed.kernel.errors import Category, TelemedError

OUTBOX_FLAG = "telemed.pending"  # set on the connection; after the commit the dispatcher is woken


class SubscriptionHooks:
    """The Repository's :class:`WriteHooks` for subscriptions."""

    def __init__(self, subscriptions: ActiveSubscriptions):
        self.subscriptions = subscriptions

    def before_write(self, repo, resource: dict) -> dict:
        if resource.get("resourceType") == "Subscription":
            prepared = active.prepare(resource)
            _check_access(repo, prepared)
            return prepared
        return resource

    def after_delete(self, repo, resource_type: str, id_: str) -> None:
        if resource_type == "Subscription":
            self.subscriptions.invalidate()

    def after_write(self, repo, stored) -> None:
        resource = stored.resource
        rtype = resource["resourceType"]
        if rtype == "Subscription":
            self.subscriptions.invalidate()
            return
        subs = self.subscriptions.for_type(repo.conn, rtype)
        if not subs:
            return
        matcher = _system_view(repo)
        for sub in subs:
            q = query.parse(rtype, [*sub.params, ("_id", resource["id"])], strict=True)
            if searching.find_ids(matcher, q, limit=1):
                _enqueue(repo, sub.id, rtype, resource["id"], stored.version_id, stored.last_updated)


def _check_access(repo, subscription: dict) -> None:
    """Matching sees every resource, and a rest-hook notification carries the resource (or its id)
    to the subscriber's endpoint: so only a caller who may see every patient subscribes a rest-hook
    to patient data. A websocket notification is a bare ping; the client then searches with its own
    token, under its own access rules, so anyone may subscribe that way."""
    rtype, _ = active.parse_criteria(subscription.get("criteria"))
    channel = (subscription.get("channel") or {}).get("type")
    if channel != "websocket" and access.is_clinical(rtype) and not repo.context.sees_all:
        raise TelemedError(
            Category.FORBIDDEN,
            f"A {channel} Subscription on {rtype} would send patient data this caller may not see; "
            "use a websocket channel (its notifications carry no data)",
        )


def _system_view(repo):
    """Matching sees every resource (the subscriber's own access is applied at delivery)."""
    clone = object.__new__(type(repo))
    clone.__dict__.update(repo.__dict__)
    clone.context = AccessContext.system()
    return clone


def _enqueue(repo, sub_id: str, rtype: str, rid: str, version: int, now: datetime) -> None:
    repo.conn.execute(
        insert(subscription_outbox).values(
            subscription_id=sub_id,
            resource_type=rtype,
            resource_id=rid,
            version_id=version,
            created=now,
            status="pending",
            attempts=0,
            next_attempt=now,
        )
    )
    repo.conn.info[OUTBOX_FLAG] = True
