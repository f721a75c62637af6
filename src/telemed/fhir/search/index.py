"""Index rows extracted from a resource on write, in the same transaction as the resource itself.

Every parameter of the resource's type is evaluated (its compiled FHIRPath expression) and each
value becomes rows of that parameter type's index table (R4 §3.1.1.4).
"""

from __future__ import annotations

from telemed.fhir.search.registry import Registry, registry
from telemed.fhir.search.types import composite, date, number, quantity, reference, string, token, uri

EXTRACTORS = {
    "string": string.extract,
    "token": token.extract,
    "reference": reference.extract,
    "date": date.extract,
    "number": number.extract,
    "quantity": quantity.extract,
    "uri": uri.extract,
}


def index_rows(resource: dict, reg: Registry | None = None, local_base: str | None = None) -> dict[str, list[dict]]:
    """Rows per index table kind (``string``, ``token``, ...), each with its ``code``.

    ``local_base`` is this server's FHIR base URL: absolute references under it are indexed as
    the relative references they are (R4 §3.1.1.4.10).

    A parameter whose expression starts at elements absent from the resource is skipped without
    evaluating it, and each value is extracted once per kind however many parameters reach it
    (an Observation's ``code`` is read by ``code``, ``combo-code`` and six composites)."""
    reg = reg or registry()
    out: dict[str, list[dict]] = {}
    seen: set[tuple] = set()
    present = resource.keys()
    memo: dict[tuple, tuple[object, list[dict]]] = {}

    def extract(kind: str, value: object, fhir_type: str | None) -> list[dict]:
        key = (kind, id(value), fhir_type)
        hit = memo.get(key)
        if hit is not None and hit[0] is value:  # the value is held by the memo: its id cannot be reused
            return hit[1]
        rows = (
            reference.extract(value, fhir_type, local_base)
            if kind == "reference"
            else EXTRACTORS[kind](value, fhir_type)
        )
        memo[key] = (value, rows)
        return rows

    def evaluate(component, node: object) -> list:
        key = ("component", id(component.evaluate), id(node))  # one evaluator per expression
        hit = memo.get(key)
        if hit is not None and hit[0] is node:
            return hit[1]
        nodes = component.evaluate(node)
        memo[key] = (node, nodes)
        return nodes

    for code, sp in reg.params(resource["resourceType"]).items():
        if sp.keys is not None and present.isdisjoint(sp.keys):
            continue
        try:
            nodes = sp.evaluate(resource)
        except Exception:  # noqa: BLE001 - a fallback FHIRPath error must not block the write
            continue
        for value, fhir_type in nodes:
            if sp.type == "composite":
                rows = composite.extract_components(value, sp.components, extract, evaluate)
            else:
                rows = extract(sp.type, value, fhir_type)
            for row in rows:
                if "_table" in row or "_suffix" in row:
                    table = row.get("_table", sp.type)
                    full = {"code": code + row.get("_suffix", "")}
                    full.update((k, v) for k, v in row.items() if k not in ("_table", "_suffix"))
                else:
                    table = sp.type
                    full = {"code": code, **row}
                key = (table, tuple(full.items()))
                if key not in seen:
                    seen.add(key)
                    out.setdefault(table, []).append(full)
    return out
