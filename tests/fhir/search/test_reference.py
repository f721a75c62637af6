"""reference parameters (R4 §3.1.1.4.10), chaining (§3.1.1.5.5) and reverse chaining ``_has``
(§3.1.1.5.6). "A relative reference resolving to the same value as a specified absolute URL, or
vice versa, qualifies as a match": with the server's own base, ``Patient/1`` and
``[base]/Patient/1`` are the same reference."""

from __future__ import annotations

import httpx
import pytest

from tests.fhir.search.helpers import Scenario

MRN = "http://hospital.example.org/mrn"


def base(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def observation(code: str = "obs", **extra) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://example.org/codes", "code": code}]},
        **extra,
    }


def ref(reference: str) -> dict:
    return {"reference": reference}


@pytest.fixture
def world(client) -> Scenario:
    """Two patients with a practitioner and an organisation, and observations pointing at them."""
    s = Scenario(client)
    s.add("house", {"resourceType": "Practitioner", "name": [{"family": "House", "given": ["Gregory"]}]})
    s.add("wilson", {"resourceType": "Practitioner", "name": [{"family": "Wilson"}]})
    s.add("ppth", {"resourceType": "Organization", "name": "Princeton Plainsboro"})
    s.add(
        "P",
        {
            "resourceType": "Patient",
            "name": [{"family": "Refsnes", "given": ["Ola"]}],
            "generalPractitioner": [ref(s.ref("house"))],
            "managingOrganization": ref(s.ref("ppth")),
        },
    )
    s.add(
        "P2", {"resourceType": "Patient", "name": [{"family": "Other"}], "generalPractitioner": [ref(s.ref("wilson"))]}
    )
    s.add("G", {"resourceType": "Group", "type": "person", "actual": True, "name": "Refsnes family"})
    s.add("obs-P", observation("c-p", subject=ref(s.ref("P"))))
    s.add("obs-P2", observation("c-p2", subject=ref(s.ref("P2"))))
    s.add("obs-G", observation("c-g", subject=ref(s.ref("G"))))
    s.add("obs-logical", observation(subject={"identifier": {"system": MRN, "value": "A-1"}}))
    s.add("obs-none", observation())
    return s


def test_type_and_id(world):
    P = world.id("P")
    assert world.find("Observation", {"subject": f"Patient/{P}"}) == {"obs-P"}
    assert world.find("Observation", {"subject": f"Group/{world.id('G')}"}) == {"obs-G"}
    assert world.find("Observation", {"subject": f"Group/{P}"}) == set()


def test_bare_id_and_type_modifier(world):
    P = world.id("P")
    assert world.find("Observation", {"subject": P}) == {"obs-P"}
    assert world.find("Observation", {"subject:Patient": P}) == {"obs-P"}
    assert world.find("Observation", {"subject:Group": world.id("G")}) == {"obs-G"}
    assert world.find("Observation", {"patient": P}) == {"obs-P"}


def test_or(world):
    value = f"Patient/{world.id('P')},Patient/{world.id('P2')}"
    assert world.find("Observation", {"subject": value}) == {"obs-P", "obs-P2"}


def test_search_by_absolute_url_with_the_servers_own_base_matches_relative_references(client, world):
    url = f"{base(client)}/Patient/{world.id('P')}"
    assert world.find("Observation", {"subject": url}) == {"obs-P"}


def test_stored_absolute_reference_with_the_servers_own_base_is_a_local_reference(client, world):
    world.add("obs-P-absolute", observation("c-abs", subject=ref(f"{base(client)}/{world.ref('P')}")))
    both = {"obs-P", "obs-P-absolute"}
    assert world.find("Observation", {"subject": world.ref("P")}) == both
    assert world.find("Observation", {"subject": f"{base(client)}/{world.ref('P')}"}) == both
    assert world.find("Observation", {"subject:Patient.name": "refsnes"}) == both
    assert world.find("Patient", {"_has:Observation:subject:code": "c-abs"}) == {"P"}


def test_absolute_url_of_another_server_does_not_match(world):
    url = f"http://elsewhere.example.org/fhir/Patient/{world.id('P')}"
    assert world.find("Observation", {"subject": url}) == set()


def test_missing(world):
    # obs-logical has a subject with only an identifier: either answer is defensible.
    assert world.find("Observation", {"subject:missing": "true"}) - {"obs-logical"} == {"obs-none"}
    assert world.find("Observation", {"subject:missing": "false"}) - {"obs-logical"} == {"obs-P", "obs-P2", "obs-G"}


def test_identifier_modifier_searches_reference_identifier(world):
    assert world.find("Observation", {"subject:identifier": f"{MRN}|A-1"}) == {"obs-logical"}
    assert world.find("Observation", {"subject:identifier": "A-1"}) == {"obs-logical"}
    assert world.find("Observation", {"subject:identifier": f"{MRN}|B-2"}) == set()


def test_chained(world):
    assert world.find("Observation", {"subject.name": "refsnes"}) == {"obs-P"}  # Group has no name parameter
    assert world.find("Observation", {"subject:Patient.name": "refsnes"}) == {"obs-P"}
    assert world.find("Observation", {"subject:Patient.family": "other"}) == {"obs-P2"}
    assert world.find("Observation", {"subject:Patient.name": "nobody"}) == set()
    assert world.find("Observation", {"patient.given": "ola"}) == {"obs-P"}


def test_chained_to_a_deleted_resource_does_not_match(client, world):
    gone = world.add("gone", {"resourceType": "Patient", "name": [{"family": "Vanished"}]})
    world.add("obs-gone", observation(subject=ref(world.ref("gone"))))
    assert world.find("Observation", {"subject:Patient.name": "vanished"}) == {"obs-gone"}
    assert client.delete(f"/Patient/{gone['id']}").status_code in (200, 204)
    assert world.find("Observation", {"subject:Patient.name": "vanished"}) == set()


def test_multi_level_chains(world):
    assert world.find("Observation", {"subject:Patient.general-practitioner.name": "house"}) == {"obs-P"}
    assert world.find("Observation", {"subject:Patient.general-practitioner:Practitioner.family": "wilson"}) == {
        "obs-P2"
    }
    assert world.find("Observation", {"patient.organization.name": "princeton"}) == {"obs-P"}
    assert world.find("Observation", {"patient.organization.name": "mercy"}) == set()


def test_has(world):
    assert world.find("Patient", {"_has:Observation:patient:code": "c-p"}) == {"P"}
    assert world.find("Patient", {"_has:Observation:subject:code": "c-p2"}) == {"P2"}
    assert world.find("Patient", {"_has:Observation:subject:code": "c-p,c-p2"}) == {"P", "P2"}
    assert world.find("Patient", {"_has:Observation:subject:code": "c-g"}) == set()
    assert world.find("Group", {"_has:Observation:subject:code": "c-g"}) == {"G"}


def test_nested_has(world):
    """Patients with an Encounter that an Observation coded ``c-enc`` points at: the encounter is
    P2's even though the observation's subject is P."""
    world.add(
        "enc",
        {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": ref(world.ref("P2"))},
    )
    world.add("obs-enc", observation("c-enc", subject=ref(world.ref("P")), encounter=ref(world.ref("enc"))))
    nested = "_has:Encounter:patient:_has:Observation:encounter:code"
    assert world.find("Patient", {nested: "c-enc"}) == {"P2"}
    assert world.find("Patient", {nested: "c-p"}) == set()


def test_has_and_chain_combined(world):
    params = [("_has:Observation:subject:code", "c-p,c-p2"), ("general-practitioner.name", "house")]
    assert world.find("Patient", params) == {"P"}


def test_has_ignores_deleted_referrers(client, world):
    gone = world.add("obs-deleted", observation("c-deleted", subject=ref(world.ref("P2"))))
    assert world.find("Patient", {"_has:Observation:subject:code": "c-deleted"}) == {"P2"}
    assert client.delete(f"/Observation/{gone['id']}").status_code in (200, 204)
    assert world.find("Patient", {"_has:Observation:subject:code": "c-deleted"}) == set()
