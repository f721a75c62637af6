"""Load the demo network (``telemed demo``) through the validating repository.

Idempotent: every resource has a fixed id and is written (update-as-create) only when it does not
exist, so a second run creates nothing and adds no versions. Everything is one unit of work: either
the whole network is loaded or nothing is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, Engine, select

from telemed.db.engine import unit_of_work
from telemed.db.schema import resource as t_resource
from telemed.demo.network import ACCOUNTS, build_network
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.identity import ensure_account

# The order of the counts (also the order resources are written in).
RESOURCE_TYPES = (
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Condition",
    "Observation",
)


class _Clock(Protocol):
    def now(self) -> datetime: ...


class DemoServices(Protocol):
    """What the loader needs of :class:`telemed.app.Services` (the demo layer does not import the app)."""

    engine: Engine
    clock: _Clock

    def repository(self, conn: Connection, context: AccessContext) -> Repository: ...


def load_demo(services: DemoServices) -> dict[str, int]:
    """Write the demo network; returns how many were created per resource type (and ``account``)."""
    counts = dict.fromkeys(RESOURCE_TYPES, 0)
    counts["account"] = 0
    with unit_of_work(services.engine, write=True) as conn:
        repo = services.repository(conn, AccessContext.system())
        for res in build_network():
            rtype, id_ = res["resourceType"], res["id"]
            if repo.exists(rtype, id_):
                continue
            repo.update(rtype, id_, res)
            counts[rtype] = counts.get(rtype, 0) + 1
        now = services.clock.now()
        for username, display_name, roles in ACCOUNTS:
            counts["account"] += ensure_account(conn, username, display_name, roles, now)
    return counts


def database_is_empty(services: DemoServices) -> bool:
    """True when the ``resource`` table holds no rows (not even deleted resources)."""
    with unit_of_work(services.engine, write=False) as conn:
        return conn.execute(select(t_resource.c.id).limit(1)).first() is None
