"""number (R4 §3.1.1.4.2), quantity (§3.1.1.4.6) and uri (§3.1.1.4.13) parameters.

A number without a prefix is a range set by its precision: ``50`` is [49.5, 50.5), ``50.0`` is
[49.95, 50.05). With ``gt lt ge le`` the implicit precision is ignored ("greater than exactly 50").
"""

from __future__ import annotations

import pytest

from tests.conftest import unique
from tests.fhir.search.helpers import UCUM, Scenario

PROBABILITIES = {
    "0.25": 0.25,
    "0.3": 0.3,
    "0.35": 0.35,
    "49.4": 49.4,
    "49.5": 49.5,
    "49.96": 49.96,
    "50": 50,
    "50.04": 50.04,
    "50.4": 50.4,
    "50.5": 50.5,
}
FIFTIES = {"49.4", "49.5", "49.96", "50", "50.04", "50.4", "50.5"}


@pytest.fixture
def risks(client) -> Scenario:
    s = Scenario(client)
    subject = s.add("patient", {"resourceType": "Patient"})
    for label, p in PROBABILITIES.items():
        s.add(
            label,
            {
                "resourceType": "RiskAssessment",
                "status": "final",
                "subject": {"reference": f"Patient/{subject['id']}"},
                "prediction": [{"probabilityDecimal": p}],
            },
        )
    return s


def probability(s: Scenario, value: str) -> set[str]:
    return s.find("RiskAssessment", {"probability": value})


def test_number_precision_sets_the_range(risks):
    assert probability(risks, "50") == {"49.5", "49.96", "50", "50.04", "50.4"}
    assert probability(risks, "50.0") == {"49.96", "50", "50.04"}
    assert probability(risks, "50.00") == {"50"}
    assert probability(risks, "0.3") == {"0.25", "0.3"}
    assert probability(risks, "0.30") == {"0.3"}
    assert probability(risks, "5e1") == FIFTIES  # one significant figure: wide either way
    assert probability(risks, "eq50.0") == {"49.96", "50", "50.04"}


def test_number_comparisons_are_exact(risks):
    assert probability(risks, "gt50") == {"50.04", "50.4", "50.5"}
    assert probability(risks, "ge50") == {"50", "50.04", "50.4", "50.5"}
    assert probability(risks, "lt50") == {"0.25", "0.3", "0.35", "49.4", "49.5", "49.96"}
    assert probability(risks, "le0.3") == {"0.25", "0.3"}
    assert probability(risks, "gt8e-1") == FIFTIES  # exponential form, as in the spec's example


def test_number_ne_and_ap(risks):
    assert probability(risks, "ne50") == {"0.25", "0.3", "0.35", "49.4", "50.5"}
    near = probability(risks, "ap50")
    assert {"49.5", "50", "50.5"} <= near
    assert not near & {"0.25", "0.3", "0.35"}


def test_number_or(risks):
    assert probability(risks, "0.25,50.00") == {"0.25", "50"}


def quantity(value: float, unit: str | None = None, system: str | None = None, code: str | None = None) -> dict:
    q: dict = {"value": value}
    for key, v in (("unit", unit), ("system", system), ("code", code)):
        if v is not None:
            q[key] = v
    obs_code = {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}
    return {"resourceType": "Observation", "status": "final", "code": obs_code, "valueQuantity": q}


@pytest.fixture
def quantities(client) -> Scenario:
    s = Scenario(client)
    s.add("5.4 mg ucum", quantity(5.4, "mg", UCUM, "mg"))
    s.add("5.4 unit-only", quantity(5.4, "mg"))
    s.add("5.4 milligram", quantity(5.4, "milligram", UCUM, "mg"))
    s.add("5.4 g", quantity(5.4, "g", UCUM, "g"))
    s.add("5.35 mg", quantity(5.35, "mg", UCUM, "mg"))
    s.add("5.45 mg", quantity(5.45, "mg", UCUM, "mg"))
    s.add("6 mg", quantity(6, "mg", UCUM, "mg"))
    s.add("9 mg", quantity(9, "mg", UCUM, "mg"))
    return s


def value_quantity(s: Scenario, value: str) -> set[str]:
    return s.find("Observation", {"value-quantity": value})


def test_quantity_value_alone_ignores_units(quantities):
    assert value_quantity(quantities, "5.4") == {"5.4 mg ucum", "5.4 unit-only", "5.4 milligram", "5.4 g", "5.35 mg"}


def test_quantity_with_system_and_code(quantities):
    assert value_quantity(quantities, f"5.4|{UCUM}|mg") == {"5.4 mg ucum", "5.4 milligram", "5.35 mg"}
    assert value_quantity(quantities, f"5.4|{UCUM}|g") == {"5.4 g"}
    assert value_quantity(quantities, f"5.4|{UCUM}|") == {"5.4 mg ucum", "5.4 milligram", "5.4 g", "5.35 mg"}
    assert value_quantity(quantities, "5.4|http://other.example.org/units|mg") == set()


def test_quantity_without_system_matches_code_or_unit(quantities):
    """``5.4||mg``: "either the code (code) or the stated human unit (unit) are mg"."""
    assert value_quantity(quantities, "5.4||mg") == {"5.4 mg ucum", "5.4 unit-only", "5.4 milligram", "5.35 mg"}
    assert value_quantity(quantities, "5.4||milligram") == {"5.4 milligram"}


def test_quantity_prefixes(quantities):
    assert value_quantity(quantities, f"gt5.4|{UCUM}|mg") == {"5.45 mg", "6 mg", "9 mg"}
    assert value_quantity(quantities, f"le5.4|{UCUM}|mg") == {"5.4 mg ucum", "5.4 milligram", "5.35 mg"}
    assert value_quantity(quantities, "lt5.4||mg") == {"5.35 mg"}
    assert value_quantity(quantities, f"ge6|{UCUM}|mg") == {"6 mg", "9 mg"}
    assert value_quantity(quantities, f"ne5.4|{UCUM}|mg") == {"5.45 mg", "6 mg", "9 mg"}
    near = value_quantity(quantities, f"ap5.4|{UCUM}|mg")
    assert {"5.4 mg ucum", "5.4 milligram"} <= near and "9 mg" not in near


@pytest.fixture
def value_sets(client) -> tuple[Scenario, str]:
    """ValueSets under a host name of their own; returns the scenario and that host."""
    s = Scenario(client)
    host = f"http://{unique('vs')}.example.org"
    for label, url in {
        "123": f"{host}/fhir/ValueSet/123",
        "1234": f"{host}/fhir/ValueSet/1234",
        "root": f"{host}/fhir/",
        "other": f"{host}/other/ValueSet/9",
    }.items():
        s.add(label, {"resourceType": "ValueSet", "status": "active", "url": url})
    return s, host


def test_uri_exact(value_sets):
    s, host = value_sets
    assert s.find("ValueSet", {"url": f"{host}/fhir/ValueSet/123"}) == {"123"}
    assert s.find("ValueSet", {"url": f"{host}/fhir/ValueSet/12"}) == set()  # not a prefix match
    assert s.find("ValueSet", {"url": f"{host}/fhir/valueset/123"}) == set()  # URIs are case-sensitive
    assert s.find("ValueSet", {"url": f"{host}/fhir/ValueSet/123,{host}/other/ValueSet/9"}) == {"123", "other"}


def test_uri_below(value_sets):
    s, host = value_sets
    assert s.find("ValueSet", {"url:below": f"{host}/fhir/"}) == {"123", "1234", "root"}
    assert s.find("ValueSet", {"url:below": f"{host}/other/"}) == {"other"}


def test_uri_above(value_sets):
    s, host = value_sets
    assert s.find("ValueSet", {"url:above": f"{host}/fhir/ValueSet/123/_history/5"}) == {"123", "root"}
    assert s.find("ValueSet", {"url:above": f"{host}/other/ValueSet/9/x"}) == {"other"}


def test_profile_is_a_uri(client):
    s = Scenario(client)
    base = f"http://{unique('sd')}.example.org/StructureDefinition"
    s.add("a", {"resourceType": "Patient", "meta": {"profile": [f"{base}/patient-a"]}})
    s.add("b", {"resourceType": "Patient", "meta": {"profile": [f"{base}/patient-b", f"{base}/extra"]}})
    s.add("none", {"resourceType": "Patient"})
    assert s.find("Patient", {"_profile": f"{base}/patient-a"}) == {"a"}
    assert s.find("Patient", {"_profile": f"{base}/extra"}) == {"b"}
    assert s.find("Patient", {"_profile": f"{base}/patient"}) == set()
    assert s.find("Patient", {"_profile:below": f"{base}/"}) == {"a", "b"}
    assert s.find("Patient", {"_profile:missing": "true"}) == {"none"}
