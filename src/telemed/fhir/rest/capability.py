"""The server's CapabilityStatement (R4 §3.1.0.10): what is really supported, nothing more."""

from __future__ import annotations

from functools import cache

from telemed import __version__
from telemed.fhir.definitions import load
from telemed.fhir.search.registry import registry

TYPE_INTERACTIONS = [
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
]  # fmt: skip
BUILT_IN_PARAMS = [
    {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
    {
        "name": "_lastUpdated",
        "type": "date",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    },
]


@cache
def _resources() -> list[dict]:
    defs = load()
    reg = registry()
    out = []
    for name in sorted(defs.resource_types):
        params = list(BUILT_IN_PARAMS)
        for code, sp in sorted(reg.params(name).items()):
            params.append({"name": code, "type": sp.type, "definition": sp.url})
        entry = {
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
            "searchInclude": ["*"]
            + sorted(f"{name}:{c}" for c, p in reg.params(name).items() if p.type == "reference"),
            "searchRevInclude": ["*"],
            "searchParam": params,
        }
        unsupported = reg.unsupported.get(name)
        if unsupported:
            entry["documentation"] = "Search parameters not supported: " + "; ".join(
                f"{code} ({reason})" for code, reason in unsupported
            )
        if name == "Patient":
            entry["operation"] = [
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
            ]
        out.append(entry)
    return out


def _with_custom_parameters(resources: list[dict]) -> list[dict]:
    """Add the SearchParameter resources defined at run time to the cached base statement."""
    custom = registry().custom
    if not custom:
        return resources
    out = []
    for r in resources:
        extra = [{"name": c, "type": p.type, "definition": p.url} for c, p in sorted(custom.get(r["type"], {}).items())]
        out.append({**r, "searchParam": r["searchParam"] + extra} if extra else r)
    return out


def capability_statement(base_url: str) -> dict:
    root = base_url.rsplit("/fhir", 1)[0]
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
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
                        "valueUri": base_url.replace("http", "ws", 1) + "/websocket",
                    }
                ],
                "documentation": (
                    "Every resource is validated against the FHIR R4 base StructureDefinitions (element names "
                    "and types, cardinality, required code bindings, reference format). FHIRPath invariants "
                    "other than ele-1 and profiles in meta.profile are not checked. Search implements the R4 base "
                    "SearchParameters of every type (listed per resource; unsupported ones are named in each "
                    "resource's documentation). Unknown parameters are ignored and reported in the Bundle "
                    "(Prefer: handling=strict rejects them). Token :in/:not-in/:above/:below, _text, _content, "
                    "_query, _list, _filter and quantity unit conversion are not supported. Bundle.total: without "
                    "_total it is given only when known without counting (the whole result is on the page, or a "
                    "sorted result is complete); _total=estimate counts up to 10,000 matches (no total beyond); "
                    "_total=accurate counts every match; _summary=count always counts."
                ),
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [
                                {"url": name, "valueUri": f"{root}/oauth/{path}"}
                                for name, path in (
                                    ("authorize", "authorize"),
                                    ("token", "token"),
                                    ("introspect", "introspect"),
                                    ("revoke", "revoke"),
                                )
                            ],
                        }
                    ],
                    "description": (
                        "OAuth 2.0 bearer tokens (SMART App Launch v2 scopes): authorization code with PKCE "
                        "for users, client credentials for hospital systems; /.well-known/smart-configuration."
                    ),
                },
                "resource": _with_custom_parameters(_resources()),
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            }
        ],
    }
