"""The server's CapabilityStatement (R4 §3.1.0.10): what is really supported, nothing more."""

from __future__ import annotations

from functools import cache

from telemed import __version__
from telemed.fhir.definitions import load

TYPE_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
SEARCH_PARAMS = [
    {"name": "_id", "type": "token", "documentation": "Logical id; comma-separated values are ORed"},
    {"name": "_count", "type": "number", "documentation": "Page size (at most 1000)"},
    {"name": "_offset", "type": "number", "documentation": "Paging offset; use the Bundle's next link"},
]
IDENTIFIER_PARAM = {"name": "identifier", "type": "token", "documentation": "[system]|[value]"}


@cache
def _resources() -> list[dict]:
    defs = load()
    out = []
    for name in sorted(defs.resource_types):
        params = list(SEARCH_PARAMS)
        if "identifier" in defs.types[name]["elements"]:
            params.insert(1, IDENTIFIER_PARAM)
        out.append(
            {
                "type": name,
                "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "logical"],
                "searchParam": params,
            }
        )
    return out


def capability_statement(base_url: str) -> dict:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "Telemed",
        "kind": "instance",
        "software": {"name": "Telemed", "version": __version__},
        "implementation": {"description": "Telemed regional telemedicine data platform", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Every resource is validated against the FHIR R4 base StructureDefinitions (element names "
                    "and types, cardinality, required code bindings, reference format). FHIRPath invariants "
                    "other than ele-1 and profiles in meta.profile are not checked. Search supports only "
                    "_id and identifier; unsupported parameters are rejected with 400, never ignored."
                ),
                "security": {
                    "cors": False,
                    "description": "Bearer access token (JWT signed by the server) in the Authorization header",
                },
                "resource": _resources(),
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            }
        ],
    }
