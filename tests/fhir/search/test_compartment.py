"""Patient compartment searches (R4 §3.1.1.3 with CompartmentDefinition ``patient``) and
``Patient/{id}/$everything`` (R4 Patient §5.1.8.3) with ``_type``, ``_since`` and ``_count``.

In the patient compartment: Observation by ``subject`` or ``performer``; Condition by ``patient``
or ``asserter``; Encounter by ``patient``. ``Observation.focus`` does not put one in it.
"""

from __future__ import annotations

import time

import pytest

from tests.fhir.search.helpers import Scenario, entries, link, update


def ref(s: Scenario, label: str) -> dict:
    return {"reference": s.ref(label)}


def observation(code: str, **extra) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://example.org", "code": code}]},
        **extra,
    }


@pytest.fixture
def chart(client) -> Scenario:
    s = Scenario(client)
    s.add("P", {"resourceType": "Patient", "name": [{"family": "Chart"}]})
    s.add("P2", {"resourceType": "Patient", "name": [{"family": "Other"}]})
    s.add("obs-subject", observation("a", subject=ref(s, "P")))
    s.add("obs-performer", observation("b", subject=ref(s, "P2"), performer=[ref(s, "P")]))
    s.add("obs-other", observation("a", subject=ref(s, "P2")))
    s.add("obs-focus", observation("a", subject=ref(s, "P2"), focus=[ref(s, "P")]))
    s.add("cond-subject", {"resourceType": "Condition", "subject": ref(s, "P")})
    s.add("cond-asserter", {"resourceType": "Condition", "subject": ref(s, "P2"), "asserter": ref(s, "P")})
    s.add("cond-other", {"resourceType": "Condition", "subject": ref(s, "P2")})
    s.add("enc", {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": ref(s, "P")})
    return s


IN_COMPARTMENT = {"P", "obs-subject", "obs-performer", "cond-subject", "cond-asserter", "enc"}
NOT_IN_COMPARTMENT = {"obs-other", "obs-focus", "cond-other"}


def test_observations_in_the_compartment(chart):
    path = f"Patient/{chart.id('P')}/Observation"
    assert chart.find(path, scoped=False) == {"obs-subject", "obs-performer"}
    assert chart.find(path, {"code": "a"}, scoped=False) == {"obs-subject"}


def test_conditions_and_encounters_in_the_compartment(chart):
    assert chart.find(f"Patient/{chart.id('P')}/Condition", scoped=False) == {"cond-subject", "cond-asserter"}
    assert chart.find(f"Patient/{chart.id('P')}/Encounter", scoped=False) == {"enc"}


def test_compartment_of_another_patient(chart):
    path = f"Patient/{chart.id('P2')}/Observation"
    assert chart.find(path, scoped=False) == {"obs-performer", "obs-other", "obs-focus"}


def everything(client, s: Scenario, params=()) -> list[str]:
    """Labels of every entry of every page of $everything (duplicates kept, to be checked)."""
    r = client.get(f"/Patient/{s.id('P')}/$everything", params=list(params))
    assert r.status_code == 200, r.text
    page, seen = r.json(), []
    while True:
        assert page["type"] == "searchset"
        seen += [s.label_of(e["resource"]["id"]) for e in page.get("entry", [])]
        nxt = link(page, "next")
        if nxt is None:
            return seen
        r = client.get(nxt)
        assert r.status_code == 200, r.text
        page = r.json()


def test_everything(client, chart):
    found = everything(client, chart)
    assert len(found) == len(set(found))
    assert IN_COMPARTMENT <= set(found)
    assert not NOT_IN_COMPARTMENT & set(found)


def test_everything_type(client, chart):
    assert set(everything(client, chart, [("_type", "Observation")])) == {"obs-subject", "obs-performer"}
    both = set(everything(client, chart, [("_type", "Observation,Condition")]))
    assert both == {"obs-subject", "obs-performer", "cond-subject", "cond-asserter"}


def test_everything_since(client, chart):
    time.sleep(0.05)
    latest = max(r["meta"]["lastUpdated"] for r in chart.by_label.values())
    time.sleep(0.05)
    since = chart.add("obs-late", observation("c", subject=ref(chart, "P")))["meta"]["lastUpdated"]
    assert since > latest
    current = chart.by_label["cond-subject"]
    update(chart.client, {**current, "note": [{"text": "revised"}]})
    found = set(everything(client, chart, [("_since", since)]))
    assert {"obs-late", "cond-subject"} <= found
    assert not {"obs-subject", "obs-performer", "cond-asserter", "enc"} & found


def test_everything_pages_with_count(client, chart):
    for i in range(4):
        chart.add(f"extra-{i}", observation("d", subject=ref(chart, "P")))
    r = client.get(f"/Patient/{chart.id('P')}/$everything", params={"_count": "2"})
    assert len(entries(r.json())) == 2 and link(r.json(), "next")
    found = everything(client, chart, [("_count", "2")])
    assert len(found) == len(set(found)), "an entry was returned twice"
    assert IN_COMPARTMENT | {f"extra-{i}" for i in range(4)} <= set(found)
    assert not NOT_IN_COMPARTMENT & set(found)


def test_everything_of_an_unknown_patient_is_404(client):
    assert client.get("/Patient/no-such-patient-xyz/$everything").status_code == 404
