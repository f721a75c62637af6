"""Custom ``SearchParameter`` resources created at run time (R4 §3.1.1.1, SearchParameter).

An *active* SearchParameter with a supported type and a FHIRPath expression becomes searchable
on its base types as soon as it is written (in the same transaction); resources written before
need ``$reindex``. Draft and retired ones are stored but not used. A code may not redefine one of
the base specification's parameters. Other instances pick changes up within ``REFRESH_SECONDS``.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Connection, select

from telemed.db.schema import resource as t_resource
from telemed.fhir.definitions import load
from telemed.fhir.search.fhirpath import compile_expression
from telemed.fhir.search.registry import INDEXED_TYPES, SearchParam, registry
from telemed.kernel.errors import incorrect

REFRESH_SECONDS = 5.0


def compile_parameter(resource: dict) -> list[tuple[str, SearchParam]]:
    """The (base type, parameter) pairs an active SearchParameter defines; raises 400 if unusable."""
    defs = load()
    code, ptype, expr = resource.get("code"), resource.get("type"), resource.get("expression")
    if ptype not in INDEXED_TYPES or ptype == "composite" and not resource.get("component"):
        raise incorrect(
            f"SearchParameter.type {ptype!r} is not supported for custom parameters", "SearchParameter.type"
        )
    if not expr:
        raise incorrect("An active SearchParameter needs an expression", "SearchParameter.expression")
    bases = set(resource.get("base", []))
    if bases & {"Resource", "DomainResource"}:
        bases = set(defs.resource_types)
    out = []
    for rt in sorted(bases):
        if not defs.is_resource_type(rt):
            raise incorrect(f"SearchParameter.base {rt!r} is not a resource type", "SearchParameter.base")
        if registry().is_base(rt, code) and resource.get("url") not in _base_urls():
            raise incorrect(f"{rt} already has a search parameter {code!r}", "SearchParameter.code")
        evaluate, compiled = compile_expression(rt, expr)
        out.append(
            (
                rt,
                SearchParam(
                    code=code,
                    type=ptype,
                    expression=expr,
                    url=resource.get("url", ""),
                    evaluate=evaluate,
                    targets=tuple(resource.get("target", ())),
                    compiled=compiled,
                ),
            )
        )
    return out


def _base_urls() -> set[str]:
    return {sp["url"] for sp in load().search_parameters}


def is_custom(resource: dict) -> bool:
    return resource.get("status") == "active" and resource.get("url") not in _base_urls()


class CustomParameters:
    """Loads active custom SearchParameters into the registry; refreshed on write and by age."""

    def __init__(self) -> None:
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def refresh_if_stale(self, conn: Connection) -> None:
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            self.reload(conn)

    def reload(self, conn: Connection) -> None:
        rows = conn.execute(
            select(t_resource.c.content).where(
                t_resource.c.resource_type == "SearchParameter", t_resource.c.deleted.is_(False)
            )
        ).all()
        custom: dict[str, dict[str, SearchParam]] = {}
        for (content,) in rows:
            if content and is_custom(content):
                try:
                    for rt, param in compile_parameter(content):
                        custom.setdefault(rt, {})[param.code] = param
                except Exception:  # noqa: BLE001 - one bad definition must not disable the others
                    continue
        with self._lock:
            registry().set_custom(custom)
            self._loaded_at = time.monotonic()


class SearchParameterHooks:
    """Repository write hooks: check custom SearchParameters and activate them immediately."""

    def __init__(self, params: CustomParameters):
        self.params = params

    def before_write(self, repo, resource: dict) -> dict:
        if resource.get("resourceType") == "SearchParameter" and is_custom(resource):
            compile_parameter(resource)
        return resource

    def after_write(self, repo, stored) -> None:
        if stored.resource.get("resourceType") == "SearchParameter":
            self.params.reload(repo.conn)
        else:
            self.params.refresh_if_stale(repo.conn)

    def after_delete(self, repo, resource_type: str, id_: str) -> None:
        if resource_type == "SearchParameter":
            self.params.reload(repo.conn)

    def before_search(self, repo) -> None:
        self.params.refresh_if_stale(repo.conn)
