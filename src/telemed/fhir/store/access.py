"""Patient-data access rules, enforced in the store on every read, search, include, history and write.

A resource is *clinical* when it is a Patient or belongs to the Patient compartment (R4
CompartmentDefinition patient); everything else (institutions, practitioners, terminology) is
directory data that every authenticated user may read. For a ``scoped`` caller a clinical
resource is visible when:

1. it was created by a user of the caller's institution (``resource.owner_org``), or
2. its patient is granted to the caller's institution or to the caller personally
   (``access_grant``: the managing organization; the performer of an open request such as a
   teleconsultation ServiceRequest, and for a follow-up period after it closes).

Anything else is answered exactly like a resource that does not exist (404), so the existence of
another institution's patient is never confirmed. Grants are maintained here from the resources
themselves (Patient.managingOrganization, ServiceRequest.performer), as data an administrator can
query, not as conditionals in routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import DateTime, and_, bindparam, delete, exists, false, insert, or_, select

from telemed.db.schema import access_grant as t_grant
from telemed.db.schema import idx_reference
from telemed.db.schema import resource as t_resource
from telemed.fhir.definitions import load
from telemed.fhir.store.context import AccessContext

OPEN_REQUEST = {"draft", "active", "on-hold"}
# Compartment types whose instances often concern no patient at all (an expert's consultation
# hours): visible like directory data when they reference no Patient.
DIRECTORY_WHEN_PATIENTLESS = frozenset({"Schedule"})
FOLLOW_UP = timedelta(days=30)


@cache
def clinical_types() -> frozenset[str]:
    return frozenset({"Patient", *load().patient_compartment})


def is_clinical(resource_type: str) -> bool:
    return resource_type in clinical_types()


def _compartment_codes(resource_type: str) -> list[str]:
    return [c for c in load().patient_compartment.get(resource_type, []) if c != "{def}"]


@dataclass(frozen=True)
class Terms:
    """What the rules read of a caller: literal values, or bind parameters in their place (so one
    statement, built and compiled once, serves every caller of the same shape)."""

    clinical: str
    unrestricted: bool
    organization: object | None  # a value or a bind parameter; None: the caller has none
    practitioner: object | None
    patient: object | None
    now: object


def terms_of(ctx: AccessContext, now: datetime) -> Terms:
    return Terms(ctx.clinical, ctx.unrestricted, ctx.organization or None, ctx.practitioner or None,
                 ctx.patient or None, now)  # fmt: skip


def _placeholders(ctx: AccessContext) -> Terms:
    def slot(name: str, value, type_=None):
        return bindparam(name, type_=type_) if value else None

    return Terms(ctx.clinical, ctx.unrestricted, slot("acc_org", ctx.organization),
                 slot("acc_prac", ctx.practitioner), slot("acc_patient", ctx.patient),
                 bindparam("acc_now", type_=DateTime(timezone=True)))  # fmt: skip


def bound_values(ctx: AccessContext, now: datetime) -> dict:
    """The values of :func:`read_statement`'s bind parameters for ``ctx``."""
    return {"acc_org": ctx.organization, "acc_prac": ctx.practitioner, "acc_patient": ctx.patient, "acc_now": now}


def granted(patient_id, t: Terms):
    """EXISTS: the patient ``patient_id`` (a column) is granted to the caller (institution or
    personally), valid now; None when the caller can hold no grant. Correlated on the patient, so
    a read or a selective search probes ``ix_grant_patient`` per row instead of listing every
    granted patient first."""
    grantees = []
    if t.organization is not None:
        grantees.append(and_(t_grant.c.grantee_kind == "organization", t_grant.c.grantee_id == t.organization))
    if t.practitioner is not None:
        grantees.append(and_(t_grant.c.grantee_kind == "practitioner", t_grant.c.grantee_id == t.practitioner))
    if not grantees:
        return None
    return exists().where(
        t_grant.c.patient_id == patient_id,
        or_(*grantees),
        or_(t_grant.c.valid_until.is_(None), t_grant.c.valid_until > t.now),
    )


def visibility(res, resource_type: str, ctx: AccessContext, now: datetime):
    """A WHERE clause limiting ``res`` (the resource table or an alias) to what ``ctx`` may see;
    None when no limit applies.

    Written as EXISTS subqueries correlated on the row (its compartment references, then the
    grants of each referenced patient), each answered from an index: the cost grows with the rows
    a request looks at, not with how many patients the caller may see (measured by
    benchmarks/access_overhead.py).

    A SMART launch's patient context (``ctx.patient`` outside ``self`` mode) narrows the rules to
    that patient's compartment."""
    if not is_clinical(resource_type):
        return None
    return _visibility(res, resource_type, terms_of(ctx, now))


def _visibility(res, resource_type: str, t: Terms):
    rule = _rules(res, resource_type, t)
    if t.patient is None or t.clinical == "self":
        return rule
    only = of_patient(res, resource_type, t.patient)
    return only if rule is None else and_(rule, only)


def read_statement(base, resource_type: str, ctx: AccessContext):
    """``base`` (a SELECT of one ``resource`` row) with a ``visible`` column computed by the rules,
    for callers of ``ctx``'s shape; its parameters are :func:`bound_values`. Built once per shape:
    building and compiling the rules cost a third of a millisecond per read."""
    shape = (resource_type, ctx.clinical, ctx.unrestricted, bool(ctx.organization), bool(ctx.practitioner),
             bool(ctx.patient))  # fmt: skip
    hit = _READS.get((id(base), shape))
    if hit is None:
        clause = _visibility(t_resource, resource_type, _placeholders(ctx))
        hit = None if clause is None else base.add_columns(clause.label("visible"))
        _READS[(id(base), shape)] = hit
    return hit


_READS: dict = {}


def of_patient(res, resource_type: str, patient_id):
    """WHERE: ``res`` is the Patient ``patient_id`` or in its compartment."""
    if resource_type == "Patient":
        return res.c.id == patient_id
    codes = _compartment_codes(resource_type)
    if not codes:
        return false()
    ref = idx_reference.alias()
    return exists().where(
        ref.c.resource_type == resource_type,
        ref.c.resource_id == res.c.id,
        ref.c.code.in_(codes),
        ref.c.target_type == "Patient",
        ref.c.target_id == patient_id,
    )


def _rules(res, resource_type: str, t: Terms):
    if t.unrestricted:
        return None
    if t.clinical == "none":
        return false()
    self_only = t.clinical == "self"
    patients = [t.patient] if self_only and t.patient is not None else []
    own = res.c.owner_org == t.organization if t.organization is not None and not self_only else false()
    if resource_type == "Patient":
        conds = [own]
        if patients:
            conds.append(res.c.id.in_(patients))
        if not self_only and (grant := granted(res.c.id, t)) is not None:
            conds.append(grant)
        return or_(*conds)
    codes = _compartment_codes(resource_type)
    ref = idx_reference.alias()
    targets = []
    if patients:
        targets.append(ref.c.target_id.in_(patients))
    if not self_only and (grant := granted(ref.c.target_id, t)) is not None:
        targets.append(grant)
    if resource_type in DIRECTORY_WHEN_PATIENTLESS:
        # A practitioner's or a room's Schedule holds no patient data: directory data, open to all.
        own = or_(own, res.c.id.notin_(
            select(ref.c.resource_id).where(
                ref.c.resource_type == resource_type, ref.c.code.in_(codes), ref.c.target_type == "Patient"
            )
        ))  # fmt: skip
    if not targets or not codes:
        return own
    via_patient = exists().where(
        ref.c.resource_type == resource_type,
        ref.c.resource_id == res.c.id,
        ref.c.code.in_(codes),
        ref.c.target_type == "Patient",
        or_(*targets),
    )
    return or_(own, via_patient)


def patients_of(resource: dict) -> set[str]:
    """The Patient ids a resource belongs to (its Patient compartment memberships)."""
    from telemed.fhir.search.index import index_rows

    rt = resource["resourceType"]
    if rt == "Patient":
        return {resource["id"]} if resource.get("id") else set()
    codes = set(_compartment_codes(rt))
    return {
        r["target_id"]
        for r in index_rows(resource).get("reference", [])
        if r["code"] in codes and r.get("target_type") == "Patient" and r.get("target_id")
    }


# The institution network itself: written by platform administrators, and by an institution's
# administrator within that institution's subtree (its departments, sites, services, staff).
DIRECTORY_TYPES = {
    "Organization": ("partOf", "id"),
    "Location": ("managingOrganization",),
    "HealthcareService": ("providedBy",),
    "PractitionerRole": ("organization",),
    "Endpoint": ("managingOrganization",),
    "Practitioner": (),
}
MAX_TIER_DEPTH = 10


def _parent(repo, org_id: str) -> str | None:
    row = repo._current("Organization", org_id)
    ref = ((row.content or {}).get("partOf") or {}).get("reference", "") if row and row.content else ""
    return ref.split("/", 1)[1] if ref.startswith("Organization/") else None


def in_subtree(repo, org_id: str | None, root: str) -> bool:
    """Whether ``org_id`` is ``root`` or below it along Organization.partOf."""
    for _ in range(MAX_TIER_DEPTH):
        if org_id is None:
            return False
        if org_id == root:
            return True
        org_id = _parent(repo, org_id)
    return False


def check_directory_write(repo, resource_type: str, resource: dict | None, existing: dict | None) -> None:
    """Who may change the institution network (raises 403 otherwise)."""
    from telemed.kernel.errors import Category, TelemedError

    if resource_type not in DIRECTORY_TYPES:
        return
    ctx = repo.context
    if "platform-admin" in ctx.roles or ctx.user == "system":
        return
    if "institution-admin" not in ctx.roles or not ctx.organization:
        raise TelemedError(Category.FORBIDDEN, f"Only administrators may change {resource_type} resources")
    for version in (resource, existing):
        if version is None:
            continue
        refs = []
        for field in DIRECTORY_TYPES[resource_type]:
            if field == "id":
                refs.append(version.get("id"))
            else:
                ref = (version.get(field) or {}).get("reference", "")
                refs.append(ref.split("/", 1)[1] if ref.startswith("Organization/") else None)
        owners = [r for r in refs if r]
        if resource_type == "Organization" and version.get("id") == ctx.organization:
            owners = [ctx.organization]  # its own record, but it may not move itself elsewhere
            parent = (version.get("partOf") or {}).get("reference")
            if existing is not None and parent != (existing.get("partOf") or {}).get("reference"):
                raise TelemedError(Category.FORBIDDEN, "An institution administrator cannot move the institution")
        if resource_type != "Practitioner" and not any(in_subtree(repo, o, ctx.organization) for o in owners):
            raise TelemedError(Category.FORBIDDEN, f"{resource_type} outside institution {ctx.organization}'s subtree")


class AccessGrants:
    """Repository write hooks that keep ``access_grant`` in step with the resources that imply it."""

    def __init__(self, follow_up: timedelta = FOLLOW_UP):
        self.follow_up = follow_up

    def after_write(self, repo, stored) -> None:
        r = stored.resource
        if r["resourceType"] == "Patient":
            self._replace(repo, f"Patient/{r['id']}", r["id"], self._managing(r), None)
        elif r["resourceType"] == "ServiceRequest":
            self._service_request(repo, r, stored.last_updated)

    def after_delete(self, repo, resource_type: str, id_: str) -> None:
        if resource_type in ("Patient", "ServiceRequest"):
            repo.conn.execute(delete(t_grant).where(t_grant.c.source == f"{resource_type}/{id_}"))

    @staticmethod
    def _managing(patient: dict) -> list[tuple[str, str]]:
        ref = (patient.get("managingOrganization") or {}).get("reference", "")
        return [("organization", ref.split("/", 1)[1])] if ref.startswith("Organization/") else []

    def _service_request(self, repo, sr: dict, now: datetime) -> None:
        subject = (sr.get("subject") or {}).get("reference", "")
        if not subject.startswith("Patient/"):
            return
        grantees = []
        for perf in sr.get("performer", []):
            kind, _, pid = (perf.get("reference") or "").partition("/")
            if kind == "Practitioner":
                grantees.append(("practitioner", pid))
            elif kind == "Organization":
                grantees.append(("organization", pid))
            elif kind == "PractitionerRole":
                row = repo._current("PractitionerRole", pid)
                practitioner = ((row.content or {}).get("practitioner") or {}).get("reference", "") if row else ""
                if practitioner.startswith("Practitioner/"):
                    grantees.append(("practitioner", practitioner.split("/", 1)[1]))
        status = sr.get("status")
        if status in OPEN_REQUEST:
            until = None
        elif status == "entered-in-error":
            until = now
        else:  # completed / revoked: follow-up questions remain possible for a while
            until = now + self.follow_up
        self._replace(repo, f"ServiceRequest/{sr['id']}", subject.split("/", 1)[1], grantees, until)

    @staticmethod
    def _replace(repo, source: str, patient_id: str, grantees: list[tuple[str, str]], until) -> None:
        repo.conn.execute(delete(t_grant).where(t_grant.c.source == source))
        if grantees:
            repo.conn.execute(
                insert(t_grant),
                [
                    {
                        "patient_id": patient_id,
                        "grantee_kind": k,
                        "grantee_id": g,
                        "source": source,
                        "valid_until": until,
                    }
                    for k, g in grantees
                ],
            )
