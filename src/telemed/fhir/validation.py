"""Structural validation of FHIR R4 JSON resources against the base specification.

Implements the rules of FHIR R4 §2.6.2 (JSON representation) and the StructureDefinitions of the
base spec: element names (including ``[x]`` choice types and ``_element`` primitive extensions),
element types (primitive regexes, nested data types, backbone elements, ``contentReference``),
cardinality (min/max, arrays vs. single values), *required* bindings of ``code`` elements, the
reference format (§2.3.0.1) and allowed reference targets, and ele-1 (no empty elements).

Not checked: FHIRPath invariants other than ele-1, profiles (``meta.profile``), extensible/preferred
bindings and code systems without a local expansion (UCUM, MIME types, languages).

Each problem is reported with a FHIRPath ``expression`` that names the offending element, e.g.
``Patient.name[0].given[1]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from telemed.fhir.definitions import Definitions, load
from telemed.kernel.errors import Issue

# Ids in references are not length-checked: HL7's own examples reference ids longer than 64.
_REL_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]+(/_history/[A-Za-z0-9\-.]+)?")
_ABS_REFERENCE = re.compile(r"(https?|urn):\S+")
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class _Level:
    """What one object level of a structure allows: its element keys, choices and required ones."""

    choices: tuple[tuple[str, str], ...]  # (json name prefix, element key ending in [x])
    required: tuple[tuple[str, str], ...]  # (json name or choice prefix, element key)


class Validator:
    def __init__(self, definitions: Definitions | None = None):
        self.defs = definitions or load()

    def validate(self, resource: object) -> list[Issue]:
        issues: list[Issue] = []
        self._resource(resource, None, issues)
        return issues

    # -- resources -----------------------------------------------------------------------------
    def _resource(self, obj: object, expr: str | None, issues: list[Issue]) -> None:
        if not isinstance(obj, dict):
            issues.append(Issue("A resource must be a JSON object", "structure", expr))
            return
        rt = obj.get("resourceType")
        if not isinstance(rt, str) or not self.defs.is_resource_type(rt):
            issues.append(
                Issue(f"Unknown or missing resourceType {rt!r}", "structure", f"{expr}.resourceType" if expr else None)
            )
            return
        self._object(obj, rt, "", expr or rt, issues, is_resource=True)

    # -- objects -------------------------------------------------------------------------------
    def _object(
        self, obj: object, type_name: str, prefix: str, expr: str, issues: list[Issue], is_resource: bool = False
    ) -> None:
        if not isinstance(obj, dict):
            issues.append(Issue(f"{expr} must be a JSON object", "structure", expr))
            return
        if not obj and not is_resource:  # ele-1 is about elements; a bare resource is legal
            issues.append(Issue(f"{expr} must not be empty (ele-1)", "structure", expr))
            return
        struct = self.defs.structure(type_name)
        elements = struct["elements"]
        level = _level(self.defs, type_name, prefix)
        for key, value in obj.items():
            if is_resource and key == "resourceType":
                continue
            is_ext = key.startswith("_")
            name = key[1:] if is_ext else key
            el_key = prefix + name
            info = elements.get(el_key)
            type_code: str | None = None
            if info is not None and "[x]" not in el_key:
                types = info.get("types", [])
                type_code = types[0] if len(types) == 1 else None
            else:
                info = None
                for base, choice_key in level.choices:
                    if name.startswith(base) and len(name) > len(base):
                        suffix = name[len(base) :]
                        for t in elements[choice_key].get("types", []):
                            if t[0].upper() + t[1:] == suffix:
                                info, type_code = elements[choice_key], t
                                break
                    if info is not None:
                        break
                if info is None:
                    issues.append(Issue(f"Unknown element '{key}'", "structure", f"{expr}.{key}"))
                    continue
            child_expr = f"{expr}.{name}"
            is_array = info["max"] != "1"
            if isinstance(value, list):
                if not is_array:
                    issues.append(Issue(f"{child_expr} must be a single value, not an array", "structure", child_expr))
                    continue
                if not value:
                    issues.append(Issue(f"{child_expr} must not be an empty array (ele-1)", "structure", child_expr))
                    continue
                items = [(f"{child_expr}[{i}]", v) for i, v in enumerate(value)]
                if info["max"] not in ("*", "1") and len(value) > int(info["max"]):
                    issues.append(Issue(f"{child_expr} allows at most {info['max']} items", "structure", child_expr))
            else:
                if is_array:
                    issues.append(Issue(f"{child_expr} must be an array", "structure", child_expr))
                    continue
                items = [(child_expr, value)]
            for item_expr, item in items:
                if is_ext:
                    if item is not None:
                        self._object(item, "Element", "", item_expr, issues)
                    continue
                if item is None:
                    # null is only allowed as a placeholder aligned with a _element extension array.
                    if "_" + name not in obj:
                        issues.append(Issue(f"{item_expr} must not be null", "structure", item_expr))
                    continue
                self._value(item, type_code, info, type_name, el_key, item_expr, issues)
        for json_name, el_key in level.required:
            if el_key.endswith("[x]"):
                if not any(k.lstrip("_").startswith(json_name) for k in obj):
                    issues.append(Issue(f"{expr}.{json_name}[x] is required", "required", f"{expr}.{json_name}[x]"))
            elif json_name not in obj and "_" + json_name not in obj:
                issues.append(Issue(f"{expr}.{json_name} is required", "required", f"{expr}.{json_name}"))

    # -- values --------------------------------------------------------------------------------
    def _value(
        self,
        item: object,
        type_code: str | None,
        info: dict,
        type_name: str,
        el_key: str,
        expr: str,
        issues: list[Issue],
    ) -> None:
        if "ref" in info:
            self._object(item, type_name, info["ref"] + ".", expr, issues)
            return
        if info.get("inline"):
            self._object(item, type_name, el_key + ".", expr, issues)
            return
        if type_code is None:
            issues.append(Issue(f"{expr} has no single type", "structure", expr))
            return
        if type_code in self.defs.primitives:
            self._primitive(item, type_code, info, expr, issues)
        elif type_code in ("Resource", "DomainResource") or self.defs.is_resource_type(type_code):
            if (
                self.defs.is_resource_type(type_code)
                and isinstance(item, dict)
                and item.get("resourceType") != type_code
            ):
                issues.append(Issue(f"{expr} must be a {type_code}", "structure", f"{expr}.resourceType"))
                return
            self._resource(item, expr, issues)
        else:
            self._object(item, type_code, "", expr, issues)
            if type_code == "Reference" and isinstance(item, dict):
                self._reference(item, info, expr, issues)

    def _primitive(self, item: object, type_code: str, info: dict, expr: str, issues: list[Issue]) -> None:
        if type_code == "boolean":
            if not isinstance(item, bool):
                issues.append(Issue(f"{expr} must be a JSON boolean", "value", expr))
            return
        if type_code in ("integer", "positiveInt", "unsignedInt"):
            if not isinstance(item, int) or isinstance(item, bool):
                issues.append(Issue(f"{expr} must be a JSON integer", "value", expr))
            elif not _INT32[0] <= item <= _INT32[1]:
                issues.append(Issue(f"{expr} is outside the 32-bit integer range", "value", expr))
            elif type_code == "positiveInt" and item < 1:
                issues.append(Issue(f"{expr} must be a positive integer", "value", expr))
            elif type_code == "unsignedInt" and item < 0:
                issues.append(Issue(f"{expr} must not be negative", "value", expr))
            return
        if type_code == "decimal":
            if not isinstance(item, (int, float)) or isinstance(item, bool):
                issues.append(Issue(f"{expr} must be a JSON number", "value", expr))
            return
        if not isinstance(item, str):
            issues.append(Issue(f"{expr} must be a JSON string ({type_code})", "value", expr))
            return
        if type_code == "xhtml":
            if "<div" not in item:
                issues.append(Issue(f"{expr} must be an XHTML <div>", "value", expr))
            return
        pattern = self.defs.primitives.get(type_code)
        if pattern is not None and not pattern.fullmatch(item):
            issues.append(Issue(f"{expr}: {item[:80]!r} is not a valid {type_code}", "value", expr))
            return
        vs = info.get("valueSet")
        if vs is not None and item not in self.defs.value_sets.get(vs, (item,)):
            issues.append(Issue(f"{expr}: {item!r} is not a code of the required value set {vs}", "code-invalid", expr))

    def _reference(self, item: dict, info: dict, expr: str, issues: list[Issue]) -> None:
        ref = item.get("reference")
        if not isinstance(ref, str):
            return
        m = _REL_REFERENCE.fullmatch(ref)
        if m:
            target = m.group(1)
            if not self.defs.is_resource_type(target):
                issues.append(
                    Issue(f"{expr}.reference: unknown resource type {target!r}", "value", f"{expr}.reference")
                )
            elif "targets" in info and target not in info["targets"]:
                # A warning, not an error: several of HL7's own R4 examples break target rules.
                allowed = ", ".join(info["targets"])
                msg = f"{expr}.reference: a {target} is not an allowed target here (allowed: {allowed})"
                issues.append(Issue(msg, "value", f"{expr}.reference", severity="warning"))
        elif not (ref.startswith("#") or _ABS_REFERENCE.fullmatch(ref)):
            issues.append(Issue(f"{expr}.reference: {ref!r} is not a valid reference", "value", f"{expr}.reference"))


@cache
def _level(defs: Definitions, type_name: str, prefix: str) -> _Level:
    elements = defs.structure(type_name)["elements"]
    choices, required = [], []
    for key, info in elements.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if "." in rest:
            continue
        name = rest[:-3] if rest.endswith("[x]") else rest
        if rest.endswith("[x]"):
            choices.append((name, key))
        if info["min"] >= 1:
            required.append((name, key))
    return _Level(tuple(choices), tuple(required))


@cache
def validator() -> Validator:
    return Validator()
