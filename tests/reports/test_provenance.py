"""The Provenance of a signature (R4 Provenance, Signature datatype)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from telemed.reports import Signature, build_provenance
from telemed.reports.provenance import signature_jws, signed_target

WHEN = datetime(2026, 3, 3, 6, 15, tzinfo=UTC)
REPORT = {"resourceType": "DiagnosticReport", "id": "r1", "meta": {"versionId": "2"}, "status": "final"}
SIG = Signature("eyJhbGciOiJFZERTQSJ9..c2ln", "kid-1", WHEN)


def test_author_signature():
    p = build_provenance(
        REPORT, SIG, "doc-7", recorded=WHEN, signer_name="李明华", signer_title="主任医师", signer_institution="省医院"
    )
    assert p["target"] == [{"reference": "DiagnosticReport/r1/_history/2"}]
    assert p["recorded"] == "2026-03-03T06:15:00.000Z"
    assert p["activity"]["coding"][0]["code"] == "attest"
    agent = p["agent"][0]
    assert agent["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
        "code": "author",
        "display": "Author",
    }
    assert agent["who"] == {"reference": "Practitioner/doc-7", "display": "李明华"}
    assert agent["role"] == [{"text": "主任医师"}] and agent["onBehalfOf"] == {"display": "省医院"}
    sig = p["signature"][0]
    assert sig["type"] == [
        {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1", "display": "Author's Signature"}
    ]
    assert sig["when"] == "2026-03-03T06:15:00.000Z"
    assert sig["who"]["reference"] == "Practitioner/doc-7"
    assert (sig["sigFormat"], sig["targetFormat"]) == ("application/jose", "application/fhir+json")
    assert base64.b64decode(sig["data"]).decode() == SIG.jws
    assert signature_jws(p) == SIG.jws and signed_target(p) == "DiagnosticReport/r1/_history/2"
    assert "reason" not in p and "entity" not in p


def test_amendment():
    p = build_provenance(
        REPORT,
        SIG,
        "Practitioner/doc-7",
        agent_type="verifier",
        recorded=WHEN,
        amendment_reason="更正诊断",
        revision_of="DiagnosticReport/r1/_history/1",
    )
    assert [c["code"] for c in p["activity"]["coding"]] == ["amend", "UPDATE"]
    assert p["reason"] == [{"text": "更正诊断"}]
    assert p["entity"] == [{"role": "revision", "what": {"reference": "DiagnosticReport/r1/_history/1"}}]
    assert p["agent"][0]["type"]["coding"][0]["code"] == "verifier"
