"""Shared fixtures: the real app on a real uvicorn server, on SQLite and on PostgreSQL.

Every FHIR test runs once per backend (``backend`` is parametrised). PostgreSQL tests get a fresh
database of their own and are skipped, with the reason, when no server is reachable
(``TELEMED_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from telemed.app import Services, create_app
from telemed.db.migrate import upgrade
from telemed.identity import ensure_account, issue_token
from telemed.kernel.clock import SystemClock
from telemed.settings import Settings

PG_ADMIN_URL = os.environ.get("TELEMED_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def postgres_available() -> str | None:
    """None when PostgreSQL is reachable, else the reason it is not."""
    try:
        eng = create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"))
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"


def _new_pg_database() -> Iterator[str]:
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    name = f"telemed_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    yield from _new_pg_database()


@pytest.fixture
def own_pg_database() -> Iterator[str]:
    """A PostgreSQL database for one test (no other server's workers touch it)."""
    yield from _new_pg_database()


def make_settings(tmp: Path, database_url: str) -> Settings:
    return Settings(
        demo=True,
        var_dir=tmp,
        database_url=database_url,
        blob_url=f"file:{tmp}/blobs",
        secret_key="test-secret-" + "x" * 40,
        blob_threshold_bytes=1024,
        encryption_keys="k1:" + base64.b64encode(b"k" * 32).decode(),
        index_key=base64.b64encode(b"i" * 32).decode(),
        max_body_bytes=2 * 1024 * 1024,
    )


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def services(backend, tmp_path_factory, request) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp(backend)
    url = f"sqlite:///{tmp}/telemed.db" if backend == "sqlite" else request.getfixturevalue("pg_database")
    svc = Services.from_settings(make_settings(tmp, url))
    upgrade(svc.engine)
    yield svc
    svc.engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving the app in a background thread (a real socket, real HTTP)."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture(scope="session")
def server(services) -> Iterator[LiveServer]:
    with LiveServer(create_app(services)) as live:
        yield live


def token_for(services: Services, user: str, scopes: list[str] | None = None, ttl: int = 3600) -> str:
    from telemed.db.engine import unit_of_work

    with unit_of_work(services.engine) as conn:
        ensure_account(conn, user, user, ["platform-admin"], services.clock.now())
    return issue_token(services.token_keys, user, scopes or ["user/*.*"], ttl, SystemClock().now(), ["platform-admin"])


@pytest.fixture
def client(server, services) -> Iterator[httpx.Client]:
    """An authenticated FHIR client (JSON in, JSON out) against the live server."""
    headers = {
        "Authorization": f"Bearer {token_for(services, 'tester')}",
        "Content-Type": "application/fhir+json",
        "Accept": "application/fhir+json",
    }
    with httpx.Client(base_url=server.url + "/fhir", headers=headers, timeout=30) as c:
        yield c


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
