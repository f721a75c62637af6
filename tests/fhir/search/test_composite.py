"""composite parameters (R4 §3.1.1.4.8): ``code$value`` pairs that must match the *same* element,
e.g. one Observation.component's code and that same component's value."""

from __future__ import annotations

import pytest

from tests.fhir.search.helpers import LOINC, SNOMED, UCUM, Scenario, search_error

SYSTOLIC, DIASTOLIC, BP_PANEL = "8480-6", "8462-4", "85354-9"


def mmhg(value: float) -> dict:
    return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


def loinc(code: str) -> dict:
    return {"coding": [{"system": LOINC, "code": code}]}


def single(code: str, value: float) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": loinc(code), "valueQuantity": mmhg(value)}


def panel(systolic: float, diastolic: float) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": loinc(BP_PANEL),
        "component": [
            {"code": loinc(SYSTOLIC), "valueQuantity": mmhg(systolic)},
            {"code": loinc(DIASTOLIC), "valueQuantity": mmhg(diastolic)},
        ],
    }


@pytest.fixture
def pressures(client) -> Scenario:
    s = Scenario(client)
    s.add("systolic 150", single(SYSTOLIC, 150))
    s.add("systolic 130", single(SYSTOLIC, 130))
    s.add("diastolic 150", single(DIASTOLIC, 150))
    s.add("panel 150/90", panel(150, 90))
    s.add("panel 120/150", panel(120, 150))  # a high value, but on the diastolic component
    return s


def test_code_value_quantity(pressures):
    def find(value):
        return pressures.find("Observation", {"code-value-quantity": value})

    assert find(f"{LOINC}|{SYSTOLIC}$gt140") == {"systolic 150"}
    assert find(f"{LOINC}|{SYSTOLIC}$lt140") == {"systolic 130"}
    assert find(f"{SYSTOLIC}$150") == {"systolic 150"}
    assert find(f"{LOINC}|{DIASTOLIC}$gt140") == {"diastolic 150"}
    assert find(f"{LOINC}|{SYSTOLIC}$150|{UCUM}|mm[Hg]") == {"systolic 150"}
    assert find(f"{LOINC}|{SYSTOLIC}$150|{UCUM}|mg") == set()
    assert find(f"{LOINC}|{SYSTOLIC}$gt200") == set()


def test_component_code_and_value_come_from_the_same_component(pressures):
    def find(*values):
        return pressures.find("Observation", [("component-code-value-quantity", v) for v in values])

    assert find(f"{LOINC}|{SYSTOLIC}$gt140") == {"panel 150/90"}
    assert find(f"{LOINC}|{DIASTOLIC}$gt140") == {"panel 120/150"}
    assert find(f"{LOINC}|{DIASTOLIC}$lt100") == {"panel 150/90"}
    assert find(f"{LOINC}|{SYSTOLIC}$lt100") == set()  # 90 is the diastolic value, not the systolic


def test_component_or_and_and(pressures):
    either = f"{LOINC}|{SYSTOLIC}$gt140,{LOINC}|{DIASTOLIC}$gt140"
    assert pressures.find("Observation", {"component-code-value-quantity": either}) == {"panel 150/90", "panel 120/150"}
    both = [
        ("component-code-value-quantity", f"{LOINC}|{SYSTOLIC}$gt140"),
        ("component-code-value-quantity", f"{LOINC}|{DIASTOLIC}$lt100"),
    ]
    assert pressures.find("Observation", both) == {"panel 150/90"}
    neither = [
        ("component-code-value-quantity", f"{LOINC}|{SYSTOLIC}$gt140"),
        ("component-code-value-quantity", f"{LOINC}|{DIASTOLIC}$gt140"),
    ]
    assert pressures.find("Observation", neither) == set()


def test_combo_covers_the_observation_and_its_components(pressures):
    found = pressures.find("Observation", {"combo-code-value-quantity": f"{LOINC}|{SYSTOLIC}$gt140"})
    assert found == {"systolic 150", "panel 150/90"}


def test_code_value_concept(client):
    s = Scenario(client)
    blood_a = {"coding": [{"system": SNOMED, "code": "112144000"}]}
    s.add(
        "A", {"resourceType": "Observation", "status": "final", "code": loinc("883-9"), "valueCodeableConcept": blood_a}
    )
    assert s.find("Observation", {"code-value-concept": f"{LOINC}|883-9${SNOMED}|112144000"}) == {"A"}
    assert s.find("Observation", {"code-value-concept": "883-9$112144000"}) == {"A"}
    assert s.find("Observation", {"code-value-concept": f"{LOINC}|883-9${SNOMED}|112149005"}) == set()


def test_composite_without_dollar_is_400(client):
    search_error(client, "/Observation", {"code-value-quantity": f"{LOINC}|{SYSTOLIC}"})
