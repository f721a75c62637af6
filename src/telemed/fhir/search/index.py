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
    the relative references they are (R4 §3.1.1.4.10)."""
    reg = reg or registry()
    out: dict[str, list[dict]] = {}
    seen: set[tuple] = set()
    for code, sp in reg.params(resource["resourceType"]).items():
        try:
            nodes = sp.evaluate(resource)
        except Exception:  # noqa: BLE001 - a fallback FHIRPath error must not block the write
            continue
        for value, fhir_type in nodes:
            if sp.type == "composite":
                rows = composite.extract_components(value, sp.components)
            elif sp.type == "reference":
                rows = reference.extract(value, fhir_type, local_base)
            else:
                rows = EXTRACTORS[sp.type](value, fhir_type)
            for row in rows:
                table = row.pop("_table", sp.type)
                full = {"code": code + row.pop("_suffix", ""), **row}
                key = (table, tuple(sorted(full.items(), key=lambda kv: kv[0])))
                if key not in seen:
                    seen.add(key)
                    out.setdefault(table, []).append(full)
    return out
