"""The search parameters of each resource type: R4's base SearchParameters (R4 §3.1.1.1).

Built once from the compiled definitions. Parameters without an expression (``_text``,
``_content``, ``_query``) and the ``special`` ones (``near``) are listed as unsupported in the
CapabilityStatement instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from telemed.fhir.definitions import load
from telemed.fhir.search.fhirpath import Evaluator, compile_expression, top_keys

INDEXED_TYPES = {"string", "token", "reference", "date", "number", "quantity", "uri", "composite"}
# Served from the resource table itself, not from index rows.
BUILT_IN = {"_id", "_lastUpdated"}


@dataclass(frozen=True)
class Component:
    code: str
    type: str
    evaluate: Evaluator


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    expression: str
    url: str
    evaluate: Evaluator
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = field(default_factory=tuple)
    compiled: bool = True
    # JSON keys of the resource where the expression starts; None: evaluate it on every resource
    keys: frozenset[str] | None = None


@dataclass
class Registry:
    by_type: dict[str, dict[str, SearchParam]]
    unsupported: dict[str, list[tuple[str, str]]]  # resource type -> [(code, reason)]
    custom: dict[str, dict[str, SearchParam]] = field(default_factory=dict)  # SearchParameter resources
    _merged: dict[str, dict[str, SearchParam]] = field(default_factory=dict)

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        merged = self._merged.get(resource_type)
        if merged is None:
            merged = {**self.by_type.get(resource_type, {}), **self.custom.get(resource_type, {})}
            self._merged[resource_type] = merged
        return merged

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.params(resource_type).get(code)

    def is_base(self, resource_type: str, code: str) -> bool:
        return code in BUILT_IN or code in self.by_type.get(resource_type, {})

    def set_custom(self, custom: dict[str, dict[str, SearchParam]]) -> None:
        self.custom = custom
        self._merged = {}


@cache
def registry() -> Registry:
    defs = load()
    by_url = {sp["url"]: sp for sp in defs.search_parameters}
    by_type: dict[str, dict[str, SearchParam]] = {rt: {} for rt in defs.resource_types}
    unsupported: dict[str, list[tuple[str, str]]] = {rt: [] for rt in defs.resource_types}
    for sp in defs.search_parameters:
        bases = set(sp["base"])
        if bases & {"Resource", "DomainResource"}:
            bases = set(defs.resource_types)
        for rt in sorted(bases & defs.resource_types):
            code = sp["code"]
            if code in BUILT_IN:
                continue
            if sp["type"] not in INDEXED_TYPES or not sp.get("expression"):
                unsupported[rt].append((code, f"{sp['type']} parameter without a supported expression"))
                continue
            evaluate, compiled = compile_expression(rt, sp["expression"])
            components = []
            for comp in sp.get("component", []):
                ref = by_url.get(comp["definition"])
                if ref is None:
                    break
                if "%resource" in comp["expression"]:
                    break
                components.append(Component(ref["code"], ref["type"], relative_evaluator(comp["expression"])))
            if sp["type"] == "composite" and len(components) != len(sp.get("component", [])):
                unsupported[rt].append((code, "composite with unknown components"))
                continue
            by_type[rt][code] = SearchParam(
                code=code,
                type=sp["type"],
                expression=sp["expression"],
                url=sp["url"],
                evaluate=evaluate,
                targets=tuple(sp.get("target", ())),
                components=tuple(components),
                compiled=compiled,
                keys=top_keys(rt, sp["expression"]) if compiled else None,
            )
    return Registry(by_type, unsupported)


@cache
def relative_evaluator(expr: str) -> Evaluator:
    """Component expressions are relative to the composite's node: ``code``, ``value.as(Quantity)``,
    ``value.as(Quantity) | value.as(Range)``. Choice elements are found by their JSON key suffix."""
    primitives = load().primitives
    paths = []
    for part in expr.split("|"):
        steps: list[tuple[str, str]] = []
        for raw in part.strip().split("."):
            if raw.startswith("as(") and raw.endswith(")"):
                steps.append(("as", raw[3:-1]))
            else:
                steps.append(("child", raw))
        paths.append(steps)

    def type_of(suffix: str) -> str:
        low = suffix[0].lower() + suffix[1:]
        return low if low in primitives or low == "dateTime" else suffix

    def run(node: dict) -> list:
        out = []
        for steps in paths:
            nodes = [(node, None)]
            for kind, arg in steps:
                nxt = []
                for value, t in nodes:
                    if kind == "as":
                        if t is not None and t.lower() == arg.lower():
                            nxt.append((value, t))
                        continue
                    if not isinstance(value, dict):
                        continue
                    if arg in value:
                        items = value[arg] if isinstance(value[arg], list) else [value[arg]]
                        nxt.extend((item, None) for item in items)
                        continue
                    for key, v in value.items():
                        if key.startswith(arg) and len(key) > len(arg) and key[len(arg)].isupper():
                            nxt.append((v, type_of(key[len(arg) :])))
                nodes = nxt
            out.extend(nodes)
        return out

    return run
