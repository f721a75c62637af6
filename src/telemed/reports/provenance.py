"""FHIR R4 Provenance of a report signature (R4 §6.3 Provenance; Signature datatype §2.24.0.25).

One Provenance per signed report version: ``target`` is the version-specific reference of what was
signed, ``signature[0]`` holds the detached JWS (``sigFormat`` ``application/jose``) over the
report's canonical JSON (``targetFormat`` ``application/fhir+json``). The signature type is the
Author's Signature of ASTM E1762-95 (2013), the value set R4 binds ``Signature.type`` to.

An amendment is a new report version with its own Provenance: activity ``amend``, the reason in
``reason``, and the previous signed version as an ``entity`` with role ``revision`` (W3C PROV
``wasRevisionOf``).
"""

from __future__ import annotations

import base64
from datetime import datetime

from telemed.kernel.clock import fhir_instant
from telemed.reports.signing import Signature

SIGNATURE_TYPE = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.1",
    "display": "Author's Signature",
}
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
# ISO 21089 record lifecycle events (the codes R5 uses for Provenance.activity) with the nearest
# code of the R4 value set next to them, so R4-only systems still understand the activity.
ATTEST = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle", "code": "attest", "display": "Attest"},
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-DocumentCompletion",
            "code": "LA",
            "display": "legally authenticated",
        },
    ]
}
AMEND = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle", "code": "amend", "display": "Amend"},
        {"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE", "display": "revise"},
    ]
}
SIG_FORMAT = "application/jose"
TARGET_FORMAT = "application/fhir+json"


def versioned_reference(resource: dict) -> str:
    """``Type/id/_history/n`` of a stored resource (R4 §2.3.0.3 version-specific references)."""
    return f"{resource['resourceType']}/{resource['id']}/_history/{resource['meta']['versionId']}"


def build_provenance(
    target: dict,
    signature: Signature,
    practitioner: str,
    *,
    agent_type: str = "author",
    recorded: datetime,
    signer_name: str | None = None,
    signer_title: str | None = None,
    signer_institution: str | None = None,
    amendment_reason: str | None = None,
    revision_of: str | None = None,
) -> dict:
    """The Provenance recording that ``practitioner`` signed the stored resource ``target``.

    ``practitioner`` is a ``Practitioner/<id>`` reference (or a bare id); ``agent_type`` is
    ``author`` or ``verifier`` (provenance-participant-type). Name, professional title and
    institution are kept as displays: they describe the signer as they were when signing.
    ``revision_of`` is the versioned reference of the report version an amendment replaces.
    """
    if agent_type not in ("author", "verifier"):
        raise ValueError("agent_type must be 'author' or 'verifier'")
    who = {"reference": practitioner if "/" in practitioner else f"Practitioner/{practitioner}"}
    if signer_name:
        who["display"] = signer_name
    agent: dict = {
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": agent_type, "display": agent_type.capitalize()}]},
        "who": who,
    }
    if signer_title:
        agent["role"] = [{"text": signer_title}]
    if signer_institution:
        agent["onBehalfOf"] = {"display": signer_institution}
    provenance: dict = {
        "resourceType": "Provenance",
        "target": [{"reference": versioned_reference(target)}],
        "occurredDateTime": fhir_instant(signature.signed_at),
        "recorded": fhir_instant(recorded),
        "activity": AMEND if amendment_reason is not None else ATTEST,
        "agent": [agent],
        "signature": [
            {
                "type": [SIGNATURE_TYPE],
                "when": fhir_instant(signature.signed_at),
                "who": dict(who),
                "targetFormat": TARGET_FORMAT,
                "sigFormat": SIG_FORMAT,
                "data": base64.b64encode(signature.jws.encode("ascii")).decode(),
            }
        ],
    }
    if amendment_reason is not None:
        provenance["reason"] = [{"text": amendment_reason}]
    if revision_of:
        provenance["entity"] = [{"role": "revision", "what": {"reference": revision_of}}]
    return provenance


def signature_jws(provenance: dict) -> str | None:
    """The JWS of the Provenance's first signature in our format, or None."""
    for sig in provenance.get("signature") or []:
        if sig.get("sigFormat") == SIG_FORMAT and sig.get("data"):
            try:
                return base64.b64decode(sig["data"], validate=True).decode("ascii")
            except ValueError:
                return None
    return None


def signed_target(provenance: dict) -> str | None:
    """The version-specific reference the Provenance's signature covers."""
    targets = provenance.get("target") or []
    ref = (targets[0] or {}).get("reference") if targets else None
    return ref if ref and "/_history/" in ref else None
