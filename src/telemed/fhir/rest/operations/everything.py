"""``Patient/{id}/$everything`` (R4 Patient §5.1.8.3 / OperationDefinition Patient-everything).

The patient and every resource in its Patient compartment, with ``_since``, ``_type`` and
``_count``; pages follow the (type, id) order, so they stay consistent while data changes.
"""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy import select

from telemed.fhir.definitions import load
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.search.query import Query
from telemed.fhir.store import search_sql
from telemed.fhir.store.repository import Repository
from telemed.kernel.clock import parse_fhir_datetime
from telemed.kernel.errors import incorrect

MAX_COUNT = 1000


def patient_everything(repo: Repository, req: FhirRequest, patient_id: str) -> FhirResponse:
    repo.read("Patient", patient_id)  # 404/410 (and, later, access rules) first
    params = dict(req.params)
    types = sorted({"Patient", *load().patient_compartment})
    if "_type" in params:
        wanted = {t.strip() for t in params["_type"].split(",") if t.strip()}
        unknown = wanted - set(types)
        if unknown:
            raise incorrect(f"_type: {sorted(unknown)} are not in the Patient compartment", "_type")
        types = sorted(wanted)
    since = None
    if "_since" in params:
        try:
            since = parse_fhir_datetime(params["_since"])
        except ValueError:
            raise incorrect(f"_since: {params['_since']!r} is not a valid instant", "_since") from None
    count = min(int(params.get("_count", "100")), MAX_COUNT) if params.get("_count", "1").isdigit() else None
    if count is None:
        raise incorrect("_count must be a non-negative integer", "_count")
    after = params.get("_cursor")  # "Type/id" of the last entry of the previous page
    entries: list[dict] = []
    last = None
    for rt in types:
        if after and rt < after.split("/")[0]:
            continue
        q = Query(rt)
        q.compartment = ("Patient", patient_id)
        res, conds = search_sql.base_select(q, req.base_url)
        if since is not None:
            conds.append(res.c.last_updated >= since)
        if after and rt == after.split("/")[0]:
            conds.append(res.c.id > after.split("/", 1)[1])
        rows = repo.conn.execute(select(res).where(*conds).order_by(res.c.id).limit(count + 1 - len(entries))).all()
        for r in rows:
            if len(entries) == count:
                break
            resource = repo._load(r.content, r.has_blobs)
            entries.append(
                {"fullUrl": f"{req.base_url}/{rt}/{r.id}", "resource": resource, "search": {"mode": "match"}}
            )
            last = f"{rt}/{r.id}"
        if len(entries) >= count:
            break
    links = [{"relation": "self", "url": f"{req.base_url}/{req.path}?{urlencode(req.params)}".rstrip("?")}]
    if len(entries) == count and last is not None and _has_more(repo, req, patient_id, types, since, last):
        kept = [(k, v) for k, v in req.params if k != "_cursor"] + [("_cursor", last)]
        links.append({"relation": "next", "url": f"{req.base_url}/{req.path}?{urlencode(kept)}"})
    bundle = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, bundle, {}, "operation-everything")


def _has_more(repo, req, patient_id, types, since, last: str) -> bool:
    last_type, last_id = last.split("/", 1)
    for rt in types:
        if rt < last_type:
            continue
        q = Query(rt)
        q.compartment = ("Patient", patient_id)
        res, conds = search_sql.base_select(q, req.base_url)
        if since is not None:
            conds.append(res.c.last_updated >= since)
        if rt == last_type:
            conds.append(res.c.id > last_id)
        if repo.conn.execute(select(res.c.id).where(*conds).limit(1)).first():
            return True
    return False
