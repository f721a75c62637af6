"""``_summary`` and ``_elements`` (R4 §3.1.1.5.7-8): subsets of a resource, tagged SUBSETTED."""

from __future__ import annotations

from telemed.fhir.definitions import load

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = ("resourceType", "id", "meta")


def _mark(out: dict) -> dict:
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out


def _top_level(resource: dict, keep: set[str]) -> dict:
    return {k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep or k in ALWAYS}


def _mandatory_and(resource: dict, flag: str | None) -> set[str]:
    elements = load().types[resource["resourceType"]]["elements"]
    keep = set()
    for key, info in elements.items():
        if "." in key:
            continue
        name = key[:-3] if key.endswith("[x]") else key
        if info["min"] >= 1 or (flag and info.get(flag)):
            if key.endswith("[x]"):
                keep |= {k for k in resource if k.startswith(name)}
            else:
                keep.add(name)
    return keep


def summary(resource: dict, mode: str | None) -> dict:
    if mode in (None, "false"):
        return resource
    if mode == "data":
        return _mark({k: v for k, v in resource.items() if k != "text"})
    if mode == "text":
        return _mark(_top_level(resource, {"text"} | _mandatory_and(resource, None)))
    return _mark(_top_level(resource, _mandatory_and(resource, "summary")))  # true


def elements(resource: dict, names: list[str] | None) -> dict:
    if not names:
        return resource
    return _mark(_top_level(resource, set(names) | _mandatory_and(resource, None)))
