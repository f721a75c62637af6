"""Result parameters and the searchset Bundle (R4 §3.1.1.5 "Modifying Search Results", §3.1.1.2):
``_sort``, ``_count``, ``_total``, ``_summary``, ``_elements``, ``_include``/``_revinclude``,
paging, ``POST _search``, and how unknown parameters are reported."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from tests.fhir.search.helpers import (
    SUBSETTED,
    TAG_SYSTEM,
    Scenario,
    create,
    entries,
    ids,
    link,
    search_error,
    tag_param,
    update,
)


def patient(family: str, birth: str | None = None, **extra) -> dict:
    p = {"resourceType": "Patient", "name": [{"family": family}], **extra}
    if birth:
        p["birthDate"] = birth
    return p


def ordered(s: Scenario, params) -> list[str]:
    return [s.label_of(i) for i in ids(s.bundle("Patient", params))]


@pytest.fixture
def people(client) -> Scenario:
    s = Scenario(client)
    s.add("alpha-1990", patient("Alpha", "1990-01-01"))
    s.add("bravo-1985", patient("Bravo", "1985-06-15"))
    s.add("alpha-1970", patient("Alpha", "1970-03-03"))
    s.add("charlie-2000", patient("Charlie", "2000-12-31"))
    return s


def test_sort_by_date_both_ways(people):
    assert ordered(people, {"_sort": "birthdate"}) == ["alpha-1970", "bravo-1985", "alpha-1990", "charlie-2000"]
    assert ordered(people, {"_sort": "-birthdate"}) == ["charlie-2000", "alpha-1990", "bravo-1985", "alpha-1970"]


def test_sort_by_string_with_several_keys(people):
    assert ordered(people, {"_sort": "family,-birthdate"}) == ["alpha-1990", "alpha-1970", "bravo-1985", "charlie-2000"]
    assert ordered(people, {"_sort": "-family,birthdate"}) == ["charlie-2000", "bravo-1985", "alpha-1970", "alpha-1990"]


def test_sort_by_last_updated_and_id(client):
    s = Scenario(client)
    for label in ("first", "second", "third"):
        s.add(label, patient(label))
        time.sleep(0.01)
    assert ordered(s, {"_sort": "_lastUpdated"}) == ["first", "second", "third"]
    assert ordered(s, {"_sort": "-_lastUpdated"}) == ["third", "second", "first"]
    by_id = sorted(s.by_label, key=s.id)
    assert ordered(s, {"_sort": "_id"}) == by_id


def test_count_limits_the_page_and_total_counts_every_match(client):
    s = Scenario(client)
    for i in range(5):
        s.add(f"p{i}", patient(f"Count{i}"))
    page = s.bundle("Patient", {"_count": "2", "_total": "accurate"})
    assert len(ids(page)) == 2
    assert page["total"] == 5
    assert link(page, "next") is not None
    whole = s.bundle("Patient", {"_count": "10"})
    assert len(ids(whole)) == 5 and link(whole, "next") is None
    assert "total" not in s.bundle("Patient", {"_count": "2", "_total": "none"})
    assert s.bundle("Patient", {"_count": "2", "_total": "accurate"}).get("total") == 5


@pytest.fixture
def detailed(client) -> Scenario:
    s = Scenario(client)
    s.add(
        "p",
        {
            "resourceType": "Patient",
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ada</div>'},
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "gender": "female",
            "birthDate": "1815-12-10",
            "maritalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]
            },
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}}],
        },
    )
    return s


def only(s: Scenario, params) -> dict:
    [resource] = entries(s.bundle("Patient", params))
    return resource


def subsetted(resource: dict) -> bool:
    return any(
        t.get("system") == SUBSETTED["system"] and t.get("code") == "SUBSETTED" for t in resource["meta"].get("tag", [])
    )


def test_summary_true(detailed):
    r = only(detailed, {"_summary": "true"})
    assert {"id", "meta", "name", "gender", "birthDate"} <= set(r)
    assert not {"text", "maritalStatus", "communication"} & set(r)
    assert subsetted(r)
    assert any(t.get("system") == TAG_SYSTEM for t in r["meta"]["tag"])  # the resource's own tags are kept


def test_summary_text(detailed):
    r = only(detailed, {"_summary": "text"})
    assert {"id", "meta", "text"} <= set(r)
    assert not {"name", "gender", "maritalStatus"} & set(r)
    assert subsetted(r)


def test_summary_data(detailed):
    r = only(detailed, {"_summary": "data"})
    assert "text" not in r
    assert {"name", "gender", "maritalStatus", "communication"} <= set(r)
    assert subsetted(r)


def test_summary_false(detailed):
    r = only(detailed, {"_summary": "false"})
    assert {"text", "name", "maritalStatus", "communication"} <= set(r)
    assert not subsetted(r)


def test_summary_count(detailed):
    bundle = detailed.bundle("Patient", {"_summary": "count"})
    assert bundle["total"] == 1
    assert entries(bundle) == []


def test_elements(client, detailed):
    r = only(detailed, {"_elements": "name,birthDate"})
    assert {"id", "meta", "name", "birthDate"} <= set(r)
    assert not {"gender", "maritalStatus", "communication", "text"} & set(r)
    assert subsetted(r)
    obs = create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": detailed.ref("p")},
            "effectiveDateTime": "2020-01-01",
            "valueQuantity": {"value": 60, "unit": "kg"},
        },
        detailed.tag,
    )
    [shown] = entries(detailed.bundle("Observation", {"_elements": "subject"}))
    assert shown["id"] == obs["id"] and shown["subject"] == obs["subject"]
    assert not {"effectiveDateTime", "valueQuantity"} & set(shown)  # status and code are mandatory: allowed
    assert subsetted(shown)


@pytest.fixture
def linked(client) -> Scenario:
    s = Scenario(client)
    s.add("house", {"resourceType": "Practitioner", "name": [{"family": "House"}]})
    s.add("wilson", {"resourceType": "Practitioner", "name": [{"family": "Wilson"}]})
    s.add("org", {"resourceType": "Organization", "name": "PPTH"})
    s.add(
        "P",
        patient(
            "Pat", generalPractitioner=[{"reference": s.ref("house")}], managingOrganization={"reference": s.ref("org")}
        ),
    )
    s.add("P2", patient("Pat2", generalPractitioner=[{"reference": s.ref("wilson")}]))
    code = {"coding": [{"system": "http://example.org/codes", "code": "inc"}]}
    base = {"resourceType": "Observation", "status": "final", "code": code}
    s.add("o1", {**base, "subject": {"reference": s.ref("P")}, "performer": [{"reference": s.ref("wilson")}]})
    s.add("o2", {**base, "subject": {"reference": s.ref("P2")}})
    return s


def matched_and_included(s: Scenario, path: str, params) -> tuple[set[str], set[str]]:
    bundle = s.bundle(path, params)
    included = ids(bundle, "include")
    assert len(included) == len(set(included)), f"duplicate includes: {included}"
    return s.labels(ids(bundle)), s.labels(included)


def test_include_subject(linked):
    assert matched_and_included(linked, "Observation", {"_include": "Observation:subject"}) == (
        {"o1", "o2"},
        {"P", "P2"},
    )
    assert matched_and_included(linked, "Observation", {"_include": "Observation:subject:Patient"}) == (
        {"o1", "o2"},
        {"P", "P2"},
    )
    assert matched_and_included(linked, "Observation", {"_include": "Observation:subject:Group"}) == (
        {"o1", "o2"},
        set(),
    )


def test_include_wildcard(linked):
    assert matched_and_included(linked, "Observation", {"_include": "Observation:*"}) == (
        {"o1", "o2"},
        {"P", "P2", "wilson"},
    )


def test_include_iterate(linked):
    params = [("_include", "Observation:subject"), ("_include:iterate", "Patient:general-practitioner")]
    assert matched_and_included(linked, "Observation", params) == ({"o1", "o2"}, {"P", "P2", "house", "wilson"})


def test_revinclude(linked):
    assert matched_and_included(linked, "Patient", {"_revinclude": "Observation:subject"}) == (
        {"P", "P2"},
        {"o1", "o2"},
    )


def test_included_resources_are_not_counted_nor_repeated(linked):
    bundle = linked.bundle("Observation", {"_include": "Observation:subject", "_total": "accurate"})
    assert bundle["total"] == 2
    # o1 matches and would also be included through o3's has-member: it appears once, as a match.
    code = linked.by_label["o1"]["code"]
    linked.add(
        "o3",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": code,
            "hasMember": [{"reference": linked.ref("o1")}],
        },
    )
    bundle = linked.bundle("Observation", {"_include": "Observation:has-member"})
    all_ids = [e["resource"]["id"] for e in bundle["entry"]]
    assert len(all_ids) == len(set(all_ids))
    assert linked.labels(ids(bundle)) == {"o1", "o2", "o3"}


def test_each_page_carries_the_includes_of_its_own_matches(client, linked):
    page = linked.bundle("Observation", {"_include": "Observation:subject", "_count": "1", "_sort": "_id"})
    seen = []
    while True:
        [match] = entries(page)
        subject = match["subject"]["reference"].split("/")[-1]
        assert ids(page, "include") == [subject]
        seen.append(match["id"])
        nxt = link(page, "next")
        if nxt is None:
            break
        page = client.get(nxt).json()
    assert linked.labels(seen) == {"o1", "o2"}


def follow(client, first: dict, between_pages=None) -> list[str]:
    """Every match id of every page, in order, calling ``between_pages(n)`` after page n."""
    seen, page, n = [], first, 0
    while True:
        seen += ids(page)
        nxt = link(page, "next")
        if nxt is None:
            return seen
        n += 1
        if between_pages:
            between_pages(n)
        r = client.get(nxt)
        assert r.status_code == 200, r.text
        page = r.json()


def test_paging_without_sort_has_no_duplicates_or_gaps_while_data_changes(client):
    s = Scenario(client)
    originals = [s.add(f"p{i}", patient(f"Page{i}", "1990-01-01"))["id"] for i in range(9)]
    first = s.bundle("Patient", {"_count": "3"})

    def churn(n):
        s.add(f"new{n}", patient(f"New{n}", "1990-01-01"))
        for pid in originals[n::4]:
            current = client.get(f"/Patient/{pid}").json()
            update(client, {**current, "gender": "other", "birthDate": f"199{n}-01-01"})

    seen = follow(client, first, churn)
    assert len(seen) == len(set(seen)), "a resource was returned twice"
    assert set(originals) <= set(seen), f"missing: {s.labels(set(originals) - set(seen))}"
    assert set(seen) <= {r["id"] for r in s.by_label.values()}  # only resources that match


def test_paging_with_sort_has_no_duplicates_or_gaps_while_sort_values_change(client):
    s = Scenario(client)
    for i in range(9):
        s.add(f"p{i}", patient(f"Sorted{i}"))
    expected = [s.id(f"p{i}") for i in range(9)]
    first = s.bundle("Patient", {"_count": "3", "_sort": "family"})
    assert ids(first) == expected[:3]

    def churn(n):
        # Move a resource not seen yet to the front and a seen one to the end; add a new one.
        late = client.get(f"/Patient/{s.id('p7')}").json()
        update(client, {**late, "name": [{"family": f"Aaa{n}"}]})
        early = client.get(f"/Patient/{s.id('p1')}").json()
        update(client, {**early, "name": [{"family": f"Zzz{n}"}]})
        s.add(f"new{n}", patient(f"Sorted4{n}"))

    seen = follow(client, first, churn)
    assert len(seen) == len(set(seen)), "a resource was returned twice"
    assert set(expected) <= set(seen), f"missing: {s.labels(set(expected) - set(seen))}"
    # the server pages a snapshot of the order the search had when it started
    assert [i for i in seen if i in expected] == expected


def test_post_search_form_encoded(client, linked):
    body = urlencode({"code": "http://example.org/codes|inc", "subject": linked.ref("P")})
    r = client.post(
        "/Observation/_search",
        params=[tag_param(linked.tag)],
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    assert linked.labels(ids(bundle)) == {"o1"}


def test_unknown_parameter_is_ignored_and_reported(linked):
    bundle = linked.bundle("Patient", {"no-such-param": "x"})
    assert linked.labels(ids(bundle)) == {"P", "P2"}
    outcomes = entries(bundle, "outcome")
    assert len(outcomes) == 1 and outcomes[0]["resourceType"] == "OperationOutcome"
    assert "no-such-param" in str(outcomes[0])


def test_self_link_lists_only_the_parameters_used(linked):
    """R4: "servers SHALL return the parameters that were actually used to process a search"."""
    bundle = linked.bundle("Patient", {"no-such-param": "x", "family": "pat"})
    used = dict(parse_qsl(urlsplit(link(bundle, "self")).query))
    assert used.get("family") == "pat"
    assert "no-such-param" not in used


def test_strict_handling_rejects_unknown_parameters(client, linked):
    search_error(
        client, "/Patient", [("no-such-param", "x"), tag_param(linked.tag)], headers={"Prefer": "handling=strict"}
    )
    lenient = linked.bundle("Patient", {"no-such-param": "x"}, headers={"Prefer": "handling=lenient"})
    assert linked.labels(ids(lenient)) == {"P", "P2"}


def test_post_search_pages_through_get_links(client, linked):
    r = client.post(
        "/Observation/_search",
        content=urlencode([tag_param(linked.tag), ("_count", "1")]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    first = r.json()
    nxt = link(first, "next")
    assert nxt is not None
    second = client.get(nxt)  # paging links are GET requests
    assert second.status_code == 200, second.text
    assert linked.labels(ids(first) + ids(second.json())) == {"o1", "o2"}
