"""The only web module of ``telemed.fhir``: HTTP <-> :class:`FhirRequest`, content negotiation,
authentication hook, unit of work and the OperationOutcome mapping of errors (R4 §3.1.0.1, §2.6)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router, WebSocketRoute

from telemed.db.engine import unit_of_work
from telemed.fhir.rest.dispatch import dispatch
from telemed.fhir.rest.outcome import information, operation_outcome
from telemed.fhir.rest.request import FhirRequest, FhirResponse
from telemed.fhir.store import audit
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.clock import Clock, SystemClock
from telemed.kernel.errors import Category, Issue, TelemedError

log = logging.getLogger("telemed.fhir")

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
PATCH_TYPES = {"application/json-patch+json"}
FORMAT_ALIASES = {"json": FHIR_JSON, "application/json": "application/json", FHIR_JSON: FHIR_JSON}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

Authenticate = Callable[[Request], AccessContext]
RepositoryFactory = Callable[[object, AccessContext], Repository]


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _response_type(request: Request) -> str:
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt in FORMAT_ALIASES:
            return FORMAT_ALIASES[fmt]
        raise TelemedError(Category.UNSUPPORTED_MEDIA, f"_format={fmt!r} is not supported (only JSON)")
    accept = request.headers.get("accept", "")
    if not accept or "*/*" in accept or "fhir+json" in accept or "application/*" in accept:
        return FHIR_JSON
    if "application/json" in accept:
        return "application/json"
    if "xml" in accept:
        raise TelemedError(Category.UNSUPPORTED_MEDIA, "Only JSON is supported (Accept asked for XML)")
    return FHIR_JSON


def _render(resource: dict | None, status: int, headers: dict[str, str], media: str, pretty: bool) -> Response:
    body = b"" if resource is None else orjson.dumps(resource, option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(body, status, headers, media_type=f"{media}; charset=utf-8" if resource is not None else None)


def _break_glass(request: Request, context: AccessContext) -> AccessContext:
    """``X-Break-Glass-Reason: <why>`` opens records outside the rules for this request only;
    the reason is recorded on the request's AuditEvent (purposeOfEvent BTG) for the auditor."""
    reason = request.headers.get("x-break-glass-reason", "").strip()
    if not reason:
        return context
    if context.clinical != "scoped":
        raise TelemedError(Category.FORBIDDEN, "Break-glass access is only available to clinical staff")
    if len(reason) < 4:
        raise TelemedError(Category.INCORRECT, "Break-glass access needs a reason (X-Break-Glass-Reason)")
    return context.with_break_glass(reason)


def audit_record(req: FhirRequest, interaction: str, outcome: str, resource: dict | None) -> audit.AuditRecord:
    parts = [p for p in req.path.split("/") if p]
    entity = None
    if len(parts) >= 2 and not parts[1].startswith(("_", "$")):
        entity = f"{parts[0]}/{parts[1]}"
    elif resource is not None and resource.get("id") and interaction in ("create", "update"):
        entity = f"{resource['resourceType']}/{resource['id']}"
    elif parts:
        entity = parts[0]
    patient = None
    if resource is not None:
        if resource.get("resourceType") == "Patient":
            patient = resource.get("id")
        else:
            for key in ("subject", "patient"):
                ref = (resource.get(key) or {}).get("reference", "") if isinstance(resource.get(key), dict) else ""
                if ref.startswith("Patient/"):
                    patient = ref.split("/", 1)[1]
                    break
    if patient is None:
        if parts[:1] == ["Patient"] and len(parts) >= 2 and not parts[1].startswith(("_", "$")):
            patient = parts[1]
        for name, value in req.params:
            if name.split(":")[0] in ("subject", "patient") and "Patient/" in value:
                patient = value.split("Patient/", 1)[1].split(",")[0]
    query = "&".join(f"{k}={v}" for k, v in req.params) if req.params else None
    return audit.AuditRecord(interaction, outcome, entity, query, patient[:64] if patient else None)


def error_response(error: TelemedError, media: str = FHIR_JSON, pretty: bool = False) -> Response:
    headers = dict(error.headers)
    if error.category is Category.UNAUTHENTICATED:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="telemed"')
    return _render(operation_outcome(error), error.category.status, headers, media, pretty)


class FhirEndpoint:
    """ASGI-facing handler for everything under the FHIR base URL."""

    def __init__(
        self,
        engine: Engine,
        authenticate: Authenticate,
        repository: RepositoryFactory,
        max_body_bytes: int,
        base_url: str | None = None,
        websocket=None,
        clock: Clock | None = None,
    ):
        self.engine = engine
        self.authenticate = authenticate
        self.repository = repository
        self.max_body_bytes = max_body_bytes
        self.base_url = base_url
        self.websocket = websocket
        self.clock = clock or SystemClock()

    def router(self) -> Router:
        routes = [Route("/{path:path}", self.handle, methods=METHODS)]
        if self.websocket is not None:
            routes.insert(0, WebSocketRoute("/websocket", self.websocket))
        return Router(routes=routes)

    async def _body(self, request: Request, path: str) -> tuple[object | None, list[tuple[str, str]]]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise TelemedError(Category.TOO_LARGE, f"The request body exceeds {self.max_body_bytes} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.max_body_bytes:
                raise TelemedError(Category.TOO_LARGE, f"The request body exceeds {self.max_body_bytes} bytes")
        if request.method not in ("POST", "PUT", "PATCH"):
            return None, []
        media = _media_type(request.headers.get("content-type"))
        if path.endswith("_search") and request.method == "POST":
            if media not in ("application/x-www-form-urlencoded", ""):
                raise TelemedError(Category.UNSUPPORTED_MEDIA, "POST _search expects application/x-www-form-urlencoded")
            return None, parse_qsl(raw.decode(), keep_blank_values=True)
        if not raw:
            if path.rstrip("/").rsplit("/", 1)[-1].startswith("$"):
                return None, []  # operations such as $reindex or $export may be POSTed without a body
            raise TelemedError(Category.INCORRECT, "The request has no body", [Issue("Empty body", "required")])
        if path.split("/")[0] == "Binary" and media not in JSON_TYPES and media:
            # A raw upload (R4 §2.24.0.2 Binary): the body itself is the content.
            return {"resourceType": "Binary", "contentType": media, "data": base64.b64encode(raw).decode()}, []
        allowed = JSON_TYPES | (PATCH_TYPES if request.method == "PATCH" else set())
        if media not in allowed:
            raise TelemedError(
                Category.UNSUPPORTED_MEDIA,
                f"Content-Type {media or '(none)'!r} is not supported; use application/fhir+json",
            )
        try:
            return orjson.loads(raw), []
        except orjson.JSONDecodeError as exc:
            raise TelemedError(
                Category.INCORRECT, f"The body is not valid JSON: {exc}", [Issue(f"Malformed JSON: {exc}", "structure")]
            ) from None

    def _base(self, request: Request) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if "path" not in request.path_params:  # the base URL itself, without a trailing slash
            return f"{request.url.scheme}://{request.url.netloc}{request.url.path}".rstrip("/")
        # Mounted under /fhir: root_path carries the mount point.
        return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}".rstrip("/")

    def _run(self, req: FhirRequest, context: AccessContext) -> FhirResponse:
        # Every request writes its AuditEvent. SQLite must then take the write lock up front
        # (BEGIN IMMEDIATE): upgrading a read transaction later fails under concurrent writers.
        write = req.method not in ("GET", "HEAD") or self.engine.dialect.name == "sqlite"
        try:
            with unit_of_work(self.engine, write=write) as conn:
                repo = self.repository(conn, context)
                repo.base_url = req.base_url
                resp = dispatch(repo, req)
                repo.flush()
                # Same transaction as the action: audited if and only if it happened.
                rec = audit_record(req, resp.interaction, "0", resp.resource)
                rec.description = resp.note
                audit.record(conn, context, rec, repo.clock)
                return resp
        except IntegrityError:
            raise TelemedError(Category.CONFLICT, "A concurrent request wrote the same resource; retry") from None
        except OperationalError as exc:
            log.warning("database unavailable: %s", exc.__class__.__name__)
            raise TelemedError(Category.UNAVAILABLE, "The database is unavailable; retry shortly") from None
        except DBAPIError as exc:
            log.exception("database error")
            raise TelemedError(Category.FAULT, f"Database error ({exc.__class__.__name__})") from None

    async def handle(self, request: Request) -> Response:
        pretty = request.query_params.get("_pretty") == "true"
        media = FHIR_JSON
        context = None
        try:
            media = _response_type(request)
            context = self.authenticate(request)
            context = _break_glass(request, context)
            path = request.path_params.get("path", "")
            body, form = await self._body(request, path)
            params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")]
            req = FhirRequest(
                method=request.method,
                path=path.strip("/"),
                params=params + form,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                base_url=self._base(request),
            )
            resp = await run_in_threadpool(self._run, req, context)
        except TelemedError as exc:
            request.state.interaction = "error"
            await run_in_threadpool(self._audit_refusal, request, context, exc)
            return error_response(exc, media, pretty)
        except Exception:  # noqa: BLE001 - the protocol boundary: a bug becomes a 500 OperationOutcome
            log.exception("unhandled error in FHIR request")
            request.state.interaction = "error"
            fault = TelemedError(Category.FAULT, "Internal server error; the request id in X-Request-ID identifies it")
            return error_response(fault, media, pretty)
        request.state.interaction = resp.interaction
        if resp.raw is not None:
            return Response(resp.raw, resp.status, resp.headers)
        resource = resp.resource
        if resource is not None and resource.get("resourceType") == "Binary" and resp.interaction in ("read", "vread"):
            raw = self._raw_binary(request, resource)
            if raw is not None:
                return Response(raw, resp.status, resp.headers, media_type=resource.get("contentType"))
        prefer = request.headers.get("prefer", "")
        if request.method in ("POST", "PUT", "PATCH") and resp.interaction in ("create", "update", "patch"):
            if "return=minimal" in prefer:
                resource = None
            elif "return=OperationOutcome" in prefer:
                resource = information(f"{resp.interaction} succeeded")
        if request.method == "HEAD":
            resource = None
        return _render(resource, resp.status, resp.headers, media, pretty)

    def _audit_refusal(self, request: Request, context: AccessContext | None, error: TelemedError) -> None:
        """Refused and failed requests are audited too, in a transaction of their own."""
        ctx = context or AccessContext(user="anonymous", clinical="none")
        outcome = "8" if error.category.status >= 500 else "4"
        req = FhirRequest(request.method, request.path_params.get("path", ""), list(request.query_params.multi_items()))
        rec = audit_record(req, f"{request.method.lower()}-refused", outcome, None)
        rec.description = f"{error.category.status} {error.message}"
        rec.address = request.client.host if request.client else None
        try:
            with unit_of_work(self.engine) as conn:
                audit.record(conn, ctx, rec, self.clock)
        except Exception:  # noqa: BLE001 - a database outage must not turn a 404 into a 500
            log.exception("could not audit a refused request")

    @staticmethod
    def _raw_binary(request: Request, resource: dict) -> bytes | None:
        """Binary read with a non-FHIR Accept returns the content itself (R4 §2.24.0.1)."""
        accept = request.headers.get("accept", "")
        if not accept or "json" in accept or "*/*" in accept or "_format" in request.query_params:
            return None
        return base64.b64decode(resource.get("data", ""))
