"""The demo network loader: tiers, staff, patients, the admin account, idempotency, determinism."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from sqlalchemy import func, select

from telemed.app import Services
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.db.schema import resource as t_resource
from telemed.db.schema import resource_history as t_history
from telemed.demo.loader import database_is_empty, load_demo
from telemed.demo.network import MRN_SYSTEM, TIER_SYSTEM, TITLE_SYSTEM, build_network, resident_id
from telemed.fhir.search.query import parse
from telemed.fhir.store import searching
from telemed.fhir.store.context import AccessContext
from telemed.identity import get_account
from telemed.settings import Settings

HL7 = "http://terminology.hl7.org/CodeSystem"
EXPECTED = {
    "Organization": 14,  # 13 institutions and the province's telemedicine centre
    "Location": 16,
    "HealthcareService": 10,  # 4 at the province, 3 at each city
    "Endpoint": 1,  # DEMO_MODALITY, a DICOM modality of 平川县人民医院
    "Practitioner": 40,
    "PractitionerRole": 40,
    "Patient": 30,
    "Condition": 20,
    "Observation": 40,
    "account": 45,  # 40 practitioners + admin, qc, triage, auditor, supervisor
    "consultation": 16,
    "ecg": 4,  # remote ECGs sent by township clinics (telemed.demo.ecg)
    "pathology": 2,  # telemed.demo.pathology
    "reading": 3,  # remote imaging readings (telemed.demo.reading)
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    settings = Settings(
        database_url=f"sqlite:///{tmp}/t.db", blob_url=f"file:{tmp}/blobs", var_dir=tmp, secret_key="x" * 40
    )
    services = Services.from_settings(settings)
    upgrade(services.engine)
    empty_before = database_is_empty(services)
    counts = load_demo(services)
    yield services, counts, empty_before
    services.engine.dispose()


def _all(services: Services, resource_type: str) -> list[dict]:
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, AccessContext.system())
        result = searching.search(repo, parse(resource_type, [("_count", "1000")]), "")
    assert result.total == len(result.matches)
    return [s.resource for s in result.matches]


def _tier(org: dict) -> str:
    return next((c["code"] for t in org["type"] for c in t["coding"] if c["system"] == TIER_SYSTEM), None)


def _versions(services: Services) -> tuple[dict, int]:
    with unit_of_work(services.engine, write=False) as conn:
        rows = conn.execute(select(t_resource.c.resource_type, t_resource.c.id, t_resource.c.version_id)).all()
        history = conn.execute(select(func.count()).select_from(t_history)).scalar_one()
    return {(r.resource_type, r.id): r.version_id for r in rows}, history


def test_first_load_creates_the_network(demo):
    services, counts, empty_before = demo
    assert empty_before is True
    assert counts == EXPECTED
    assert database_is_empty(services) is False


def test_organizations_form_four_tiers(demo):
    services, _, _ = demo
    everything = {o["id"]: o for o in _all(services, "Organization")}
    orgs = {oid: o for oid, o in everything.items() if _tier(o)}  # institutions; the rest are departments
    assert len(orgs) == 13
    (centre,) = [o for o in everything.values() if not _tier(o)]
    assert centre["partOf"]["reference"] == "Organization/org-province" and centre["name"] == "岚江省远程医学中心"
    parent = {
        oid: o.get("partOf", {}).get("reference", "").removeprefix("Organization/") or None for oid, o in orgs.items()
    }
    tiers = {oid: _tier(o) for oid, o in orgs.items()}
    assert Counter(tiers.values()) == {"province": 1, "city": 2, "county": 4, "township": 6}
    above = {"province": None, "city": "province", "county": "city", "township": "county"}
    for oid, tier in tiers.items():
        if above[tier] is None:
            assert parent[oid] is None
        else:
            assert tiers[parent[oid]] == above[tier], oid
    for o in orgs.values():
        assert any(c["code"] == "prov" for t in o["type"] for c in t["coding"])
        assert o["address"][0]["state"] == "岚江省"
    locations = _all(services, "Location")
    managed = {loc["managingOrganization"]["reference"].removeprefix("Organization/") for loc in locations}
    assert managed >= set(orgs)


def test_practitioners_and_roles(demo):
    services, _, _ = demo
    practitioners = {p["id"]: p for p in _all(services, "Practitioner")}
    # (the ECG readers' duty roles at the province's reading pool are telemed.demo.ecg's)
    # (and the pathologists' and radiologists' duty roles at the centre are telemed.demo.pathology's and .reading's)
    roles = [r for r in _all(services, "PractitionerRole")
             if not r["id"].startswith(("ecg-duty-", "path-duty-", "rad-duty-"))]
    tiers = {o["id"]: _tier(o) for o in _all(services, "Organization")}
    assert 35 <= len(practitioners) <= 45
    assert len(roles) == len(practitioners)
    titles: dict[str, Counter] = {t: Counter() for t in ("province", "city", "county", "township")}
    for role in roles:
        prac = practitioners[role["practitioner"]["reference"].removeprefix("Practitioner/")]
        name = prac["name"][0]
        assert name["text"] == name["family"] + "".join(name["given"])
        assert all("\u4e00" <= ch <= "\u9fff" for ch in name["text"])
        assert role["code"][0]["coding"][0]["system"] == f"{HL7}/practitioner-role"
        assert role["code"][0]["coding"][0]["code"] == "doctor"
        tier = tiers[role["organization"]["reference"].removeprefix("Organization/")]
        (title,) = [c["code"] for c in prac["qualification"][0]["code"]["coding"] if c["system"] == TITLE_SYSTEM]
        titles[tier][title] += 1
        if tier == "township":
            assert role["specialty"][0]["coding"][0]["code"] == "394814009"  # general practice
    senior = ("chief-physician", "associate-chief-physician")
    assert sum(titles["province"][t] for t in senior) > titles["province"].total() / 2
    assert sum(titles["township"][t] for t in senior) == 0
    assert titles["township"]["resident-physician"] > 0


def test_patients(demo):
    services, _, _ = demo
    patients = _all(services, "Patient")
    orgs = {o["id"]: o for o in _all(services, "Organization")}
    assert len(patients) == 30
    id_numbers = set()
    for p in patients:
        (rid,) = [i["value"] for i in p["identifier"] if i["system"] == "urn:oid:2.16.156.10011.1.1"]
        birth = date.fromisoformat(p["birthDate"])
        assert rid == resident_id(rid[:6], birth, int(rid[14:17]))  # birth date and check digit agree
        assert (int(rid[16]) % 2 == 1) == (p["gender"] == "male")
        id_numbers.add(rid)
        org = p["managingOrganization"]["reference"].removeprefix("Organization/")
        assert _tier(orgs[org]) in ("county", "township")
        mrn_system = f"{MRN_SYSTEM}/{orgs[org]['identifier'][0]['value']}"  # the managing institution's numbers
        assert [i["system"] for i in p["identifier"]].count(mrn_system) == 1
        assert p["name"][0]["family"] and p["name"][0]["given"]
    assert len(id_numbers) == 30


def test_clinical_records(demo):
    services, _, _ = demo
    conditions = _all(services, "Condition")
    observations = [o for o in _all(services, "Observation") if not o["id"].startswith("demo-ecg-")]  # not ECGs
    assert 15 <= len(conditions) <= 25
    assert 35 <= len(observations) <= 45
    for c in conditions:
        assert c["clinicalStatus"]["coding"][0]["system"] == f"{HL7}/condition-clinical"
        assert c["clinicalStatus"]["coding"][0]["code"] == "active"
        assert c["verificationStatus"]["coding"][0]["system"] == f"{HL7}/condition-ver-status"
        assert c["verificationStatus"]["coding"][0]["code"] == "confirmed"
    for o in observations:
        assert o["status"] == "final"
        assert o["effectiveDateTime"].endswith("+08:00")
        assert o["category"][0]["coding"][0]["code"] in ("vital-signs", "laboratory")
    bp = [o for o in observations if o["code"]["coding"][0]["code"] == "85354-9"]
    assert bp and all(
        [c["code"]["coding"][0]["code"] for c in o["component"]] == ["8480-6", "8462-4"]
        and all(c["valueQuantity"]["code"] == "mm[Hg]" for c in o["component"])
        for o in bp
    )


def test_admin_account(demo):
    services, _, _ = demo
    with unit_of_work(services.engine, write=False) as conn:
        admin = get_account(conn, "admin")
    assert admin is not None
    assert admin.display_name == "平台管理员"
    assert list(admin.roles) == ["platform-admin"]


def test_second_load_creates_nothing_and_keeps_versions(demo):
    services, _, _ = demo
    before = _versions(services)
    counts = load_demo(services)
    assert set(counts) == set(EXPECTED)
    assert all(n == 0 for n in counts.values()), counts
    assert _versions(services) == before
    # (the province hospital is written again once by each domain loader that makes it a centre:
    # telemed.demo.pathology and telemed.demo.reading add their Organization.type)
    network = {k: v for k, v in before[0].items() if k[0] in EXPECTED and k != ("Organization", "org-province")}
    assert set(network.values()) == {1}  # the network is written once; consultations move through versions


def test_network_is_deterministic():
    assert build_network() == build_network()
