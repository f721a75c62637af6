"""date parameters (R4 §3.1.1.4.3) and the prefixes (R4 §3.1.1.4.1, "Prefixes").

Every value is a range (a partial date covers its whole year/month/day; a Period its start..end,
a missing bound being unbounded). With the search value's range S and the target's range T:
eq = S contains T; ne = not eq; gt = the range above S overlaps T; lt = the range below S overlaps T;
ge = gt or eq; le = lt or eq; sa = T lies wholly after S; eb = T lies wholly before S; ap = about.

The spec reads two ways on where "the range above" a value starts (after the end of S, or after
its first instant), so a target inside S is never asserted for ``gt``; every other case here
follows from either reading. ``ap`` is approximate at the server's discretion: only clear cases.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.fhir.search.helpers import Scenario, mentions, search_error

BIRTHS = {
    "1980": "1980",
    "1980-05": "1980-05",
    "1980-05-12": "1980-05-12",
    "1980-05-13": "1980-05-13",
    "1979-12-31": "1979-12-31",
    "1981-01-01": "1981-01-01",
    "1950-01-01": "1950-01-01",
}


@pytest.fixture
def births(client) -> Scenario:
    s = Scenario(client)
    for label, value in BIRTHS.items():
        s.add(label, {"resourceType": "Patient", "birthDate": value})
    return s


def found(s: Scenario, value: str, ignore: set[str] = frozenset(), param: str = "birthdate", path="Patient"):
    return s.find(path, {param: value}) - ignore


def test_eq_on_partial_dates(births):
    assert found(births, "1980") == {"1980", "1980-05", "1980-05-12", "1980-05-13"}
    assert found(births, "1980-05") == {"1980-05", "1980-05-12", "1980-05-13"}
    assert found(births, "1980-05-12") == {"1980-05-12"}
    assert found(births, "eq1980-05-12") == {"1980-05-12"}
    assert found(births, "1980-06") == set()


def test_ne(births):
    assert found(births, "ne1980-05-12") == set(BIRTHS) - {"1980-05-12"}
    # a year-precision birthDate is not inside a single day: "1980" != 1980-05-12
    assert "1980" in found(births, "ne1980-05-12")
    assert found(births, "ne1980") == {"1979-12-31", "1981-01-01", "1950-01-01"}


def test_gt_and_lt(births):
    # The year 1980 and the month 1980-05 extend both before and after 1980-05-12.
    assert found(births, "gt1980-05-12", ignore={"1980-05-12"}) == {"1980", "1980-05", "1980-05-13", "1981-01-01"}
    assert found(births, "lt1980-05-12") == {"1980", "1980-05", "1979-12-31", "1950-01-01"}
    assert found(births, "lt1950-01-01") == set()
    assert found(births, "gt1981-01-01", ignore={"1981-01-01"}) == set()


def test_ge_and_le_include_the_value_itself(births):
    assert found(births, "ge1980-05-12") == {"1980", "1980-05", "1980-05-12", "1980-05-13", "1981-01-01"}
    assert found(births, "le1980-05-12") == {"1980", "1980-05", "1980-05-12", "1979-12-31", "1950-01-01"}


def test_sa_and_eb_need_no_overlap(births):
    assert found(births, "sa1980-05-12") == {"1980-05-13", "1981-01-01"}
    assert found(births, "eb1980-05-12") == {"1979-12-31", "1950-01-01"}
    assert found(births, "sa1980") == {"1981-01-01"}
    assert found(births, "eb1980") == {"1979-12-31", "1950-01-01"}


def test_ap(births):
    near = found(births, "ap1980-05-12")
    assert {"1980", "1980-05", "1980-05-12"} <= near  # they overlap the day
    assert "1950-01-01" not in near  # thirty years away


def test_and_and_or(births):
    ranged = births.find("Patient", [("birthdate", "ge1980-05"), ("birthdate", "lt1981")])
    assert ranged == {"1980", "1980-05", "1980-05-12", "1980-05-13"}
    assert found(births, "1950,1981") == {"1950-01-01", "1981-01-01"}


@pytest.fixture
def moments(client) -> Scenario:
    s = Scenario(client)
    code = {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}
    for label, when in {
        "new-york": "2021-03-04T23:30:00-05:00",  # 2021-03-05T04:30:00Z
        "athens": "2021-03-05T02:00:00+02:00",  # 2021-03-05T00:00:00Z
        "utc-noon": "2021-03-04T12:00:00Z",
    }.items():
        s.add(label, {"resourceType": "Observation", "status": "final", "code": code, "effectiveDateTime": when})
    return s


def test_datetimes_compare_as_instants_across_timezones(moments):
    def obs(value, ignore=frozenset()):
        return found(moments, value, ignore, param="date", path="Observation")

    assert obs("2021-03-05T04:30:00Z") == {"new-york"}
    assert obs("2021-03-04T23:30:00-05:00") == {"new-york"}
    assert obs("2021-03-05T07:30:00+03:00") == {"new-york"}
    assert obs("2021-03-05T00:00:00Z") == {"athens"}
    assert obs("ge2021-03-05T00:00:00Z") == {"new-york", "athens"}
    assert obs("lt2021-03-05T00:00:00Z") == {"utc-noon"}
    assert obs("gt2021-03-05T01:00:00+02:00") == {"new-york", "athens"}  # = 2021-03-04T23:00Z
    assert obs("le2021-03-04T12:00:00Z") == {"utc-noon"}
    assert obs("2021-03-04T12:00Z") == {"utc-noon"}  # minutes precision covers the whole minute
    assert obs("sa2021-03-05T00:00:00Z") == {"new-york"}
    assert obs("eb2021-03-05T00:00:00Z") == {"utc-noon"}


@pytest.fixture
def periods(client) -> Scenario:
    s = Scenario(client)
    base = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    s.add("january", {**base, "period": {"start": "2020-01-01", "end": "2020-01-31"}})
    s.add("from-15th", {**base, "status": "in-progress", "period": {"start": "2020-01-15"}})
    s.add("until-june-2019", {**base, "period": {"end": "2019-06-30"}})
    return s


def test_periods_including_open_ended_ones(periods):
    def enc(value, ignore=frozenset()):
        return found(periods, value, ignore, param="date", path="Encounter")

    assert enc("2020-01") == {"january"}  # only a closed period fits inside the month
    assert enc("2020") == {"january"}
    assert enc("ne2020-01") == {"from-15th", "until-june-2019"}
    assert enc("gt2025-01-01") == {"from-15th"}  # a missing end is after any date
    assert enc("lt2019-01-01") == {"until-june-2019"}  # a missing start is before any date
    assert enc("ge2020-01-20") == {"january", "from-15th"}
    assert enc("le2020-01-10") == {"january", "until-june-2019"}
    assert enc("sa2019-12-31") == {"january", "from-15th"}
    assert enc("sa2020-01-10") == {"from-15th"}  # january starts before the 10th
    assert enc("eb2020-01-10") == {"until-june-2019"}
    assert enc("eb2020-02-01") == {"january", "until-june-2019"}
    assert {"january", "from-15th"} <= enc("ap2020-01-15")


def instant(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_last_updated_relative_to_now(client):
    s = Scenario(client)
    s.add("p", {"resourceType": "Patient"})
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert s.find("Patient", {"_lastUpdated": f"gt{yesterday}"}) == {"p"}
    assert s.find("Patient", {"_lastUpdated": f"sa{yesterday}"}) == {"p"}
    assert s.find("Patient", {"_lastUpdated": f"lt{yesterday}"}) == set()
    assert s.find("Patient", {"_lastUpdated": "eb2000"}) == set()


def test_last_updated_against_the_instant_the_server_reported(client):
    s = Scenario(client)
    first = s.add("first", {"resourceType": "Patient"})
    time.sleep(0.05)
    second = s.add("second", {"resourceType": "Patient"})
    t1, t2 = first["meta"]["lastUpdated"], second["meta"]["lastUpdated"]
    assert s.find("Patient", {"_lastUpdated": f"ge{t2}"}) == {"second"}
    assert s.find("Patient", {"_lastUpdated": f"lt{t2}"}) == {"first"}
    assert s.find("Patient", {"_lastUpdated": f"le{t1}"}) == {"first"}
    # meta.lastUpdated has millisecond precision, so it names the millisecond the update happened in
    assert s.find("Patient", {"_lastUpdated": t1}) == {"first"}
    assert s.find("Patient", {"_lastUpdated": f"eq{t2}"}) == {"second"}


@pytest.mark.parametrize(
    "param, value",
    [
        ("birthdate", "1980-13-01"),
        ("birthdate", "1980-02-30"),
        ("birthdate", "not-a-date"),
        ("birthdate", "zz1980"),
        ("birthdate", "12/05/1980"),
        ("death-date", "2020-01-01T25:00:00Z"),
        ("_lastUpdated", "yesterday"),
    ],
)
def test_malformed_date_is_400_naming_the_parameter(client, param, value):
    outcome = search_error(client, "/Patient", {param: value})
    assert mentions(outcome, param), outcome


def test_missing(client):
    s = Scenario(client)
    s.add("born", {"resourceType": "Patient", "birthDate": "2001-02-03"})
    s.add("unknown", {"resourceType": "Patient"})
    assert s.find("Patient", {"birthdate:missing": "true"}) == {"unknown"}
    assert s.find("Patient", {"birthdate:missing": "false"}) == {"born"}
