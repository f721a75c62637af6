"""Load the demo network (``telemed demo``) through the validating repository.

Idempotent: every resource has a fixed id and is written (update-as-create) only when it does not
exist, so a second run creates nothing and adds no versions. Everything is one unit of work: either
the whole network is loaded or nothing is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, Engine, select

from telemed.consultation import Env
from telemed.db.engine import unit_of_work
from telemed.db.schema import resource as t_resource
from telemed.demo.consultations import load_consultations
from telemed.demo.ecg import load_ecgs
from telemed.demo.network import ACCOUNTS, build_network
from telemed.demo.pathology import load_pathology
from telemed.demo.reading import load_readings
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.identity import ensure_account
from telemed.identity.passwords import hash_password

# The order of the counts (also the order resources are written in).
RESOURCE_TYPES = (
    "Organization",
    "Location",
    "HealthcareService",
    "Endpoint",
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
        password = hash_password(DEMO_PASSWORD)
        accounts = demo_accounts()
        for username, display_name, roles, org, practitioner in accounts:
            counts["account"] += ensure_account(
                conn, username, display_name, roles, now, practitioner, org, password_hash=password
            )
        env = Env(clock=services.clock, ids=services.ids)
        sign = getattr(services, "sign_opinion", None)
        counts["consultation"] = load_consultations(
            lambda ctx: services.repository(conn, ctx), env, build_network(), accounts, sign
        )
        blobs = getattr(services, "blobs", None)
        if blobs is not None:
            repo_for = lambda ctx: services.repository(conn, ctx)  # noqa: E731
            counts["ecg"] = load_ecgs(repo_for, blobs, now, build_network())
        settings = getattr(services, "settings", None)
        if settings is not None:
            counts["pathology"] = load_pathology(lambda ctx: services.repository(conn, ctx), services.clock,
                                                 services.ids, settings.var_dir, build_network())  # fmt: skip
        counts["reading"] = load_readings(lambda ctx: services.repository(conn, ctx), services.clock, build_network())
    return counts


# Printed by ``telemed demo``; demo mode only (production accounts get their own passwords).
DEMO_PASSWORD = "Telemed-Demo-2026"
_SPECIALTY_ROLES = {"394914008": "radiologist", "394915009": "pathologist", "394579002": "ecg-reader"}


def demo_accounts() -> list[tuple[str, str, list[str], str | None, str | None]]:
    """(user name, display name, roles, institution, practitioner) for every demo practitioner,
    plus the platform's own staff. Experts work at the province and city centres, requesting
    doctors at county hospitals and township clinics."""
    out = [(u, name, roles, "org-province" if u != "admin" else None, None) for u, name, roles in ACCOUNTS]
    out += [
        ("qc", "质控员", ["qc-officer"], "org-province-tmc", None),
        ("triage", "分诊调度员", ["triage-officer"], "org-province-tmc", None),
        ("auditor", "审计员", ["auditor"], "org-province", None),
        ("supervisor", "卫健委监管人员", ["supervisor"], "org-province", None),
    ]
    for res in build_network():
        if res["resourceType"] != "PractitionerRole":
            continue
        practitioner = res["practitioner"]["reference"].split("/", 1)[1]
        org = res["organization"]["reference"].split("/", 1)[1]
        specialty = res["specialty"][0]["coding"][0]["code"]
        if org.startswith(("org-province", "org-city")):
            roles = ["consulting-expert"] + ([_SPECIALTY_ROLES[specialty]] if specialty in _SPECIALTY_ROLES else [])
        else:
            roles = ["requesting-doctor"]
        out.append((practitioner, res["practitioner"].get("display", practitioner), roles, org, practitioner))
    return out


def database_is_empty(services: DemoServices) -> bool:
    """True when the ``resource`` table holds no rows (not even deleted resources)."""
    with unit_of_work(services.engine, write=False) as conn:
        return conn.execute(select(t_resource.c.id).limit(1)).first() is None
