"""Composition root: builds the engine, blob store, clock and routes from Settings; maps errors once."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from telemed import __version__
from telemed.db.engine import make_engine
from telemed.db.jobs import JobRunner
from telemed.db.migrate import is_current
from telemed.fhir.http import FhirEndpoint
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.identity import TokenError, context_from_token
from telemed.kernel.blobs import BlobStore, open_blob_store
from telemed.kernel.clock import Clock, SystemClock
from telemed.kernel.errors import Category, TelemedError
from telemed.kernel.ids import IdGenerator, new_id
from telemed.observability import Metrics, ObservabilityMiddleware
from telemed.settings import Settings

log = logging.getLogger("telemed")


@dataclass
class Services:
    """What the app is wired from; tests build one with their own clock, ids and database."""

    settings: Settings
    engine: Engine
    blobs: BlobStore
    clock: Clock
    ids: IdGenerator
    secret_key: str
    jobs: JobRunner

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None, ids: IdGenerator | None = None) -> Services:
        engine = make_engine(settings.database_url)
        clock = clock or SystemClock()
        return cls(
            settings=settings,
            engine=engine,
            blobs=open_blob_store(settings.blob_url),
            clock=clock,
            ids=ids or new_id,
            secret_key=settings.resolved_secret_key(),
            jobs=JobRunner(engine, clock),
        )

    def repository(self, conn, context: AccessContext) -> Repository:
        return Repository(
            conn,
            context,
            self.clock,
            self.blobs,
            ids=self.ids,
            blob_threshold=self.settings.blob_threshold_bytes,
            jobs=self.jobs,
        )

    def start_background(self) -> None:
        """Background workers of this instance: durable jobs (and, later, subscription delivery)."""
        register_jobs(self)
        self.jobs.start()

    def stop_background(self) -> None:
        self.jobs.stop()


def register_jobs(services: Services) -> None:
    from telemed.fhir.rest.operations import export

    if hasattr(export, "run_export"):
        services.jobs.register("bulk-export", lambda ctx: export.run_export(ctx, services.blobs, services.repository))


def _authenticate(secret: str):
    def authenticate(request: Request) -> AccessContext:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TelemedError(
                Category.UNAUTHENTICATED, "A bearer access token is required (Authorization: Bearer ...)"
            )
        try:
            return context_from_token(secret, token.strip())
        except TokenError as exc:
            raise TelemedError(
                Category.UNAUTHENTICATED,
                str(exc),
                headers={"WWW-Authenticate": 'Bearer realm="telemed", error="invalid_token"'},
            ) from None

    return authenticate


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        services.start_background()
        try:
            yield
        finally:
            services.stop_background()

    app = FastAPI(
        title="Telemed", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json", lifespan=lifespan
    )
    app.state.services = services
    metrics = Metrics()
    fhir = FhirEndpoint(
        services.engine,
        _authenticate(services.secret_key),
        services.repository,
        services.settings.max_body_bytes,
        services.settings.base_url,
    )
    app.mount("/fhir", fhir.router(), name="fhir")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        try:
            with services.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            if not is_current(services.engine):
                return JSONResponse({"status": "not ready", "reason": "database schema is not migrated"}, 503)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported not raised
            return JSONResponse(
                {"status": "not ready", "reason": f"database unreachable ({exc.__class__.__name__})"}, 503
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def root() -> dict:
        return {"name": "Telemed", "version": __version__, "fhir": "/fhir/metadata"}

    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory`` (several workers each build their own services)."""
    from telemed.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(Services.from_settings(settings))
