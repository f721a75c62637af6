"""The FHIR store: create, read, vread, update, patch, delete, history and criteria lookup.

Implements the persistence side of the RESTful API (FHIR R4 §3.1.0): versioning (``meta.versionId``
and ``meta.lastUpdated`` are server-assigned), deletes that keep history (a later read is 410),
and optimistic locking. One Repository is built per request from the caller's
:class:`AccessContext`; it never commits (the request's unit of work does).

No lost update: an update is ``UPDATE ... WHERE version_id = <version read>``. When two requests
race with the same ``If-Match``, the database serialises the two UPDATEs and the second matches no
row, so it fails with 412 instead of overwriting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import jsonpatch
from sqlalchemy import Connection, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from telemed.db import bulk
from telemed.db.jobs import JobRunner
from telemed.db.schema import INDEX_TABLES
from telemed.db.schema import resource as t_resource
from telemed.db.schema import resource_history as t_history
from telemed.fhir.search.index import index_rows
from telemed.fhir.store import access, protect, retention
from telemed.fhir.store.attachments import externalize, rehydrate
from telemed.fhir.store.context import AccessContext
from telemed.fhir.validation import Validator, validator
from telemed.kernel.blobs import BlobStore
from telemed.kernel.clock import Clock, fhir_instant
from telemed.kernel.crypto import FieldCipher
from telemed.kernel.errors import Category, Issue, TelemedError, incorrect
from telemed.kernel.ids import IdGenerator, is_valid_id, new_id


class WriteHooks(Protocol):
    """What reacts to writes inside the writing transaction (subscriptions, custom search params)."""

    def before_write(self, repo: Repository, resource: dict) -> dict: ...

    def after_write(self, repo: Repository, stored: Stored) -> None: ...

    def after_delete(self, repo: Repository, resource_type: str, id_: str) -> None: ...

    def before_search(self, repo: Repository) -> None: ...


class CompositeHooks:
    """Several hook objects in order; a hook object may implement only some of the methods."""

    def __init__(self, *hooks: object):
        self.hooks = hooks

    def before_write(self, repo: Repository, resource: dict) -> dict:
        for h in self.hooks:
            if hasattr(h, "before_write"):
                resource = h.before_write(repo, resource)
        return resource

    def after_write(self, repo: Repository, stored: Stored) -> None:
        for h in self.hooks:
            if hasattr(h, "after_write"):
                h.after_write(repo, stored)

    def after_delete(self, repo: Repository, resource_type: str, id_: str) -> None:
        for h in self.hooks:
            if hasattr(h, "after_delete"):
                h.after_delete(repo, resource_type, id_)

    def before_search(self, repo: Repository) -> None:
        for h in self.hooks:
            if hasattr(h, "before_search"):
                h.before_search(repo)


# Statements built once: constructing SQLAlchemy expressions per request costs more than running them.
_INSERT_RESOURCE = insert(t_resource)
_INSERT_HISTORY = insert(t_history)
_UPDATE_RESOURCE = (
    update(t_resource)
    .where(
        t_resource.c.resource_type == bindparam("b_type"),
        t_resource.c.id == bindparam("b_id"),
        t_resource.c.version_id == bindparam("b_prev"),
    )
    .values(
        version_id=bindparam("version_id"),
        last_updated=bindparam("last_updated"),
        deleted=bindparam("deleted"),
        has_blobs=bindparam("has_blobs"),
        content=bindparam("content"),
    )
)
_SELECT_CURRENT = select(
    t_resource.c.version_id,
    t_resource.c.last_updated,
    t_resource.c.deleted,
    t_resource.c.has_blobs,
    t_resource.c.content,
).where(t_resource.c.resource_type == bindparam("b_type"), t_resource.c.id == bindparam("b_id"))
_INDEX_INSERTS = {
    kind: (insert(table), [c.name for c in table.columns if c.name not in ("resource_type", "resource_id")])
    for kind, table in INDEX_TABLES.items()
}


@dataclass
class Stored:
    """A resource as stored: its JSON (with ``meta``) and the version facts HTTP needs."""

    resource: dict
    version_id: int
    last_updated: datetime
    created: bool = False

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'


@dataclass
class HistoryEntry:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    method: str
    resource: dict | None
    seq: int


class Repository:
    def __init__(
        self,
        conn: Connection,
        context: AccessContext,
        clock: Clock,
        blobs: BlobStore,
        *,
        ids: IdGenerator = new_id,
        blob_threshold: int = 4096,
        validate: Validator | None = None,
        jobs: JobRunner | None = None,
        hooks: WriteHooks | None = None,
        cipher: FieldCipher | None = None,
    ):
        self.conn = conn
        self.context = context
        self.clock = clock
        self.blobs = blobs
        self.ids = ids
        self.blob_threshold = blob_threshold
        self.validator = validate or validator()
        self.jobs = jobs  # background jobs ($export, $reindex); None where none run
        self.hooks = hooks  # subscriptions (and later custom search parameters) react to writes here
        self._buffer: dict | None = None
        self.cipher = cipher  # encrypts ID numbers, phones and addresses at rest (None: off)
        self.base_url: str | None = None  # this server's FHIR base, set per request (reference indexing)

    # -- write buffering -------------------------------------------------------------------------
    def buffer_inserts(self) -> None:
        """Collect INSERTs and send them per table in one multi-row statement at :meth:`flush`.

        Transaction Bundles use this: 500 entries cost a handful of statements instead of
        thousands. Every read through the Repository (or the search engine) flushes first, so
        nothing reads stale data; the request's commit happens after the final flush.
        """
        if self._buffer is None:
            self._buffer = {}

    def flush(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer:
            for statement, rows in buffer.items():
                bulk.insert_rows(self.conn, statement, rows)  # COPY on PostgreSQL
        if buffer is not None:
            self._buffer = {}

    def stop_buffering(self) -> None:
        self.flush()
        self._buffer = None

    def before_search(self) -> None:
        """Called before a search is parsed, so parameters defined elsewhere are known."""
        if self.hooks is not None:
            self.hooks.before_search(self)

    def _insert(self, statement, rows: list[dict]) -> None:
        if self._buffer is not None:
            self._buffer.setdefault(statement, []).extend(rows)
        else:
            self.conn.execute(statement, rows if len(rows) > 1 else rows[0])

    # -- helpers -------------------------------------------------------------------------------
    def _check_type(self, resource_type: str) -> None:
        if not self.validator.defs.is_resource_type(resource_type):
            raise TelemedError(Category.NOT_FOUND, f"Unknown resource type {resource_type!r}")

    def _validate(self, resource: object, resource_type: str) -> dict:
        if not isinstance(resource, dict):
            raise incorrect("The body must be a FHIR resource (a JSON object)", code="structure")
        if resource.get("resourceType") != resource_type:
            raise incorrect(
                f"resourceType {resource.get('resourceType')!r} does not match the endpoint {resource_type!r}",
                "resourceType",
                "invalid",
            )
        issues = [i for i in self.validator.validate(resource) if i.severity == "error"]
        if issues:
            raise TelemedError(Category.UNPROCESSABLE, f"Invalid {resource_type}: {issues[0].message}", issues)
        if self.hooks is not None:
            return self.hooks.before_write(self, resource)
        return resource

    def _stamp(self, resource: dict, resource_type: str, id_: str, version: int, now: datetime) -> dict:
        out = dict(resource)
        out["resourceType"] = resource_type
        out["id"] = id_
        meta = dict(out.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = fhir_instant(now)
        out["meta"] = meta
        # Keep resourceType and id first: friendlier for people reading raw JSON.
        return {
            "resourceType": resource_type,
            "id": id_,
            **{k: v for k, v in out.items() if k not in ("resourceType", "id")},
        }

    def _write_version(
        self,
        resource: dict,
        resource_type: str,
        id_: str,
        version: int,
        now: datetime,
        method: str,
        *,
        insert_row: bool,
    ) -> Stored:
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as precise as meta.lastUpdated
        stamped = self._stamp(resource, resource_type, id_, version, now)
        stored, has_blobs = externalize(protect.encrypt(stamped, self.cipher), self.blobs, self.blob_threshold)
        row = {
            "resource_type": resource_type,
            "id": id_,
            "version_id": version,
            "last_updated": now,
            "deleted": False,
            "has_blobs": has_blobs,
            "content": stored,
        }
        if insert_row:
            self._insert(_INSERT_RESOURCE, [{**row, "owner_org": self.context.organization}])
        else:
            result = self.conn.execute(
                _UPDATE_RESOURCE, {**row, "b_type": resource_type, "b_id": id_, "b_prev": version - 1}
            )
            if result.rowcount != 1:
                raise TelemedError(
                    Category.PRECONDITION_FAILED,
                    f"{resource_type}/{id_} was changed by another request; re-read it and retry",
                    [Issue("Version conflict", "conflict")],
                )
        self._insert(_INSERT_HISTORY, [{**row, "method": method}])
        self._reindex(resource_type, id_, stamped, is_new=insert_row)
        result = Stored(stamped, version, now)
        if self.hooks is not None:
            self.hooks.after_write(self, result)
        return result

    def _reindex(self, resource_type: str, id_: str, resource: dict | None, *, is_new: bool = False) -> None:
        """Replace the resource's search index rows (same transaction as the write)."""
        if not is_new:
            for table in INDEX_TABLES.values():
                self.conn.execute(
                    delete(table).where(table.c.resource_type == resource_type, table.c.resource_id == id_)
                )
        if resource is None:
            return
        rows_by_kind = protect.blind_index_rows(resource, index_rows(resource, local_base=self.base_url), self.cipher)
        for kind, rows in rows_by_kind.items():
            statement, columns = _INDEX_INSERTS[kind]
            owner = {"resource_type": resource_type, "resource_id": id_}
            self._insert(statement, [{**owner, **{c: r.get(c) for c in columns}} for r in rows])

    def _current(self, resource_type: str, id_: str):
        self.flush()
        return self.conn.execute(_SELECT_CURRENT, {"b_type": resource_type, "b_id": id_}).first()

    def _current_if_visible(self, resource_type: str, id_: str):
        """The current row when it exists and the caller may see it, in one statement (the access
        rule is a column of the row's SELECT, not a second query); None otherwise."""
        if not access.is_clinical(resource_type):
            return self._current(resource_type, id_)
        q = access.read_statement(_SELECT_CURRENT, resource_type, self.context)
        if q is None:
            return self._current(resource_type, id_)
        self.flush()
        params = {"b_type": resource_type, "b_id": id_, **access.bound_values(self.context, self.clock.now())}
        row = self.conn.execute(q, params).first()
        return row if row is not None and row.visible else None

    def _visible(self, resource_type: str, id_: str) -> bool:
        """Whether the caller may see this resource (access rules); unknown resources are not visible."""
        clause = access.visibility(t_resource, resource_type, self.context, self.clock.now())
        if clause is None:
            return True
        self.flush()
        q = select(t_resource.c.id).where(t_resource.c.resource_type == resource_type, t_resource.c.id == id_, clause)
        return self.conn.execute(q).first() is not None

    def _history_visibility(self, resource_type: str | None):
        """Type/system history shows only the versions of resources the caller may see now."""
        if self.context.sees_all:
            return None
        now = self.clock.now()
        types = [resource_type] if resource_type else sorted(access.clinical_types())
        clauses = []
        for rt in types:
            clause = access.visibility(t_resource, rt, self.context, now)
            if clause is None:
                continue
            visible = select(t_resource.c.id).where(t_resource.c.resource_type == rt, clause)
            clauses.append(and_(t_history.c.resource_type == rt, t_history.c.id.in_(visible)))
        if resource_type is not None:
            return clauses[0] if clauses else None
        return or_(t_history.c.resource_type.not_in(sorted(access.clinical_types())), *clauses)

    def _require_visible(self, resource_type: str, id_: str) -> None:
        if not self._visible(resource_type, id_):
            raise TelemedError(Category.NOT_FOUND, f"{resource_type}/{id_} is not known")

    def _require_patients_visible(self, resource: dict) -> None:
        """Writing a clinical record needs access to its patient(s); otherwise it looks missing."""
        if self.context.sees_all or not access.is_clinical(resource["resourceType"]):
            return
        if self.context.clinical == "none":
            raise TelemedError(Category.FORBIDDEN, "This account may not write patient records")
        patients = access.patients_of(resource)
        for pid in patients:
            if resource["resourceType"] == "Patient" and not self.exists("Patient", pid):
                continue  # creating a new patient
            if not self._visible("Patient", pid):
                raise TelemedError(Category.NOT_FOUND, f"Patient/{pid} is not known")
        launch = self.context.patient if self.context.clinical != "self" else None
        if launch is not None and launch not in patients:  # e.g. no subject at all, or a new Patient
            raise TelemedError(Category.FORBIDDEN, f"This token writes only records of its patient Patient/{launch}")

    def _load(self, content: dict, has_blobs: bool) -> dict:
        resource = rehydrate(content, self.blobs) if has_blobs else content
        if resource.get("resourceType") in protect.PROTECTED_TYPES:
            resource = protect.decrypt(resource, self.cipher)
        return resource

    @staticmethod
    def _check_if_match(if_match: str | None, current_version: int, what: str) -> None:
        if if_match is None:
            return
        wanted = if_match.strip().removeprefix("W/").strip('"')
        if wanted != str(current_version):
            raise TelemedError(
                Category.PRECONDITION_FAILED,
                f"If-Match {if_match} does not match the current version {current_version} of {what}",
                [Issue(f"Version conflict: current version is {current_version}", "conflict")],
            )

    # -- interactions --------------------------------------------------------------------------
    def create(self, resource_type: str, resource: object, assigned_id: str | None = None) -> Stored:
        """R4 §3.1.0.7 create: the server assigns the id (any id in the body is ignored).

        ``assigned_id`` is for transactions, which allocate ids up front to resolve ``urn:uuid:``.
        """
        self._check_type(resource_type)
        self.context.require(resource_type, "write")
        body = self._validate(resource, resource_type)
        self._require_patients_visible(body)
        access.check_directory_write(self, resource_type, body, None)
        now = self.clock.now()
        new = assigned_id or self.ids()
        stored = self._write_version(body, resource_type, new, 1, now, "POST", insert_row=True)
        stored.created = True
        return stored

    def read(self, resource_type: str, id_: str) -> Stored:
        """R4 §3.1.0.2 read: 404 if it never existed, 410 if deleted."""
        self._check_type(resource_type)
        self.context.require(resource_type, "read")
        row = self._current_if_visible(resource_type, id_)
        if row is None:
            raise TelemedError(Category.NOT_FOUND, f"{resource_type}/{id_} is not known")
        if row.deleted:
            raise TelemedError(
                Category.GONE,
                f"{resource_type}/{id_} was deleted",
                headers={"ETag": f'W/"{row.version_id}"'},
            )
        return Stored(self._load(row.content, row.has_blobs), row.version_id, row.last_updated)

    def read_many(self, resource_type: str, ids: list[str], chunk: int = 200) -> dict[str, Stored]:
        """The current versions of those of ``ids`` that exist and the caller may see (deleted,
        unknown and invisible ones are left out): one statement per ``chunk`` ids instead of a read
        each, for the lists of the portal."""
        self._check_type(resource_type)
        self.context.require(resource_type, "read")
        self.flush()
        clause = access.visibility(t_resource, resource_type, self.context, self.clock.now())
        out: dict[str, Stored] = {}
        wanted = sorted(set(ids))
        for i in range(0, len(wanted), chunk):
            q = select(t_resource.c.id, *_SELECT_CURRENT.selected_columns).where(
                t_resource.c.resource_type == resource_type,
                t_resource.c.id.in_(wanted[i : i + chunk]),
                t_resource.c.deleted.is_(False),
            )
            if clause is not None:
                q = q.where(clause)
            for row in self.conn.execute(q):
                out[row.id] = Stored(self._load(row.content, row.has_blobs), row.version_id, row.last_updated)
        return out

    def exists(self, resource_type: str, id_: str) -> bool:
        row = self._current(resource_type, id_)
        return row is not None and not row.deleted

    def vread(self, resource_type: str, id_: str, version_id: str) -> Stored:
        """R4 §3.1.0.3 vread; a deleted version is 410."""
        self._check_type(resource_type)
        self.context.require(resource_type, "read")
        if not version_id.isdigit():
            raise TelemedError(Category.NOT_FOUND, f"{resource_type}/{id_} has no version {version_id!r}")
        self._require_visible(resource_type, id_)
        row = self.conn.execute(
            select(t_history).where(
                t_history.c.resource_type == resource_type,
                t_history.c.id == id_,
                t_history.c.version_id == int(version_id),
            )
        ).first()
        if row is None:
            raise TelemedError(Category.NOT_FOUND, f"{resource_type}/{id_} has no version {version_id}")
        if row.content is None:
            raise TelemedError(Category.GONE, f"Version {version_id} of {resource_type}/{id_} is a deletion")
        return Stored(self._load(row.content, row.has_blobs), row.version_id, row.last_updated)

    def update(self, resource_type: str, id_: str, resource: object, if_match: str | None = None) -> Stored:
        """R4 §3.1.0.4 update, including update-as-create with a client-chosen id."""
        self._check_type(resource_type)
        self.context.require(resource_type, "write")
        body = self._validate(resource, resource_type)
        if body.get("id") is None:
            raise incorrect("The resource in an update must carry its id", f"{resource_type}.id", "required")
        if body["id"] != id_:
            raise incorrect(
                f"The id in the body ({body['id']!r}) does not match the id in the URL ({id_!r})",
                f"{resource_type}.id",
            )
        if not is_valid_id(id_):
            raise incorrect(f"{id_!r} is not a valid FHIR id", f"{resource_type}.id")
        now = self.clock.now()
        row = self._current(resource_type, id_)
        if row is not None:
            self._require_visible(resource_type, id_)
        self._require_patients_visible(body)
        access.check_directory_write(self, resource_type, body, row.content if row is not None else None)
        if row is not None and not row.deleted:
            retention.check_update(row.content, body, now)
        if row is None:
            if if_match is not None:
                raise TelemedError(Category.PRECONDITION_FAILED, f"{resource_type}/{id_} does not exist (If-Match)")
            try:
                with self.conn.begin_nested():
                    stored = self._write_version(body, resource_type, id_, 1, now, "PUT", insert_row=True)
            except IntegrityError:
                # Another request created it first: treat ours as an update of that version.
                row = self._current(resource_type, id_)
            else:
                stored.created = True
                return stored
        # Without If-Match the last writer wins: re-read and retry when another update slipped in.
        for _ in range(5):
            self._check_if_match(if_match, row.version_id, f"{resource_type}/{id_}")
            try:  # a lost race writes nothing (the UPDATE matched no row), so no savepoint is needed
                stored = self._write_version(body, resource_type, id_, row.version_id + 1, now, "PUT", insert_row=False)
            except TelemedError as exc:
                if if_match is not None or exc.category is not Category.PRECONDITION_FAILED:
                    raise
                row = self._current(resource_type, id_)
                continue
            stored.created = bool(row.deleted)
            return stored
        raise TelemedError(Category.CONFLICT, f"{resource_type}/{id_} is being updated by many requests; retry")

    def patch(self, resource_type: str, id_: str, operations: object, if_match: str | None = None) -> Stored:
        """R4 §3.1.0.5 patch with JSON Patch (RFC 6902); the patched result is validated like an update."""
        current = self.read(resource_type, id_)
        self._check_if_match(if_match, current.version_id, f"{resource_type}/{id_}")
        if not isinstance(operations, list):
            raise incorrect("A JSON Patch document must be an array of operations")
        try:
            patched = jsonpatch.JsonPatch(operations).apply(current.resource)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise TelemedError(Category.UNPROCESSABLE, f"The JSON Patch cannot be applied: {exc}") from None
        if patched.get("id") != id_ or patched.get("resourceType") != resource_type:
            raise TelemedError(Category.UNPROCESSABLE, "A patch must not change resourceType or id")
        body = self._validate(patched, resource_type)
        self._require_patients_visible(body)
        access.check_directory_write(self, resource_type, body, current.resource)
        now = self.clock.now()
        return self._write_version(body, resource_type, id_, current.version_id + 1, now, "PATCH", insert_row=False)

    def delete(self, resource_type: str, id_: str, if_match: str | None = None) -> int | None:
        """R4 §3.1.0.6 delete: records a deletion version; deleting the deleted or unknown is a no-op.

        Returns the version id of the deletion, or None when there was nothing to delete.
        """
        self._check_type(resource_type)
        self.context.require(resource_type, "write")
        row = self._current(resource_type, id_)
        if row is not None and not self._visible(resource_type, id_):
            row = None  # another institution's record: exactly as if it did not exist
        if row is None or row.deleted:
            if if_match is not None and row is None:
                raise TelemedError(Category.PRECONDITION_FAILED, f"{resource_type}/{id_} does not exist (If-Match)")
            return None
        self._check_if_match(if_match, row.version_id, f"{resource_type}/{id_}")
        access.check_directory_write(self, resource_type, None, row.content)
        now = self.clock.now()
        retention.check_delete(row.content, now)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        version = row.version_id + 1
        result = self.conn.execute(
            update(t_resource)
            .where(
                t_resource.c.resource_type == resource_type,
                t_resource.c.id == id_,
                t_resource.c.version_id == row.version_id,
            )
            .values(version_id=version, last_updated=now, deleted=True, has_blobs=False, content=None)
        )
        if result.rowcount != 1:
            raise TelemedError(Category.PRECONDITION_FAILED, f"{resource_type}/{id_} was changed by another request")
        self.conn.execute(
            insert(t_history).values(
                resource_type=resource_type,
                id=id_,
                version_id=version,
                last_updated=now,
                method="DELETE",
                has_blobs=False,
                content=None,
            )
        )
        self._reindex(resource_type, id_, None)
        if self.hooks is not None:
            self.hooks.after_delete(self, resource_type, id_)
        return version

    def history(
        self,
        resource_type: str | None = None,
        id_: str | None = None,
        *,
        since: datetime | None = None,
        before_seq: int | None = None,
        count: int = 50,
    ) -> list[HistoryEntry]:
        """R4 §3.1.0.9 history, newest first. ``before_seq`` is the paging cursor: entries written
        after the first page was served get higher ``seq`` values and never shift later pages."""
        if resource_type is not None:
            self._check_type(resource_type)
            self.context.require(resource_type, "read")
        else:
            self.context.require("*", "read")
        q = select(t_history)
        if resource_type is not None:
            q = q.where(t_history.c.resource_type == resource_type)
        if id_ is not None:
            self._require_visible(resource_type, id_)
            q = q.where(t_history.c.id == id_)
        else:
            limit = self._history_visibility(resource_type)
            if limit is not None:
                q = q.where(limit)
        if since is not None:
            q = q.where(t_history.c.last_updated >= since)
        if before_seq is not None:
            q = q.where(t_history.c.seq < before_seq)
        q = q.order_by(t_history.c.seq.desc()).limit(count)
        self.flush()
        rows = self.conn.execute(q).all()
        if id_ is not None and not rows and before_seq is None and since is None:
            raise TelemedError(Category.NOT_FOUND, f"{resource_type}/{id_} is not known")
        return [
            HistoryEntry(
                r.resource_type,
                r.id,
                r.version_id,
                r.last_updated,
                r.method,
                self._load(r.content, r.has_blobs) if r.content is not None else None,
                r.seq,
            )
            for r in rows
        ]
