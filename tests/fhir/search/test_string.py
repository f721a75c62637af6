"""string parameters (R4 §3.1.1.4.7): case- and accent-insensitive starts-with by default,
``:exact`` (whole string, case- and accent-sensitive), ``:contains``; HumanName and Address
parameters match any of their parts."""

from __future__ import annotations

import pytest

from tests.fhir.search.helpers import Scenario


def patient(family: str | None = None, given: list[str] | None = None, **extra) -> dict:
    name: dict = {}
    if family is not None:
        name["family"] = family
    if given:
        name["given"] = given
    return {"resourceType": "Patient", **({"name": [name]} if name else {}), **extra}


@pytest.fixture
def families(client) -> Scenario:
    s = Scenario(client)
    s.add("Zolanski", patient("Zolanski", ["Anna"]))
    s.add("Zola", patient("Zola", ["Émile"]))
    s.add("Azola", patient("Azola", ["Emile"]))
    s.add("Brontë", patient("Brontë", ["ÉMILIE"]))
    return s


def test_default_is_starts_with_and_case_insensitive(families):
    assert families.find("Patient", {"family": "zola"}) == {"Zolanski", "Zola"}
    assert families.find("Patient", {"family": "ZOLA"}) == {"Zolanski", "Zola"}
    assert families.find("Patient", {"family": "Zolanski"}) == {"Zolanski"}
    assert families.find("Patient", {"family": "ola"}) == set()  # not a prefix
    assert families.find("Patient", {"family": "zolanskix"}) == set()


def test_default_is_accent_insensitive_both_ways(families):
    assert families.find("Patient", {"given": "emile"}) == {"Zola", "Azola"}
    assert families.find("Patient", {"given": "Émile"}) == {"Zola", "Azola"}
    assert families.find("Patient", {"given": "EMILE"}) == {"Zola", "Azola"}
    assert families.find("Patient", {"given": "émil"}) == {"Zola", "Azola", "Brontë"}
    assert families.find("Patient", {"family": "bronte"}) == {"Brontë"}
    assert families.find("Patient", {"given": "émilie"}) == {"Brontë"}


def test_exact_is_whole_string_case_and_accent_sensitive(families):
    assert families.find("Patient", {"family:exact": "Zola"}) == {"Zola"}
    assert families.find("Patient", {"family:exact": "zola"}) == set()
    assert families.find("Patient", {"family:exact": "Zol"}) == set()
    assert families.find("Patient", {"given:exact": "Émile"}) == {"Zola"}
    assert families.find("Patient", {"given:exact": "Emile"}) == {"Azola"}
    assert families.find("Patient", {"family:exact": "Bronte"}) == set()


def test_contains_matches_anywhere_case_insensitively(families):
    assert families.find("Patient", {"family:contains": "OLA"}) == {"Zolanski", "Zola", "Azola"}
    assert families.find("Patient", {"family:contains": "lansk"}) == {"Zolanski"}
    assert families.find("Patient", {"family:contains": "ont"}) == {"Brontë"}
    assert families.find("Patient", {"family:contains": "xyz"}) == set()


def test_comma_is_or_and_repetition_is_and(client):
    s = Scenario(client)
    s.add("both", patient("Curie", ["Marie", "Salomea"]))
    s.add("one", patient("Curie", ["Marie"]))
    s.add("other", patient("Dupont", ["Salomea"]))
    assert s.find("Patient", {"family": "curie,dupont"}) == {"both", "one", "other"}
    assert s.find("Patient", [("given", "marie"), ("given", "salomea")]) == {"both"}
    assert s.find("Patient", [("given", "marie"), ("family", "dupont")]) == set()


def test_escaped_comma_and_sql_wildcards_are_literal(client):
    s = Scenario(client)
    s.add("comma", patient("Smith,Jones"))
    s.add("smith", patient("Smith"))
    s.add("underscore", patient("ab_cd"))
    s.add("percent", patient("ab%cd"))
    s.add("plain", patient("abXcd"))
    assert s.find("Patient", {"family": r"smith\,jones"}) == {"comma"}
    assert s.find("Patient", {"family": "ab_"}) == {"underscore"}
    assert s.find("Patient", {"family": "ab%"}) == {"percent"}
    assert s.find("Patient", {"family:contains": "_c"}) == {"underscore"}


def test_name_matches_every_part_of_human_name(client):
    s = Scenario(client)
    s.add("curie", patient(name=[{"prefix": ["Dr"], "given": ["Marie"], "family": "Curie", "suffix": ["PhD"]}]))
    s.add("texted", patient(name=[{"text": "Pierre Curie"}]))
    assert s.find("Patient", {"name": "curie"}) == {"curie"}
    assert s.find("Patient", {"name": "mar"}) == {"curie"}
    assert s.find("Patient", {"name": "dr"}) == {"curie"}
    assert s.find("Patient", {"name": "phd"}) == {"curie"}
    assert s.find("Patient", {"name": "pierre"}) == {"texted"}
    assert s.find("Patient", {"name": "nobody"}) == set()


def test_chinese_name_by_family_and_by_family_plus_given(client):
    s = Scenario(client)
    s.add("张伟", patient("张", ["伟"]))
    s.add("张三", patient("张", ["三"]))
    s.add("李伟", patient("李", ["伟"]))
    assert s.find("Patient", {"name": "张"}) == {"张伟", "张三"}
    assert s.find("Patient", {"name": "张伟"}) == {"张伟"}
    assert s.find("Patient", {"family": "张"}) == {"张伟", "张三"}
    assert s.find("Patient", {"given": "伟"}) == {"张伟", "李伟"}
    assert s.find("Patient", {"name:exact": "张"}) == {"张伟", "张三"}
    assert s.find("Patient", {"name": "王"}) == set()


def test_address_matches_any_part_and_part_parameters_only_their_part(client):
    """Full R4 string semantics on an address (an Organization's: not personal data)."""
    s = Scenario(client)
    address = {
        "line": ["221B Baker Street"],
        "city": "London",
        "district": "Marylebone",
        "state": "Greater London",
        "postalCode": "NW1 6XE",
        "country": "UK",
    }
    s.add("holmes", {"resourceType": "Organization", "name": "Holmes", "address": [address]})
    s.add(
        "paris",
        {"resourceType": "Organization", "name": "Poirot", "address": [{"city": "Paris", "postalCode": "75001"}]},
    )
    for value in ("221b", "221B Baker", "london", "marylebone", "greater", "nw1", "uk"):
        assert s.find("Organization", {"address": value}) == {"holmes"}, value
    assert s.find("Organization", {"address:contains": "baker"}) == {"holmes"}
    assert s.find("Organization", {"address-city": "lond"}) == {"holmes"}
    assert s.find("Organization", {"address-city": "baker"}) == set()
    assert s.find("Organization", {"address-postalcode": "nw1 6xe"}) == {"holmes"}


def test_patient_street_address_is_encrypted_so_only_whole_parts_match(client):
    """A Patient's street line and postal code are stored encrypted with a blind index: they match
    as whole (normalised) values; city, district and province keep prefix search."""
    s = Scenario(client)
    address = {"line": ["人民路88号"], "city": "澄阳市", "district": "南湖区", "postalCode": "653100"}
    s.add("p", patient("王", ["芳"], address=[address]))
    assert s.find("Patient", {"address": "人民路88号"}) == {"p"}
    assert s.find("Patient", {"address": "人民路"}) == set()  # no prefix search on encrypted parts
    assert s.find("Patient", {"address": "澄阳"}) == {"p"}
    assert s.find("Patient", {"address-postalcode": "653100"}) == {"p"}


def test_missing(client):
    s = Scenario(client)
    s.add("family", patient("Nobel"))
    s.add("given-only", patient(None, ["Alfred"]))
    s.add("no-name", patient())
    assert s.find("Patient", {"family:missing": "true"}) == {"given-only", "no-name"}
    assert s.find("Patient", {"family:missing": "false"}) == {"family"}
    assert s.find("Patient", {"name:missing": "true"}) == {"no-name"}


def test_organization_name_covers_alias(client):
    s = Scenario(client)
    s.add("acme", {"resourceType": "Organization", "name": "Acme Health", "alias": ["Wile E. Clinics"]})
    assert s.find("Organization", {"name": "acme"}) == {"acme"}
    assert s.find("Organization", {"name": "wile e"}) == {"acme"}


def test_search_reflects_updates_and_deletes(client):
    s = Scenario(client)
    p = s.add("p", patient("Oldname"))
    r = client.put(f"/Patient/{p['id']}", json={**p, "name": [{"family": "Newname"}]})
    assert r.status_code == 200, r.text
    assert s.find("Patient", {"family": "oldname"}) == set()
    assert s.find("Patient", {"family": "newname"}) == {"p"}
    assert client.delete(f"/Patient/{p['id']}").status_code in (200, 204)
    assert s.find("Patient", {"family": "newname"}) == set()


def test_backslash_escapes_dollar_bar_and_itself(client):
    """R4 "Escaping Search Parameters": ``\\$``, ``\\|``, ``\\,`` and ``\\\\`` stand for the literal
    characters, in any parameter's value."""
    s = Scenario(client)
    s.add("dollar", patient("Cash$Flow"))
    s.add("bar", patient("Pipe|Line"))
    s.add("backslash", patient("Back\\Slash"))
    assert s.find("Patient", {"family": r"cash\$flow"}) == {"dollar"}
    assert s.find("Patient", {"family": r"pipe\|line"}) == {"bar"}
    assert s.find("Patient", {"family": r"back\\slash"}) == {"backslash"}
