"""HL7's official R4 examples (npm ``hl7.fhir.r4.examples`` 4.0.1, installed by ``make``).

Every example must pass validation except the few that break the spec's own rules (listed with
the reason), and one example of every resource type must round-trip through the REST API.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from telemed.fhir.validation import validator

EXAMPLES = Path(__file__).resolve().parents[2] / "node_modules" / "hl7.fhir.r4.examples"

# Examples that violate R4 itself (cardinality of required elements); rejecting them is correct.
KNOWN_INVALID = {
    "ImplementationGuide-fhir.json": "ImplementationGuide.name is required (1..1) but missing",
    "ig-r4.json": "ImplementationGuide.name is required (1..1) but missing",
    "Questionnaire-qs1.json": "Questionnaire.item.linkId is required (1..1) but missing",
    **{
        f"SearchParameter-{cs}-extensions-{cs_type}-{p}.json": "SearchParameter.base is required (1..*) but missing"
        for cs, cs_type in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
        for p in ("author", "effective", "end", "keyword", "workflow")
    },
}


@cache
def examples() -> dict[str, dict]:
    out = {}
    for path in sorted(EXAMPLES.glob("*.json")):
        if path.name == "package.json" or path.name.startswith("."):
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "resourceType" in data:
            out[path.name] = data
    return out


needs_examples = pytest.mark.skipif(
    not EXAMPLES.exists(), reason="npm package hl7.fhir.r4.examples is not installed (run: make deps)"
)


@needs_examples
def test_all_official_examples_validate():
    v = validator()
    failures = {}
    for name, resource in examples().items():
        errors = [i for i in v.validate(resource) if i.severity == "error"]
        if errors:
            failures[name] = errors[0].message
    assert len(examples()) > 5000
    assert set(failures) == set(KNOWN_INVALID), {k: v for k, v in failures.items() if k not in KNOWN_INVALID}


def _one_per_type() -> list[str]:
    if not EXAMPLES.exists():
        return []
    chosen: dict[str, str] = {}
    for name, resource in examples().items():
        if name in KNOWN_INVALID or len(json.dumps(resource)) > 200_000:
            continue
        if resource["resourceType"] == "AuditEvent":
            continue  # the audit trail is written by the platform only (POST is 405)
        chosen.setdefault(resource["resourceType"], name)
    return sorted(chosen.values())


def _strip(resource: dict) -> dict:
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


@needs_examples
def test_one_example_of_every_type_round_trips(client):
    names = _one_per_type()
    assert len(names) >= 139  # every R4 resource type with an example, less AuditEvent
    for name in names:
        original = examples()[name]
        rtype = original["resourceType"]
        created = client.post(f"/{rtype}", json=original)
        assert created.status_code == 201, (name, created.text[:500])
        read = client.get(f"/{rtype}/{created.json()['id']}").json()
        assert _strip(read) == _strip(original), name
