"""Structured JSON logs with a request id, and Prometheus metrics by FHIR interaction."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from contextvars import ContextVar

from prometheus_client import CollectorRegistry, Counter, Histogram

request_id: ContextVar[str] = ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        for key in ("method", "path", "status", "duration_ms", "interaction", "user"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True  # our access log below carries the request id


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "telemed_http_requests", "HTTP requests", ["interaction", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "telemed_http_request_duration_seconds",
            "HTTP request latency",
            ["interaction"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


class ObservabilityMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead): request id in and out, access log, metrics."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger("telemed.access")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None) or uuid.uuid4().hex
        token = request_id.set(rid[:64])
        state = scope.setdefault("state", {})
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid[:64].encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            interaction = state.get("interaction") or _route_label(scope["path"])
            self.metrics.requests.labels(interaction, scope["method"], str(status_holder["status"])).inc()
            self.metrics.latency.labels(interaction).observe(elapsed)
            if self.log.isEnabledFor(logging.INFO):
                self.log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": _log_path(scope["path"]),
                        "status": status_holder["status"],
                        "duration_ms": round(elapsed * 1000, 2),
                        "interaction": interaction,
                    },
                )
            request_id.reset(token)


# Paths that carry a secret: the access log keeps their shape, not the secret.
SECRET_PATH_PREFIXES = ("/portal/invite/",)  # an external expert's invitation link (its token)


def _log_path(path: str) -> str:
    for prefix in SECRET_PATH_PREFIXES:
        if path.startswith(prefix):
            return prefix + "[redacted]"
    return path


def _route_label(path: str) -> str:
    return {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}.get(path, "other")
