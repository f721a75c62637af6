"""FHIR Bulk Data Access ``$export`` (Bulk Data IG v2.0.0, https://hl7.org/fhir/uv/bulkdata/export.html).

Kick-off (``[base]/$export``, ``[base]/Patient/$export``, ``[base]/Group/{id}/$export``, GET with
query parameters or POST with a ``Parameters`` body) queues a durable ``bulk-export`` job and
answers 202 with a ``Content-Location`` to poll. Polling answers 202 with ``X-Progress`` while the
job runs, then 200 with the manifest; DELETE cancels (a later poll is 404). Each output file is
NDJSON of one resource type, at most :data:`MAX_PER_FILE` lines, kept in the blob store.

The export is a view as of ``transactionTime`` (the kick-off instant): a resource changed later is
exported as its version at that instant, so a job restarted after a crash writes the same files.
"""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
from sqlalchemy import or_, select, true, update

from telemed.db.engine import unit_of_work
from telemed.db.jobs import JobContext, cancel_job, get_job
from telemed.db.schema import INDEX_TABLES
from telemed.db.schema import job as t_job
from telemed.db.schema import resource as t_resource
from telemed.db.schema import resource_history as t_history
from telemed.fhir.definitions import load
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.store import access, protect
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.blobs import BlobStore
from telemed.kernel.clock import as_utc, fhir_instant, parse_fhir_datetime
from telemed.kernel.errors import Category, TelemedError, incorrect, not_found

KIND = "bulk-export"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = {NDJSON, "application/ndjson", "ndjson"}
UNSUPPORTED = {"_elements", "patient", "includeAssociatedData", "_typeFilter", "_until"}
BATCH = 1000
MAX_PER_FILE = 10_000


# -- kick-off ----------------------------------------------------------------------------------
def _parameters(req: FhirRequest) -> list[tuple[str, str]]:
    """Query parameters, plus those of a POSTed ``Parameters`` resource (the name and its value[x])."""
    params = list(req.params)
    if req.method == "POST":
        body = req.body
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise incorrect("POST $export expects a Parameters resource as its body", code="structure")
        for p in body.get("parameter") or []:
            values = [v for k, v in p.items() if k.startswith("value") and isinstance(v, str)]
            if not p.get("name") or len(values) != 1:
                raise incorrect(f"Parameter {p.get('name')!r} needs one string-like value[x]", "Parameters.parameter")
            params.append((p["name"], values[0]))
    return params


def _readable(context: AccessContext, rtype: str) -> bool:
    try:
        context.require(rtype, "read")
        return True
    except TelemedError:
        return False


def _types(repo: Repository, level: str, values: list[str]) -> list[str]:
    allowed = set(repo.validator.defs.resource_types)
    if level != "system":
        allowed = {"Patient", *load().patient_compartment} & allowed
    if not values:  # everything the token may read
        return sorted(t for t in allowed if _readable(repo.context, t))
    wanted = {t.strip() for v in values for t in v.split(",") if t.strip()}
    unknown = wanted - allowed
    if unknown:
        where = "FHIR R4 resource types" if level == "system" else "in the Patient compartment"
        raise incorrect(f"_type: {sorted(unknown)} are not {where}", "_type")
    for t in wanted:
        repo.context.require(t, "read")  # 403 for an explicitly requested type the token cannot read
    return sorted(wanted)


def kick_off(repo: Repository, req: FhirRequest, level: str, group_id: str | None) -> FhirResponse:
    prefer = [p.strip() for p in (req.header("prefer") or "").replace(";", ",").split(",")]
    if "respond-async" not in prefer:
        raise incorrect("$export is asynchronous: send the header 'Prefer: respond-async'", "Prefer")
    params = _parameters(req)
    names = {k for k, _ in params}
    if names & UNSUPPORTED and "handling=lenient" not in prefer:
        raise incorrect(f"Unsupported $export parameters: {sorted(names & UNSUPPORTED)}", "parameter")
    fmt = [v for k, v in params if k == "_outputFormat"]
    if fmt and fmt[-1] not in OUTPUT_FORMATS:
        raise incorrect(f"_outputFormat {fmt[-1]!r} is not supported (only {NDJSON})", "_outputFormat")
    since = None
    if "_since" in names:
        raw = [v for k, v in params if k == "_since"][-1]
        try:
            since = parse_fhir_datetime(raw).isoformat()
        except ValueError:
            raise incorrect(f"_since: {raw!r} is not a valid FHIR instant", "_since") from None
    types = _types(repo, level, [v for k, v in params if k == "_type"])
    if group_id is not None:
        repo.read("Group", group_id)  # 404 / 410 now rather than a failed job later
    if repo.jobs is None:
        raise TelemedError(Category.UNAVAILABLE, "Background jobs are not running on this server")
    now = repo.clock.now()
    job = {
        "level": level,
        "group": group_id,
        "types": types,
        "since": since,
        "transactionTime": fhir_instant(now),
        "tx": now.isoformat(),  # full precision: what the job filters on
        # A POST's parameters are in its body: the spec wants the URL without them.
        "request": f"{req.base_url}/{req.path}" + (f"?{urlencode(req.params)}" if req.params else ""),
        "base": req.base_url,
        "access": _access_params(repo.context),
    }
    job_id = repo.jobs.submit(repo.conn, KIND, job, owner=repo.context.user)
    return FhirResponse(202, None, {"Content-Location": f"{req.base_url}/$export-poll-status/{job_id}"}, "export")


# -- the job -----------------------------------------------------------------------------------
def _access_params(ctx: AccessContext) -> dict:
    """What the job needs to export as the caller: the access rules apply to every batch. A
    break-glass reason covers one request's records, never a bulk export, so it is not carried."""
    return {
        "user": ctx.user, "scopes": sorted(ctx.scopes), "roles": sorted(ctx.roles),
        "organization": ctx.organization, "practitioner": ctx.practitioner, "patient": ctx.patient,
        "clinical": ctx.clinical,
    }  # fmt: skip


def _owner_context(params: dict) -> AccessContext:
    """The context of the user who asked for the export. A job queued without it (before the
    access rules applied to exports) exports no patient data."""
    a = params.get("access")
    if not a:
        return AccessContext(user="unknown", clinical="none")
    return AccessContext(
        user=a["user"], scopes=frozenset(a["scopes"]), roles=frozenset(a["roles"]), organization=a["organization"],
        practitioner=a["practitioner"], patient=a["patient"], clinical=a["clinical"], reveal=False,
    )  # fmt: skip


def _patient_ids(repo: Repository, params: dict) -> list[str] | None:
    """The patients whose compartments are exported: None for all (system and patient level)."""
    if params["level"] != "group":
        return None
    group = repo.read("Group", params["group"]).resource
    ids = []
    for member in group.get("member") or []:
        ref = (member.get("entity") or {}).get("reference", "")
        parts = ref.split("/")
        if not member.get("inactive") and len(parts) >= 2 and parts[-2] == "Patient":
            ids.append(parts[-1])
    return ids


def _membership(rtype: str, level: str, patients: list[str] | None):
    """SQL condition: the resource is in the Patient compartment of the exported patients."""
    if level == "system":
        return true()
    clauses = []
    if rtype == "Patient":
        clauses.append(true() if patients is None else t_resource.c.id.in_(patients))
    codes = [c for c in load().patient_compartment.get(rtype, []) if c != "{def}"]
    if codes:
        ref = INDEX_TABLES["reference"]
        sub = select(ref.c.resource_id).where(
            ref.c.resource_type == rtype, ref.c.code.in_(codes), ref.c.target_type == "Patient"
        )
        if patients is not None:
            sub = sub.where(ref.c.target_id.in_(patients))
        clauses.append(t_resource.c.id.in_(sub))
    return or_(*clauses)


def _as_of(repo: Repository, row, tx, since):
    """The resource as it was at ``tx`` (None when it did not exist, was deleted or is older than ``since``)."""
    if as_utc(row.last_updated) > tx:
        row = repo.conn.execute(
            select(t_history.c.method, t_history.c.last_updated, t_history.c.has_blobs, t_history.c.content)
            .where(t_history.c.resource_type == row.resource_type, t_history.c.id == row.id)
            .where(t_history.c.last_updated <= tx)
            .order_by(t_history.c.version_id.desc())
            .limit(1)
        ).first()
        if row is None or row.method == "DELETE" or (since is not None and as_utc(row.last_updated) < since):
            return None
    return repo._load(row.content, row.has_blobs)


class _Output:
    """The NDJSON files of one export: lines buffered per type, stored every MAX_PER_FILE lines."""

    def __init__(self, blobs: BlobStore, base: str):
        self.blobs, self.base = blobs, base
        self.output: list[dict] = []
        self.files: dict[str, str] = {}
        self.lines: list[bytes] = []

    def add(self, rtype: str, resource: dict) -> None:
        self.lines.append(orjson.dumps(resource) + b"\n")
        if len(self.lines) == MAX_PER_FILE:
            self.flush(rtype)

    def flush(self, rtype: str) -> None:
        if not self.lines:
            return
        name = f"{rtype}-{sum(o['type'] == rtype for o in self.output) + 1}.ndjson"
        self.files[name] = self.blobs.put(b"".join(self.lines))
        self.output.append({"type": rtype, "url": f"{self.base}/{name}", "count": len(self.lines)})
        self.lines = []


def run_export(ctx: JobContext, blobs: BlobStore, repository_factory) -> dict:
    """The ``bulk-export`` job handler: reads in keyset batches, returns the manifest (and blob keys)."""
    p = ctx.params
    tx = parse_fhir_datetime(p["tx"])
    since = parse_fhir_datetime(p["since"]) if p.get("since") else None
    context = _owner_context(p)  # the access rules of the user who asked, on every batch
    with unit_of_work(ctx.engine, write=False) as conn:
        patients = _patient_ids(repository_factory(conn, context), p)
    out = _Output(blobs, f"{p['base']}/$export-file/{ctx.id}")
    r = t_resource.c
    for done, rtype in enumerate(p["types"]):
        query = select(t_resource).where(
            r.resource_type == rtype,
            or_(r.deleted.is_(False), r.last_updated > tx),  # deleted after tx: exported as of tx
            _membership(rtype, p["level"], patients),
        )
        visible = access.visibility(t_resource, rtype, context, tx)
        if visible is not None:
            query = query.where(visible)
        if since is not None:
            query = query.where(r.last_updated >= since)
        count, last = 0, ""
        while True:
            with unit_of_work(ctx.engine, write=False) as conn:
                repo = repository_factory(conn, context)
                rows = conn.execute(query.where(r.id > last).order_by(r.id).limit(BATCH)).all()
                for row in rows:
                    resource = _as_of(repo, row, tx, since)
                    if resource is not None:
                        # ID numbers, phones and addresses go out masked: a reveal is one
                        # resource read by a role that needs it (audited), never a bulk file.
                        out.add(rtype, protect.mask(resource))
                        count += 1
            ctx.progress(done / len(p["types"]), f"{rtype}: {count} resources")  # raises Cancelled
            if len(rows) < BATCH:
                break
            last = rows[-1].id
        out.flush(rtype)
    return {
        "transactionTime": p["transactionTime"],
        "request": p["request"],
        "requiresAccessToken": True,
        "output": out.output,
        "error": [],
        "files": out.files,  # name -> blob key; never shown to clients
    }


# -- status, cancel, files ---------------------------------------------------------------------
def _own_job(repo: Repository, job_id: str):
    """The caller's export job; anyone else's, an unknown one or a cancelled one is 404."""
    job = get_job(repo.conn, job_id)
    if job is None or job.kind != KIND or job.owner != repo.context.user or job.status == "cancelled":
        raise not_found(f"No export job {job_id!r}")
    return job


def status(repo: Repository, req: FhirRequest, job_id: str) -> FhirResponse:
    job = _own_job(repo, job_id)
    if job.status in ("queued", "running"):
        progress = f"{round((job.progress or 0.0) * 100)}% {job.message or job.status}"
        return FhirResponse(202, None, {"X-Progress": progress[:200], "Retry-After": "1"}, "export-status")
    if job.status == "failed":
        raise TelemedError(Category.FAULT, f"The export failed: {job.message}")
    manifest = {k: v for k, v in job.result.items() if k != "files"}
    return FhirResponse(200, None, {"Content-Type": "application/json"}, "export-status", raw=orjson.dumps(manifest))


def cancel(repo: Repository, req: FhirRequest, job_id: str) -> FhirResponse:
    _own_job(repo, job_id)
    if not cancel_job(repo.conn, job_id, repo.clock.now()):
        # Finished already: the spec's DELETE also withdraws a completed export (later polls 404).
        repo.conn.execute(
            update(t_job).where(t_job.c.id == job_id).values(status="cancelled", updated=repo.clock.now())
        )
    return FhirResponse(202, None, {}, "export-cancel")


def file(repo: Repository, req: FhirRequest, job_id: str, name: str) -> FhirResponse:
    job = _own_job(repo, job_id)
    key = (job.result or {}).get("files", {}).get(name) if job.status == "done" else None
    if key is None:
        raise not_found(f"Export job {job_id!r} has no file {name!r}")
    return FhirResponse(200, None, {"Content-Type": NDJSON}, "export-file", raw=repo.blobs.get(key))
