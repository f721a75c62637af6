"""``Patient/{id}/$everything`` (R4 Patient §5.1.8.3 / OperationDefinition Patient-everything).

The patient and every resource in its Patient compartment, with ``_since``, ``_type`` and
``_count``; pages follow the (type, id) order, so they stay consistent while data changes.
"""

from __future__ import annotations

from urllib.parse import urlencode

from telemed.fhir.definitions import load
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.search.query import parse
from telemed.fhir.search.types.date import parse_range
from telemed.fhir.store import searching
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import incorrect

MAX_COUNT = 1000


def patient_everything(repo: Repository, req: FhirRequest, patient_id: str) -> FhirResponse:
    repo.read("Patient", patient_id)  # 404/410 (and access rules) first
    params = dict(req.params)
    types = sorted({"Patient", *load().patient_compartment})
    if "_type" in params:
        wanted = {t.strip() for t in params["_type"].split(",") if t.strip()}
        unknown = wanted - set(types)
        if unknown:
            raise incorrect(f"_type: {sorted(unknown)} are not in the Patient compartment", "_type")
        types = sorted(wanted)
    raw_count = params.get("_count", "100")
    if not raw_count.isdigit():
        raise incorrect("_count must be a non-negative integer", "_count")
    filters = []
    if "_since" in params:
        try:
            parse_range(params["_since"])
        except ValueError:
            raise incorrect(f"_since: {params['_since']!r} is not a valid instant", "_since") from None
        filters = [("_lastUpdated", "ge" + params["_since"])]
    queries = []
    for rt in types:
        q = parse(rt, filters, strict=True)
        q.compartment = ("Patient", patient_id)
        queries.append(q)
    page, cursor = searching.search_types(
        repo, queries, req.base_url, min(int(raw_count), MAX_COUNT), params.get("_cursor")
    )
    links = [{"relation": "self", "url": f"{req.base_url}/{req.path}?{urlencode(req.params)}".rstrip("?")}]
    if cursor:
        kept = [(k, v) for k, v in req.params if k != "_cursor"] + [("_cursor", cursor)]
        links.append({"relation": "next", "url": f"{req.base_url}/{req.path}?{urlencode(kept)}"})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if page:
        bundle["entry"] = [
            {
                "fullUrl": f"{req.base_url}/{s.resource['resourceType']}/{s.resource['id']}",
                "resource": s.resource,
                "search": {"mode": "match"},
            }
            for s in page
        ]
    return FhirResponse(200, bundle, {}, "operation-everything")
