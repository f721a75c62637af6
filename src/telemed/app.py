"""Composition root: builds the engine, blob store, clock and routes from Settings; maps errors once."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from telemed import __version__, notify, portal
from telemed.consultation import SlaPolicy
from telemed.consultation import notifications as consultation_notifications
from telemed.consultation import report as consultation_report
from telemed.consultation.escalation import SlaWatcher
from telemed.db.engine import make_engine, on_commit, unit_of_work
from telemed.db.jobs import JobRunner
from telemed.db.migrate import is_current
from telemed.ecg import api as ecg_api
from telemed.ecg import service as ecg_service
from telemed.ecg.watch import EscalationWatcher
from telemed.fhir.http import METHODS, FhirEndpoint
from telemed.fhir.search.custom import CustomParameters, SearchParameterHooks
from telemed.fhir.store.access import AccessGrants
from telemed.fhir.store.audit import Sealer
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import CompositeHooks, Repository
from telemed.fhir.subscriptions import websocket
from telemed.fhir.subscriptions.active import ActiveSubscriptions
from telemed.fhir.subscriptions.delivery import Dispatcher
from telemed.fhir.subscriptions.matcher import OUTBOX_FLAG, SubscriptionHooks
from telemed.fhir.subscriptions.websocket import Hub
from telemed.identity import TokenError, TokenKeys, context_from_token, oauth, tokens
from telemed.identity import api as auth_api
from telemed.identity.revocation import Revocations
from telemed.imaging import DicomService, Received
from telemed.imaging import api as dicomweb
from telemed.imaging.reading.watch import ReadingWatcher
from telemed.kernel.blobs import BlobStore, open_blob_store
from telemed.kernel.clock import Clock, SystemClock
from telemed.kernel.crypto import FieldCipher
from telemed.kernel.errors import Category, TelemedError
from telemed.kernel.ids import IdGenerator, new_id
from telemed.observability import Metrics, ObservabilityMiddleware
from telemed.pathology import api as pathology_api
from telemed.pathology.escalation import FrozenSectionWatcher
from telemed.reports import LocalKeySigner, Signer, verification_router
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
    token_keys: TokenKeys
    jobs: JobRunner
    subscriptions: ActiveSubscriptions
    hooks: CompositeHooks
    hub: Hub
    dispatcher: Dispatcher | None = None
    revocations: Revocations | None = None
    cipher: FieldCipher | None = None
    sealer: Sealer | None = None
    signer: Signer | None = None
    _sla_watcher: SlaWatcher | None = None
    ecg_watcher: EscalationWatcher | None = None
    frozen_watcher: FrozenSectionWatcher | None = None
    reading_watcher: ReadingWatcher | None = None
    consultation_sla: SlaPolicy | None = None
    outbox: notify.Outbox | None = None
    email: notify.EmailSender | None = None
    sms: notify.SmsGateway | None = None

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None, ids: IdGenerator | None = None) -> Services:
        engine = make_engine(settings.database_url)
        clock = clock or SystemClock()
        subscriptions = ActiveSubscriptions()
        services = cls(
            settings=settings,
            engine=engine,
            blobs=open_blob_store(settings.blob_url),
            clock=clock,
            ids=ids or new_id,
            secret_key=settings.resolved_secret_key(),
            token_keys=TokenKeys(engine, settings.resolved_secret_key(), clock, settings.token_ttl_seconds),
            jobs=JobRunner(engine, clock),
            subscriptions=subscriptions,
            hooks=CompositeHooks(
                SearchParameterHooks(CustomParameters()), AccessGrants(), SubscriptionHooks(subscriptions)
            ),
            hub=Hub(settings.broker_url),
        )
        base = settings.base_url or f"http://{settings.host}:{settings.port}/fhir"
        services.dispatcher = Dispatcher(engine, clock, subscriptions, services.hub.publish, services.repository, base)
        dispatcher = services.dispatcher
        services.sealer = Sealer(engine, clock)
        services.revocations = Revocations(engine)
        services.cipher = settings.field_cipher()
        services.signer = LocalKeySigner(services.secret_key)
        services.consultation_sla = SlaPolicy.parse(settings.consultation_sla)
        services.email = notify.SmtpSender(settings.smtp_url, settings.mail_from) if settings.smtp_url else None
        # Demo mode logs text messages; production has no SMS provider yet, so no SMS is queued.
        services.sms = notify.LogSmsGateway() if settings.demo else None
        services.outbox = notify.Outbox(
            services.jobs, cipher=services.cipher, channels=notify.channels(email=services.email, sms=services.sms)
        )

        # Outbox rows become deliverable once their transaction has committed: wake the dispatcher then.
        on_commit(engine, lambda info: dispatcher.wake() if info.pop(OUTBOX_FLAG, False) else None)

        return services

    def repository(self, conn, context: AccessContext) -> Repository:
        return Repository(
            conn,
            context,
            self.clock,
            self.blobs,
            ids=self.ids,
            blob_threshold=self.settings.blob_threshold_bytes,
            jobs=self.jobs,
            hooks=self.hooks,
            cipher=self.cipher,
        )

    @property
    def site_url(self) -> str:
        """The public address of this platform (links in notifications, the report's verification URL)."""
        base = self.settings.base_url or f"http://{self.settings.host}:{self.settings.port}/fhir"
        return base.removesuffix("/").removesuffix("/fhir")

    def sign_opinion(self, repo, env, ctx, cid, expected_version=None):
        """The consultation's sign step with this platform's signer (used by the portal and the demo)."""
        return consultation_report.sign_opinion(
            repo, env, ctx, cid, signer=self.signer, base_url=self.site_url, expected_version=expected_version
        )

    def consultation_notifier(self, repo, notices) -> None:
        if self.outbox is not None:
            consultation_notifications.enqueue(repo, self.outbox, notices, self.site_url)

    def sla_watcher(self) -> SlaWatcher:
        if self._sla_watcher is None:
            self._sla_watcher = SlaWatcher(self.engine, self.clock, self.repository, self.consultation_notifier)
        return self._sla_watcher

    def start_background(self, loop) -> None:
        """Background workers of this instance: durable jobs and subscription delivery."""
        register_jobs(self)
        # The first access-token key is made now, not inside a sign-in's transaction (SQLite has one writer).
        try:
            self.token_keys.signing_key()
        except SQLAlchemyError:  # not migrated yet, or unreachable: /readyz says so; made on first use then
            log.warning("no access-token signing key yet (database not ready)", exc_info=True)
        self.jobs.start()
        self.hub.start(loop)
        self.dispatcher.start()
        self.sealer.start()
        self.sla_watcher().start()
        s = self.settings
        self.ecg_watcher = EscalationWatcher(
            self.engine, self.clock, self.repository, self.hub.publish,
            after=timedelta(minutes=s.ecg_escalate_minutes),
            urgent_after=timedelta(minutes=s.ecg_escalate_urgent_minutes),
            ack_after=timedelta(minutes=s.ecg_critical_ack_minutes),
        )  # fmt: skip
        self.ecg_watcher.start()
        self.frozen_watcher = FrozenSectionWatcher(self.engine, self.clock, self.repository, self.ids, self.outbox,
                                                   self.site_url)  # fmt: skip
        self.frozen_watcher.start()
        self.reading_watcher = ReadingWatcher(self.engine, self.clock, self.repository, self.ids, self.outbox,
                                              self.site_url)  # fmt: skip
        self.reading_watcher.start()

    def stop_background(self) -> None:
        if self.ecg_watcher is not None:
            self.ecg_watcher.stop()
        if self.frozen_watcher is not None:
            self.frozen_watcher.stop()
        if self.reading_watcher is not None:
            self.reading_watcher.stop()
        self.sla_watcher().stop()
        self.sealer.stop()
        self.dispatcher.stop()
        self.hub.stop()
        self.jobs.stop()

    def authenticate_token(self, token: str) -> AccessContext:
        try:
            return context_from_token(self.token_keys, token)
        except TokenError as exc:
            raise TelemedError(Category.UNAUTHENTICATED, str(exc)) from None

    def can_bind(self, context: AccessContext, sub_id: str) -> bool:
        """A websocket may bind to a websocket Subscription that the caller can read."""
        with unit_of_work(self.engine, write=False) as conn:
            try:
                sub = self.repository(conn, context).read("Subscription", sub_id).resource
            except TelemedError:
                return False
        return (sub.get("channel") or {}).get("type") == "websocket" and sub.get("status") == "active"


def register_jobs(services: Services) -> None:
    from telemed.fhir.rest.operations import export, reindex

    services.jobs.register("reindex", lambda ctx: reindex.run_reindex(ctx, services.repository))
    services.jobs.register("bulk-export", lambda ctx: export.run_export(ctx, services.blobs, services.repository))
    if services.outbox is not None:
        notify.register(services.jobs, services.outbox, email=services.email, sms=services.sms)


def dicom_service(services: Services, **kwargs) -> DicomService:
    """The platform's DICOM AE, with ECG waveforms that a known AE C-STOREs routed into the ECG reading
    pool of its institution, as an upload is (imaging and ecg are siblings: the app joins them)."""
    service = DicomService(services, **kwargs)
    service.after_store.append(lambda received: _ecg_from_dicom(services, received))
    if services.settings.broker_url:  # the push reaches the web instances through the broker
        services.hub.start(None)
    return service


def _ecg_from_dicom(services: Services, received: Received) -> None:
    result, remote = received.result, received.remote
    if not result.patient or result.sop_class_uid not in ecg_service.ECG_SOP_CLASSES:
        return  # (before any transaction: a CT series would otherwise load the pools for every image)
    with unit_of_work(services.engine) as conn:
        pools = ecg_service.Pools.load(services.repository(conn, AccessContext.system()))
        done = ecg_service.receive_dicom(
            services.repository(conn, remote.context), services.blobs, pools, services.clock.now(),
            raw=received.raw, sop_class=result.sop_class_uid, sop_instance_uid=result.sop_instance_uid,
            patient=result.patient, ctx=remote.context, priority="urgent" if received.priority == 1 else "routine",
        )  # fmt: skip
    if done is None:
        return
    services.hub.publish(ecg_service.TOPIC, json.dumps(done.push.as_dict()))  # after the commit
    with unit_of_work(services.engine) as conn:
        ecg_service.add_analysis(services.repository(conn, remote.context), services.clock.now(), done)


def _authenticate(services: Services):
    def authenticate(request: Request) -> AccessContext:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TelemedError(
                Category.UNAUTHENTICATED, "A bearer access token is required (Authorization: Bearer ...)"
            )
        invalid = {"WWW-Authenticate": 'Bearer realm="telemed", error="invalid_token"'}
        try:
            claims = tokens.decode(services.token_keys, token.strip())  # the keys are in the database
            valid = services.revocations.is_valid(claims)
        except TokenError as exc:
            raise TelemedError(Category.UNAUTHENTICATED, str(exc), headers=invalid) from None
        except OperationalError:
            raise TelemedError(Category.UNAVAILABLE, "The database is unavailable; retry shortly") from None
        if not valid:
            raise TelemedError(Category.UNAUTHENTICATED, "The access token was revoked", headers=invalid)
        return tokens.context_from_claims(claims)

    return authenticate


def tune_gc() -> None:
    """Take what the process holds once started (the FHIR definitions, compiled search parameters,
    templates, modules: millions of objects) out of the cyclic garbage collector's reach, and let
    it run less often. Otherwise every full collection walks all of them while a request waits:
    measured on the consultation board, 40 ms per page before and 12 ms after."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


GC_THRESHOLD = 20_000  # allocations between young-generation collections (CPython's default: 700)


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        tune_gc()
        services.start_background(asyncio.get_running_loop())
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
        _authenticate(services),
        services.repository,
        services.settings.max_body_bytes,
        services.settings.base_url,
        websocket=websocket.endpoint(services.hub, services.authenticate_token, services.can_bind),
        clock=services.clock,
    )
    app.include_router(auth_api.router)
    app.include_router(oauth.router)
    app.include_router(verification_router)
    app.include_router(dicomweb.router(services, _authenticate(services)))  # /dicomweb, same auth as /fhir
    # The viewer's DICOMweb: the portal's session cookie (path /portal) reaches it; read-only (no CSRF token).
    viewer_dicomweb = dicomweb.router(services, _authenticate(services), prefix="/portal/dicomweb", store_routes=False)
    app.include_router(viewer_dicomweb)
    app.include_router(ecg_api.router(services, _authenticate(services)))  # /api/ecg, same auth as /fhir
    app.include_router(pathology_api.router(services, _authenticate(services)))  # /api/pathology, and the gateway link

    @app.exception_handler(TelemedError)
    async def problem_details(_request: Request, exc: TelemedError) -> JSONResponse:
        """Errors under /api as RFC 9457 problem details (the FHIR endpoint renders OperationOutcomes)."""
        body = {
            "type": "about:blank",
            "title": exc.category.name.replace("_", " ").lower(),
            "status": exc.category.status,
        }
        body["detail"] = exc.message
        return JSONResponse(body, exc.category.status, headers=exc.headers, media_type="application/problem+json")

    portal.install(app, services)  # after problem_details: errors under /portal become pages
    app.add_route("/fhir", fhir.handle, methods=METHODS)  # the base URL without a trailing slash
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
    def root(request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):  # a browser: the portal
            return RedirectResponse("/portal/", 303)
        return JSONResponse({"name": "Telemed", "version": __version__, "fhir": "/fhir/metadata"})

    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory`` (several workers each build their own services)."""
    from telemed.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(Services.from_settings(settings))
