"""Validation of Subscription resources and the cache of active ones.

The cache is refreshed when this instance writes a Subscription and at most every few seconds
otherwise, so subscriptions created on another instance are matched here too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sqlalchemy import Connection, select

from telemed.db.schema import resource as t_resource
from telemed.fhir.search import query
from telemed.kernel.errors import Category, TelemedError, incorrect

CHANNELS = {"rest-hook", "websocket"}
PAYLOAD_EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class ActiveSubscription:
    id: str
    resource_type: str
    params: tuple[tuple[str, str], ...]
    channel: str
    endpoint: str | None
    payload: str  # "empty" | "id-only" | "full-resource"
    headers: tuple[str, ...]


def parse_criteria(criteria: object) -> tuple[str, list[tuple[str, str]]]:
    if not isinstance(criteria, str) or not criteria:
        raise incorrect(
            "Subscription.criteria must be a search URL such as Observation?code=...", "Subscription.criteria"
        )
    rtype, _, qs = criteria.partition("?")
    params = parse_qsl(qs, keep_blank_values=True)
    try:
        query.parse(rtype, params, strict=True)
    except TelemedError as exc:
        raise incorrect(
            f"Subscription.criteria is not a valid search: {exc.message}", "Subscription.criteria"
        ) from None
    except KeyError:
        raise incorrect(f"Subscription.criteria names an unknown type {rtype!r}", "Subscription.criteria") from None
    return rtype, params


def payload_kind(channel: dict) -> str:
    for ext in channel.get("_payload", {}).get("extension", []):
        if ext.get("url") == PAYLOAD_EXT and ext.get("valueCode") in ("empty", "id-only", "full-resource"):
            return ext["valueCode"]
    return "full-resource" if channel.get("payload") else "empty"


def prepare(resource: dict) -> dict:
    """Check a Subscription before it is stored; a requested one becomes active (R4 §2.46.7.1)."""
    parse_criteria(resource.get("criteria"))
    channel = resource.get("channel") or {}
    ctype = channel.get("type")
    if ctype not in CHANNELS:
        raise TelemedError(
            Category.UNPROCESSABLE, f"Subscription channel type {ctype!r} is not supported (rest-hook, websocket)"
        )
    if ctype == "rest-hook" and not str(channel.get("endpoint", "")).startswith(("http://", "https://")):
        raise incorrect("A rest-hook Subscription needs an http(s) channel.endpoint", "Subscription.channel.endpoint")
    payload = channel.get("payload")
    if payload and payload not in ("application/fhir+json", "application/json"):
        raise TelemedError(Category.UNPROCESSABLE, f"Subscription payload {payload!r} is not supported (JSON only)")
    if resource.get("status") == "requested":
        resource = {**resource, "status": "active"}
        resource.pop("error", None)
    return resource


def to_active(resource: dict) -> ActiveSubscription | None:
    if resource.get("status") != "active":
        return None
    try:
        rtype, params = parse_criteria(resource.get("criteria"))
    except TelemedError:
        return None
    channel = resource.get("channel") or {}
    return ActiveSubscription(
        id=resource["id"],
        resource_type=rtype,
        params=tuple(params),
        channel=channel.get("type", ""),
        endpoint=channel.get("endpoint"),
        payload=payload_kind(channel),
        headers=tuple(channel.get("header", [])),
    )


class ActiveSubscriptions:
    def __init__(self) -> None:
        self._by_type: dict[str, list[ActiveSubscription]] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def for_type(self, conn: Connection, resource_type: str) -> list[ActiveSubscription]:
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            self._reload(conn)
        return self._by_type.get(resource_type, [])

    def get(self, conn: Connection, sub_id: str) -> ActiveSubscription | None:
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            self._reload(conn)
        return next((s for subs in self._by_type.values() for s in subs if s.id == sub_id), None)

    def _reload(self, conn: Connection) -> None:
        rows = conn.execute(
            select(t_resource.c.content).where(
                t_resource.c.resource_type == "Subscription", t_resource.c.deleted.is_(False)
            )
        ).all()
        by_type: dict[str, list[ActiveSubscription]] = {}
        for (content,) in rows:
            sub = to_active(content)
            if sub is not None:
                by_type.setdefault(sub.resource_type, []).append(sub)
        with self._lock:
            self._by_type = by_type
            self._loaded_at = time.monotonic()
