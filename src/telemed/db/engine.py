"""Engine construction and the unit of work.

The request (or job) owns the transaction: :func:`unit_of_work` yields a connection inside a
transaction and commits only when the block succeeds. Nothing below it commits.

SQLite: WAL journal and a busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so two
writers queue on the lock instead of failing later with SQLITE_BUSY on the read-to-write upgrade.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        db_path = make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            json_serializer=_dumps,
            json_deserializer=orjson.loads,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver callback
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - driver callback
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        return engine
    # No pool_pre_ping: it costs a round trip per request. A connection the server dropped fails
    # once, SQLAlchemy invalidates the pool, and the request gets a 503 it can retry.
    # force_custom_plan: psycopg prepares statements it sees often, and PostgreSQL's generic plan
    # for a search ignores how selective this patient or that code is (seconds instead of ms).
    return create_engine(
        url,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=20,
        pool_recycle=1800,
        connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
    )


_AFTER_COMMIT: dict[int, list[Callable[[dict], None]]] = {}


def on_commit(engine: Engine, callback: Callable[[dict], None]) -> None:
    """Call ``callback(conn.info)`` after each unit of work on ``engine`` has *really* committed
    (SQLAlchemy's ``commit`` event fires before the database commit, too early to wake a worker
    that must see the new rows)."""
    _AFTER_COMMIT.setdefault(id(engine), []).append(callback)


@contextmanager
def unit_of_work(engine: Engine, write: bool = True) -> Iterator[Connection]:
    """A transaction for writes. Reads on PostgreSQL run in autocommit mode: each statement sees
    committed data and no BEGIN/COMMIT round trips are spent on them."""
    with engine.connect() as conn:
        conn.info["write"] = write
        if not write and conn.dialect.name == "postgresql":
            # (SQLite keeps its deferred BEGIN: changing the pysqlite isolation level would undo
            # the BEGIN IMMEDIATE handling above when the connection returns to the pool.)
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
            return
        try:
            with conn.begin():
                yield conn
        except BaseException:
            conn.info.pop("telemed.pending", None)
            raise
        for callback in _AFTER_COMMIT.get(id(engine), ()):
            callback(conn.info)


def is_sqlite(conn_or_engine: Connection | Engine) -> bool:
    return conn_or_engine.dialect.name == "sqlite"
