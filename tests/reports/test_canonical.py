"""canonical_bytes: RFC 8785 JSON Canonicalization of the signed FHIR content."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemed.reports import canonical_bytes


def test_sorted_compact_utf8_without_meta_and_text():
    resource = {
        "resourceType": "DiagnosticReport",
        "id": "r1",
        "meta": {"versionId": "3", "lastUpdated": "2026-03-03T06:15:00.000Z"},
        "text": {"status": "generated", "div": "<div>…</div>"},
        "status": "final",
        "conclusion": "不稳定型心绞痛\n",
        "code": {"text": "会诊", "coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
    }
    assert (
        canonical_bytes(resource)
        == (
            '{"code":{"coding":[{"code":"11488-4","system":"http://loinc.org"}],"text":"会诊"},'
            '"conclusion":"不稳定型心绞痛\\n","id":"r1","resourceType":"DiagnosticReport","status":"final"}'
        ).encode()
    )
    # Server bookkeeping does not change what was signed.
    assert canonical_bytes({**resource, "meta": {"versionId": "4"}}) == canonical_bytes(resource)


@pytest.mark.parametrize(
    ("value", "expected"),
    [  # RFC 8785 Appendix B and §3.2.2.3
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (100.0, "100"),
        (0.1, "0.1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (333333333.3333333, "333333333.3333333"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (-1.5e-10, "-1.5e-10"),
        (4.5, "4.5"),
        (7, "7"),
    ],
)
def test_numbers_in_ecmascript_form(value, expected):
    assert canonical_bytes({"v": value}) == f'{{"v":{expected}}}'.encode()


def test_strings_escape_like_rfc8785_and_keys_sort_by_utf16():
    escaped = '{"s":"\\"\\\\\\b\\f\\n\\r\\t\\u0001\x7f\u2028é"}'
    assert canonical_bytes({"s": '"\\\b\f\n\r\t\x01\x7f\u2028é'}) == escaped.encode()
    # U+1F600 (a surrogate pair, 0xD83D...) sorts before U+FF5E in UTF-16 code units.
    assert canonical_bytes({"\uff5e": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\uff5e":1}'.encode()


def test_rejects_what_json_cannot_carry():
    with pytest.raises(ValueError):
        canonical_bytes({"v": float("nan")})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_canonical_json_parses_back_to_the_same_content(resource):
    out = canonical_bytes(resource)
    # Numbers are doubles in JCS: an integral double prints as integer digits.
    assert json.loads(out, parse_int=float) == {k: v for k, v in resource.items() if k not in ("meta", "text")}
    assert canonical_bytes(json.loads(out)) == out  # idempotent
