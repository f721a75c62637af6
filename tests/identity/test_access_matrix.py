"""Role x institution access matrix (generated from the policy): every role at every relation to a
patient's institution tries read, search, _include, $everything and write; nothing unauthorized
succeeds and nothing authorized is refused. Printed with ``pytest -s``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import issue_token
from telemed.identity.policy import ROLES, clinical_mode
from tests.conftest import unique

RELATIONS = ["own", "sibling", "parent", "child", "expert-assigned", "expert-closed", "expert-withdrawn", "none"]


@dataclass
class World:
    patient: str
    observation: str
    orgs: dict[str, str]  # relation -> Organization id
    expert: str  # Practitioner assigned through an open ServiceRequest
    closed_expert: str  # assigned through a completed one (follow-up period)
    withdrawn_expert: str  # assigned through one entered in error


@pytest.fixture(scope="module")
def world(services) -> World:
    u = unique("acl")
    orgs = {rel: f"{u}-{rel}" for rel in ("parent", "own", "sibling", "child", "province")}
    tree = {"parent": "province", "own": "parent", "sibling": "parent", "child": "own"}
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        for rel, oid in orgs.items():
            org = {"resourceType": "Organization", "id": oid, "name": f"{rel} institution"}
            if rel in tree:
                org["partOf"] = {"reference": f"Organization/{orgs[tree[rel]]}"}
            repo.update("Organization", oid, org)
        experts = {}
        for name in ("expert", "closed", "withdrawn"):
            pid = f"{u}-{name}"
            repo.update("Practitioner", pid, {"resourceType": "Practitioner", "id": pid, "active": True})
            experts[name] = pid
    own_doctor = AccessContext(user=f"{u}-creator", organization=orgs["own"], clinical="scoped")
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, own_doctor)
        patient = repo.create(
            "Patient", {"resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{orgs['own']}"}}
        ).resource["id"]
        obs = repo.create(
            "Observation",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "BP"},
                "subject": {"reference": f"Patient/{patient}"},
            },
        ).resource["id"]
        for name, status in (("expert", "active"), ("closed", "completed"), ("withdrawn", "entered-in-error")):
            repo.create(
                "ServiceRequest",
                {
                    "resourceType": "ServiceRequest",
                    "status": status,
                    "intent": "order",
                    "subject": {"reference": f"Patient/{patient}"},
                    "performer": [{"reference": f"Practitioner/{experts[name]}"}],
                },
            )
    orgs["none"] = orgs["province"]
    return World(patient, obs, orgs, experts["expert"], experts["closed"], experts["withdrawn"])


def caller(services, world: World, role: str, relation: str) -> tuple[dict, AccessContext]:
    practitioner = {
        "expert-assigned": world.expert,
        "expert-closed": world.closed_expert,
        "expert-withdrawn": world.withdrawn_expert,
    }.get(relation)
    org = world.orgs["province"] if relation.startswith("expert") else world.orgs[relation]
    patient = world.patient if (role == "patient" and relation == "own") else None
    token = issue_token(
        services.token_keys, unique(role), ["user/*.*"], 600, services.clock.now(), [role],
        organization=None if role == "patient" else org, practitioner=practitioner, patient=patient,
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}, AccessContext(
        user=role, roles=frozenset({role}), clinical=clinical_mode([role])
    )


def expected_read(role: str, relation: str) -> bool:
    mode = ROLES[role].clinical
    if mode == "all":
        return True
    if mode == "self":
        return relation == "own"
    if mode == "none":
        return False
    return relation in ("own", "expert-assigned", "expert-closed")


def attempts(base: str, headers: dict, world: World) -> dict[str, bool]:
    """Each action -> whether the caller got the patient's data (or managed the write)."""
    p, o = world.patient, world.observation
    get = lambda path, **params: httpx.get(f"{base}/fhir/{path}", headers=headers, params=params, timeout=30)  # noqa: E731
    found = {}
    found["read Patient"] = get(f"Patient/{p}").status_code == 200
    found["read Observation"] = get(f"Observation/{o}").status_code == 200
    found["search"] = any(
        e["resource"]["id"] == o for e in get("Observation", subject=f"Patient/{p}").json().get("entry", [])
    )
    inc = get("Observation", _id=o, _include="Observation:subject").json().get("entry", [])
    found["_include"] = any(e["resource"]["id"] == p for e in inc)
    found["$everything"] = get(f"Patient/{p}/$everything").status_code == 200
    found["history"] = get(f"Observation/{o}/_history").status_code == 200
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{p}"},
    }
    found["write"] = httpx.post(f"{base}/fhir/Observation", json=obs, headers=headers, timeout=30).status_code == 201
    return found


def test_role_institution_matrix(server, services, world):
    cells = [(r, rel) for r in ROLES for rel in RELATIONS if r != "patient" or rel in ("own", "none")]

    def run(cell):
        role, relation = cell
        headers, _ = caller(services, world, role, relation)
        return role, relation, attempts(server.url, headers, world)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, cells))
    wrong, lines = [], []
    for role, relation, got in results:
        want = expected_read(role, relation)
        row = " ".join("Y" if v else "." for v in got.values())
        lines.append(f"{role:<20}{relation:<18}{row}   expected {'Y' if want else '.'}")
        wrong += [f"{role} / {relation} / {a}: got {ok}, expected {want}" for a, ok in got.items() if ok != want]
    print("\nrole                relation          R O S I E H W   (read Patient, read Observation, search,")
    print(" " * 38 + "_include, $everything, history, write)")
    print("\n".join(lines))
    assert wrong == []
