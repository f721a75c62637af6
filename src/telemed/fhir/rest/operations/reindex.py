"""``$reindex``: recompute search index rows after search parameters changed (as in HAPI/Medplum).

``POST [base]/[type]/[id]/$reindex`` runs at once. ``POST [base]/[type]/$reindex`` and
``POST [base]/$reindex`` queue a durable job (202 + ``Content-Location`` of ``$job-status``) that
walks the resources in id order, 500 per transaction, so it can resume after a restart.
"""

from __future__ import annotations

from sqlalchemy import select

from telemed.db.engine import unit_of_work
from telemed.db.jobs import JobContext, get_job
from telemed.db.schema import resource as t_resource
from telemed.fhir.rest.outcome import information
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, TelemedError

BATCH = 500


def _parameters(**values) -> dict:
    params = []
    for name, value in values.items():
        if value is None:
            continue
        key = {int: "valueInteger", float: "valueDecimal"}.get(type(value), "valueString")
        params.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": params}


def reindex_instance(repo: Repository, req: FhirRequest, rtype: str, id_: str) -> FhirResponse:
    repo.context.require(rtype, "write")
    stored = repo.read(rtype, id_)
    repo._reindex(rtype, id_, stored.resource)
    return FhirResponse(200, _parameters(count=1), {}, "operation-reindex")


def reindex_types(repo: Repository, req: FhirRequest, rtype: str | None) -> FhirResponse:
    types = [rtype] if rtype else sorted(repo.validator.defs.resource_types)
    for t in types:
        repo.context.require(t, "write")
    if repo.jobs is None:
        raise TelemedError(Category.UNAVAILABLE, "Background jobs are not running on this server")
    job_id = repo.jobs.submit(repo.conn, "reindex", {"types": types}, owner=repo.context.user)
    headers = {"Content-Location": f"{req.base_url}/$job-status/{job_id}"}
    return FhirResponse(
        202, information(f"Reindexing {len(types)} resource type(s) as job {job_id}"), headers, "operation-reindex"
    )


def job_status(repo: Repository, req: FhirRequest, job_id: str) -> FhirResponse:
    job = get_job(repo.conn, job_id)
    if job is None or job.owner != repo.context.user:
        raise TelemedError(Category.NOT_FOUND, f"No job {job_id}")
    body = _parameters(
        status=job.status,
        kind=job.kind,
        progress=round(job.progress, 4),
        message=job.message,
        count=(job.result or {}).get("count"),
    )
    return FhirResponse(200, body, {}, "operation-job-status")


def run_reindex(ctx: JobContext, repository) -> dict:
    """The job: every resource of the given types gets its index rows rebuilt."""
    types = ctx.params["types"]
    count = 0
    for n, rtype in enumerate(types):
        after = ""
        while True:
            with unit_of_work(ctx.engine) as conn:
                repo = repository(conn, AccessContext.system())
                rows = conn.execute(
                    select(t_resource.c.id, t_resource.c.content, t_resource.c.has_blobs)
                    .where(
                        t_resource.c.resource_type == rtype, t_resource.c.deleted.is_(False), t_resource.c.id > after
                    )
                    .order_by(t_resource.c.id)
                    .limit(BATCH)
                ).all()
                for row in rows:
                    repo._reindex(rtype, row.id, repo._load(row.content, row.has_blobs))
            count += len(rows)
            if len(rows) < BATCH:
                break
            after = rows[-1].id
            ctx.progress(n / len(types), f"{rtype}: {count} resources reindexed")
        ctx.progress((n + 1) / len(types), f"{count} resources reindexed")
    return {"count": count}
