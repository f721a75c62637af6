"""The structural validator (no server): rules, expressions, and property-based round trips."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemed.fhir.validation import validator


def errors(resource) -> dict[str, str]:
    return {i.expression: i.message for i in validator().validate(resource) if i.severity == "error"}


def test_choice_types_and_primitive_extensions():
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "BP"},
        "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
        "_status": {"extension": [{"url": "http://example.org/x", "valueBoolean": True}]},
    }
    assert errors(obs) == {}
    assert "Observation.valueFoo" in errors({**obs, "valueFoo": 1})
    assert "Observation.valueQuantity.value" in errors({**obs, "valueQuantity": {"value": "120"}})


def test_cardinality_and_arrays():
    assert "Patient.name" in errors({"resourceType": "Patient", "name": {"text": "x"}})
    assert "Patient.gender" in errors({"resourceType": "Patient", "gender": ["male"]})
    assert "Patient.name" in errors({"resourceType": "Patient", "name": []})
    assert "Patient.name[0]" in errors({"resourceType": "Patient", "name": [{}]})


def test_primitive_formats():
    assert errors({"resourceType": "Patient", "birthDate": "2024"}) == {}
    assert "Patient.birthDate" in errors({"resourceType": "Patient", "birthDate": "2024-02-30T"})
    assert "Patient.active" in errors({"resourceType": "Patient", "active": "true"})
    assert "Patient.multipleBirthInteger" in errors({"resourceType": "Patient", "multipleBirthInteger": 2**40})
    assert errors({"resourceType": "Patient", "name": [{"text": "欧阳\u00a0娜娜"}]}) == {}
    assert "Patient.name[0].text" in errors({"resourceType": "Patient", "name": [{"text": ""}]})


def test_required_binding_and_nested_resources():
    assert "Patient.gender" in errors({"resourceType": "Patient", "gender": "M"})
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "gender": "M"}}],
    }
    assert "Bundle.entry[0].resource.gender" in errors(bundle)
    contained = {"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}
    assert "Patient.contained[0].resourceType" in errors(contained)


def test_backbone_and_content_reference():
    q = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string"}]}],
    }
    assert errors(q) == {}
    q["item"][0]["item"][0]["type"] = "bogus"
    assert "Questionnaire.item[0].item[0].type" in errors(q)


def test_reference_format():
    def obs(ref: str) -> dict:
        return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": ref}}

    for ok in ("Patient/1", "Patient/1/_history/2", "http://other.org/fhir/Patient/9", "#p1", "urn:uuid:abc"):
        assert errors(obs(ok)) == {}, ok
    for bad in ("patient 1", "Patientx/1/2/3", "Unknown/1"):
        assert "Observation.subject.reference" in errors(obs(bad)), bad


_text = st.text(alphabet=st.characters(categories=["L", "N"]) | st.sampled_from("张王李赵 -"), min_size=1, max_size=12)
_text = _text.map(str.strip).filter(bool)
patients = st.fixed_dictionaries(
    {"resourceType": st.just("Patient")},
    optional={
        "active": st.booleans(),
        "gender": st.sampled_from(["male", "female", "other", "unknown"]),
        "birthDate": st.dates().map(lambda d: d.isoformat()).filter(lambda s: not s.startswith("000")),
        "name": st.lists(
            st.fixed_dictionaries({"family": _text}, optional={"given": st.lists(_text, min_size=1, max_size=2)}),
            min_size=1,
            max_size=2,
        ),
        "identifier": st.lists(
            st.fixed_dictionaries({"system": st.just("urn:oid:2.16.156.10011.1.1"), "value": _text}),
            min_size=1,
            max_size=2,
        ),
        "telecom": st.lists(
            st.fixed_dictionaries(
                {"system": st.just("phone"), "value": st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)}
            ),
            min_size=1,
            max_size=1,
        ),
        "multipleBirthInteger": st.integers(1, 9),
    },
)


@given(patients)
def test_generated_valid_patients_pass(p):
    assert errors(p) == {}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=patients)
def test_round_trip_generated_patients_over_http(client, p):
    created = client.post("/Patient", json=p)
    assert created.status_code == 201, created.text
    body = created.json()
    read = client.get(f"/Patient/{body['id']}").json()
    assert {k: v for k, v in read.items() if k not in ("id", "meta")} == p
    vread = client.get(f"/Patient/{body['id']}/_history/1").json()
    assert vread == read
