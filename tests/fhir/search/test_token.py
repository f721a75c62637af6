"""token parameters (R4 §3.1.1.4.9): ``code``, ``system|code``, ``|code``, ``system|``, and the
modifiers ``:not``, ``:text``, ``:missing`` and ``:of-type``; booleans, ``_tag`` and ``_security``."""

from __future__ import annotations

import pytest

from tests.fhir.search.helpers import LOINC, SNOMED, TAG_SYSTEM, Scenario

ACME = "http://acme.example.org/codes"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MRN = "http://hospital.example.org/mrn"
VITALS = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}


def observation(*codings: dict, text: str | None = None, **extra) -> dict:
    code: dict = {"coding": list(codings)}
    if text:
        code["text"] = text
    return {"resourceType": "Observation", "status": "final", "code": code, **extra}


def coding(system: str | None, code: str, display: str | None = None) -> dict:
    c = {"code": code}
    if system:
        c["system"] = system
    if display:
        c["display"] = display
    return c


@pytest.fixture
def codes(client) -> Scenario:
    s = Scenario(client)
    s.add(
        "loinc", observation(coding(LOINC, "8480-6", "Systolic blood pressure"), text="Systolic BP", category=[VITALS])
    )
    s.add("snomed", observation(coding(SNOMED, "271649006", "Systolic blood pressure")))
    s.add("no-system", observation(coding(None, "8480-6")))
    s.add("acme", observation(coding(ACME, "8480-6")))
    s.add("diastolic", observation(coding(LOINC, "8462-4", "Diastolic blood pressure")))
    s.add("both", observation(coding(LOINC, "8480-6"), coding(SNOMED, "271649006")))
    s.add("mixed-case", observation(coding(ACME, "Ab1")))
    return s


def test_code_alone_matches_any_system(codes):
    assert codes.find("Observation", {"code": "8480-6"}) == {"loinc", "no-system", "acme", "both"}


def test_system_and_code(codes):
    assert codes.find("Observation", {"code": f"{LOINC}|8480-6"}) == {"loinc", "both"}
    assert codes.find("Observation", {"code": f"{SNOMED}|271649006"}) == {"snomed", "both"}
    assert codes.find("Observation", {"code": f"{SNOMED}|8480-6"}) == set()


def test_bar_code_means_no_system(codes):
    assert codes.find("Observation", {"code": "|8480-6"}) == {"no-system"}


def test_system_bar_means_any_code_of_that_system(codes):
    assert codes.find("Observation", {"code": f"{LOINC}|"}) == {"loinc", "diastolic", "both"}
    assert codes.find("Observation", {"code": f"{ACME}|"}) == {"acme", "mixed-case"}


def test_codes_are_case_sensitive(codes):
    assert codes.find("Observation", {"code": f"{ACME}|Ab1"}) == {"mixed-case"}
    assert codes.find("Observation", {"code": f"{ACME}|ab1"}) == set()


def test_comma_is_or(codes):
    assert codes.find("Observation", {"code": f"{LOINC}|8462-4,{SNOMED}|271649006"}) == {"diastolic", "snomed", "both"}


def test_not_excludes_resources_with_any_matching_coding(codes):
    everything = set(codes.by_label)
    assert codes.find("Observation", {"code:not": "8480-6"}) == {"snomed", "diastolic", "mixed-case"}
    assert codes.find("Observation", {"code:not": f"{LOINC}|8480-6"}) == everything - {"loinc", "both"}


def test_not_includes_resources_without_a_value(codes):
    """R4: ``gender:not=male`` includes patients that have no gender at all."""
    everything = set(codes.by_label)
    assert codes.find("Observation", {"category:not": "vital-signs"}) == everything - {"loinc"}


def test_text_searches_codeable_concept_text_and_coding_display(codes):
    assert codes.find("Observation", {"code:text": "systolic bp"}) == {"loinc"}  # CodeableConcept.text
    assert codes.find("Observation", {"code:text": "DIASTOLIC"}) == {"diastolic"}  # Coding.display
    # "either CodeableConcept.text, Coding.display, or Identifier.type.text": loinc's display matches
    # even though its CodeableConcept also has a text.
    assert codes.find("Observation", {"code:text": "systolic blood"}) == {"loinc", "snomed"}


def test_missing(codes):
    everything = set(codes.by_label)
    assert codes.find("Observation", {"category:missing": "false"}) == {"loinc"}
    assert codes.find("Observation", {"category:missing": "true"}) == everything - {"loinc"}


@pytest.fixture
def identifiers(client) -> Scenario:
    s = Scenario(client)
    mr = {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical record number"}
    s.add("mrn", {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "12345", "type": mr}]})
    s.add(
        "other", {"resourceType": "Patient", "identifier": [{"system": "http://other.example.org", "value": "12345"}]}
    )
    s.add("bare", {"resourceType": "Patient", "identifier": [{"value": "12345"}]})
    s.add("different", {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "99999"}]})
    return s


def test_identifier_forms(identifiers):
    assert identifiers.find("Patient", {"identifier": "12345"}) == {"mrn", "other", "bare"}
    assert identifiers.find("Patient", {"identifier": f"{MRN}|12345"}) == {"mrn"}
    assert identifiers.find("Patient", {"identifier": "|12345"}) == {"bare"}
    assert identifiers.find("Patient", {"identifier": f"{MRN}|"}) == {"mrn", "different"}


def test_identifier_of_type(identifiers):
    assert identifiers.find("Patient", {"identifier:of-type": f"{V2_0203}|MR|12345"}) == {"mrn"}
    assert identifiers.find("Patient", {"identifier:of-type": f"{V2_0203}|MR|99999"}) == set()
    assert identifiers.find("Patient", {"identifier:of-type": f"{V2_0203}|DL|12345"}) == set()


def test_identifier_text_searches_type_text(identifiers):
    assert identifiers.find("Patient", {"identifier:text": "medical record"}) == {"mrn"}


def test_boolean_tokens(client):
    s = Scenario(client)
    s.add("active", {"resourceType": "Patient", "active": True})
    s.add("inactive", {"resourceType": "Patient", "active": False})
    s.add("unknown", {"resourceType": "Patient"})
    assert s.find("Patient", {"active": "true"}) == {"active"}
    assert s.find("Patient", {"active": "false"}) == {"inactive"}
    assert s.find("Patient", {"active:not": "true"}) == {"inactive", "unknown"}
    assert s.find("Patient", {"active:missing": "true"}) == {"unknown"}


def test_gender_not_includes_patients_without_gender(client):
    s = Scenario(client)
    s.add("male", {"resourceType": "Patient", "gender": "male"})
    s.add("female", {"resourceType": "Patient", "gender": "female"})
    s.add("none", {"resourceType": "Patient"})
    assert s.find("Patient", {"gender": "male"}) == {"male"}
    assert s.find("Patient", {"gender:not": "male"}) == {"female", "none"}


def test_contact_points(client):
    s = Scenario(client)
    telecom = [{"system": "phone", "value": "+1-555-0100", "use": "home"}, {"system": "email", "value": "a@b.example"}]
    s.add("p", {"resourceType": "Patient", "telecom": telecom})
    assert s.find("Patient", {"phone": "+1-555-0100"}) == {"p"}
    assert s.find("Patient", {"email": "a@b.example"}) == {"p"}
    assert s.find("Patient", {"phone": "a@b.example"}) == set()  # an email is not a phone
    assert s.find("Patient", {"telecom": "a@b.example"}) == {"p"}


def test_tag_and_security(client):
    s = Scenario(client)
    confidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    vip = {"system": "http://example.org/tags", "code": "vip"}
    s.add(
        "vip",
        {"resourceType": "Patient", "meta": {"tag": [vip], "security": [{"system": confidentiality, "code": "R"}]}},
    )
    s.add("plain", {"resourceType": "Patient", "meta": {"security": [{"system": confidentiality, "code": "N"}]}})
    assert s.find("Patient", {"_tag": "http://example.org/tags|vip"}) == {"vip"}
    assert s.find("Patient", {"_tag": "vip"}) == {"vip"}
    assert s.find("Patient", {"_tag:not": "http://example.org/tags|vip"}) == {"plain"}
    assert s.find("Patient", {"_security": f"{confidentiality}|R"}) == {"vip"}
    assert s.find("Patient", {"_security": f"{confidentiality}|N"}) == {"plain"}
    assert s.find("Patient", {"_security": f"{confidentiality}|V"}) == set()
    # the test's own tag, searched on its own (no other scoping)
    assert s.find("Patient", {"_tag": f"{TAG_SYSTEM}|{s.tag}"}, scoped=False) == {"vip", "plain"}


def test_escaped_bar_is_part_of_the_value(client):
    """R4 "Escaping Search Parameters": ``\\|`` is a literal ``|``, not the system separator."""
    s = Scenario(client)
    s.add("piped", {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "A|B"}]})
    assert s.find("Patient", {"identifier": f"{MRN}|A\\|B"}) == {"piped"}
    assert s.find("Patient", {"identifier": "A\\|B"}) == {"piped"}
    assert s.find("Patient", {"identifier": f"{MRN}|A"}) == set()


def test_id(client):
    s = Scenario(client)
    s.add("a", {"resourceType": "Patient"})
    s.add("b", {"resourceType": "Patient"})
    s.add("c", {"resourceType": "Patient"})
    assert s.find("Patient", {"_id": s.id("a")}) == {"a"}
    assert s.find("Patient", {"_id": f"{s.id('a')},{s.id('c')}"}) == {"a", "c"}
    assert s.find("Patient", {"_id": "no-such-id"}) == set()
