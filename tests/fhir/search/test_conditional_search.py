"""Conditional create, update and delete (R4 §3.1.0.8, §3.1.0.4.3, §3.1.0.7.1) driven by search
criteria other than an identifier: 0, 1 or several matches. The criteria follow search semantics
(``family=Dup`` matches Dupont and Dupontel); an unknown parameter is an error, never ignored."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.conftest import unique
from tests.fhir.search.helpers import TAG_SYSTEM, Scenario, create, tagged


@pytest.fixture
def family() -> str:
    return unique("Fam").replace("-", "")


def person(family: str, birth: str = "1970-01-01", **extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family}], "birthDate": birth, **extra}


def criteria(family: str, birth: str = "1970-01-01", **extra) -> str:
    return urlencode({"family": family, "birthdate": birth, **extra})


def count(client, family: str) -> int:
    bundle = client.get("/Patient", params={"family:exact": family, "_total": "accurate"}).json()
    return bundle["total"]


def test_conditional_create(client, family):
    first = client.post("/Patient", json=person(family), headers={"If-None-Exist": criteria(family)})
    assert first.status_code == 201, first.text
    again = client.post("/Patient", json=person(family), headers={"If-None-Exist": criteria(family)})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    # search semantics: a prefix of the family and the birth year find the same patient
    prefix = client.post("/Patient", json=person(family), headers={"If-None-Exist": criteria(family[:-2], "1970")})
    assert prefix.status_code == 200 and prefix.json()["id"] == first.json()["id"]
    assert count(client, family) == 1


def test_conditional_create_with_several_matches_is_412(client, family):
    create(client, person(family))
    create(client, person(family))
    r = client.post("/Patient", json=person(family), headers={"If-None-Exist": criteria(family)})
    assert r.status_code == 412, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert count(client, family) == 2


def test_conditional_create_different_birthdate_creates(client, family):
    create(client, person(family, "1970-01-01"))
    r = client.post(
        "/Patient", json=person(family, "1980-01-01"), headers={"If-None-Exist": criteria(family, "1980-01-01")}
    )
    assert r.status_code == 201
    assert count(client, family) == 2


def test_conditional_update(client, family):
    created = client.put(f"/Patient?{criteria(family)}", json=person(family))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    updated = client.put(f"/Patient?{criteria(family)}", json=person(family, gender="female"))
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    assert client.get(f"/Patient/{pid}").json()["gender"] == "female"
    assert count(client, family) == 1


def test_conditional_update_with_a_different_id_in_the_body_is_400(client, family):
    pid = create(client, person(family))["id"]
    r = client.put(f"/Patient?{criteria(family)}", json=person(family, id=unique("other")))
    assert r.status_code == 400, r.text
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_conditional_update_with_several_matches_is_412(client, family):
    a = create(client, person(family + "a"))
    b = create(client, person(family + "b"))
    r = client.put(f"/Patient?{criteria(family)}", json=person(family, gender="male"))
    assert r.status_code == 412, r.text
    for p in (a, b):
        assert client.get(f"/Patient/{p['id']}").json()["meta"]["versionId"] == "1"


def test_conditional_delete(client, family):
    keep = create(client, person(family, "1980-01-01"))
    gone = create(client, person(family, "1970-01-01"))
    r = client.delete(f"/Patient?{criteria(family)}")
    assert r.status_code in (200, 204), r.text
    assert client.get(f"/Patient/{gone['id']}").status_code == 410
    assert client.get(f"/Patient/{keep['id']}").status_code == 200


def test_conditional_delete_without_matches_deletes_nothing(client, family):
    keep = create(client, person(family, "1980-01-01"))
    r = client.delete(f"/Patient?{criteria(family)}")
    assert r.status_code in (200, 204, 404), r.text
    assert client.get(f"/Patient/{keep['id']}").status_code == 200


def test_conditional_delete_with_several_matches(client, family):
    """R4: the server may delete all the matches, or refuse with 412 and delete none."""
    a = create(client, person(family))
    b = create(client, person(family))
    r = client.delete(f"/Patient?{criteria(family)}")
    statuses = {client.get(f"/Patient/{p['id']}").status_code for p in (a, b)}
    if r.status_code == 412:
        assert statuses == {200}
    else:
        assert r.status_code in (200, 204) and statuses == {410}, r.text


@pytest.mark.parametrize("interaction", ["create", "update", "delete"])
def test_unknown_parameter_in_conditional_criteria_is_400(client, family, interaction):
    create(client, person(family))
    bad = criteria(family, **{"no-such-param": "x"})
    if interaction == "create":
        r = client.post("/Patient", json=person(family), headers={"If-None-Exist": bad})
    elif interaction == "update":
        r = client.put(f"/Patient?{bad}", json=person(family, gender="male"))
    else:
        r = client.delete(f"/Patient?{bad}")
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    bundle = client.get("/Patient", params={"family:exact": family}).json()
    [only] = [e["resource"] for e in bundle["entry"]]
    assert only["meta"]["versionId"] == "1"


def test_conditional_create_by_reference_written_as_an_absolute_url(client):
    """The criteria are search criteria, so ``[base]/Patient/1`` and ``Patient/1`` are the same."""
    s = Scenario(client)
    s.add("P", {"resourceType": "Patient"})
    code = {"coding": [{"system": "http://example.org/codes", "code": unique("c")}]}
    obs = s.add(
        "obs", {"resourceType": "Observation", "status": "final", "code": code, "subject": {"reference": s.ref("P")}}
    )
    absolute = f"{str(client.base_url).rstrip('/')}/{s.ref('P')}"
    condition = urlencode({"subject": absolute, "code": code["coding"][0]["code"]})
    body = tagged(
        {"resourceType": "Observation", "status": "final", "code": code, "subject": {"reference": s.ref("P")}}, s.tag
    )
    r = client.post("/Observation", json=body, headers={"If-None-Exist": condition})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == obs["id"]
    assert s.find("Observation", {"_tag": f"{TAG_SYSTEM}|{s.tag}"}, scoped=False) == {"obs"}
