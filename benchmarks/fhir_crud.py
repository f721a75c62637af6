"""FHIR CRUD benchmark on PostgreSQL: Telemed over HTTP against the raw asyncpg driver, in one run.

    .venv/bin/python benchmarks/fhir_crud.py [--n 10000] [--concurrency 8] [--workers 2] [--json PATH]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test] [--url URL --token TOKEN]

Telemed: N Patient creates (POST /fhir/Patient, 201) then N reads (GET /fhir/Patient/<id>, 200, the
created ids in random order) from C concurrent keep-alive clients. Raw: the same work with asyncpg
and a pool of C connections, in schema ``raw`` of the same database, on the tables Telemed writes
on create with the same columns and indexes (migrations 0001 + 0002: ``resource``,
``resource_history`` and the eight search index tables ``idx_string`` ... ``idx_composite``).
A raw create is one transaction with the resource row, the history row (the same JSON document,
with id and meta, as jsonb) and exactly the search index rows Telemed writes for that document,
one ``executemany`` per index table that has rows. Those rows come from Telemed's own
``telemed.fhir.search.index.index_rows``, called on every prepared document (with its id and a
meta) before timing: raw pays for the inserts, not for extracting the rows (Telemed extracts them
inside each request; about 27 rows per Patient here: token, string, date). A raw read is one
``SELECT content ... WHERE resource_type = $1 AND id = $2``. Each phase starts with WARMUP
untimed operations. Goal (issue): Telemed >= 0.5x raw for create and for read.

Each run creates a database ``telemed_bench_<random>`` (dropped at the end, also on failure),
migrates it (``telemed migrate``), adds an account, gets a token (``telemed token create``) and
starts ``telemed serve`` on a free port. Before timing, the ``raw`` tables are checked against
Telemed's migrated ones (columns and index definitions; the run stops if they differ), and after
both runs the index row counts per table must match. ``--url``/``--token`` measure a running
server instead (these two checks are then skipped). ``--json PATH`` also writes the figures as JSON.

HTTP client: a minimal HTTP/1.1 client on asyncio streams with uvloop, one keep-alive connection
per client, no pipelining. Client, server and PostgreSQL share the machine, so client CPU is taken
from the server. Measured client CPU per request (GET /healthz, 8 clients): this client 0.06 ms,
aiohttp 0.16 ms, httpx.AsyncClient 1.26 ms; with httpx the client would be the bottleneck.
Exit status: 0 when both goals are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import uvloop

BIN = Path(sys.executable).parent  # the virtualenv's bin/, where the `telemed` script lives
SECRET = "telemed-benchmark-secret-key-0123456789"  # >= 32 characters, as production mode requires
WARMUP = 300  # untimed operations before each timed phase
GOAL = 0.5

# -- test data ---------------------------------------------------------------------------------
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉建国志文斌宇浩凯"
PLACES = [p.split("/") for p in "北京市/北京市/朝阳区/100 上海市/上海市/浦东新区/200 广东省/广州市/天河区/510".split()]


def make_patient(rng: random.Random, i: int) -> dict:
    """A realistic mainland-China Patient (about 600 bytes of UTF-8 JSON), distinct for each i."""
    family, given = rng.choice(SURNAMES), "".join(rng.choices(GIVEN, k=rng.choice((1, 2))))
    birth = f"{rng.randint(1940, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    province, city, district, postal = rng.choice(PLACES)
    street = f"{district}{rng.choice('东西南北')}大街{rng.randint(1, 300)}号"
    id_card = f"{rng.randint(110000, 659999)}{birth.replace('-', '')}{i % 10000:04d}"  # resident ID number
    official = {"use": "official", "type": {"text": "居民身份证"}, "system": "urn:oid:2.16.156.10011.1.3"}
    address = {"use": "home", "line": [street], "city": city, "district": district, "state": province}
    return {
        "resourceType": "Patient",
        "identifier": [
            {**official, "value": id_card},
            {"system": "urn:oid:2.16.156.10011.1.12", "value": f"MRN{i:08d}"},  # medical record number
        ],
        "active": True,
        "name": [{"use": "official", "text": family + given, "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": f"1{rng.randint(30, 89)}{i:08d}", "use": "mobile"}],
        "gender": rng.choice(("male", "female")),
        "birthDate": birth,
        "address": [{**address, "postalCode": f"{postal}{i % 1000:03d}", "country": "CN"}],
    }


# -- load generation -----------------------------------------------------------------------------
class HttpConnection:
    """One keep-alive HTTP/1.1 connection; requests are sent one at a time (no pipelining)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port = host, port
        self.common = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\nAccept: application/fhir+json\r\n"

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\n{self.common}"
        if body:
            head += f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        at = raw.find(b"\r\ncontent-length:")  # Starlette always sends it; no chunked responses here
        if at < 0:
            raise RuntimeError(f"response without Content-Length: {raw[:200]!r}")
        length = int(raw[at + 17 : raw.index(b"\r\n", at + 2)])
        return int(raw[9:12]), await self.reader.readexactly(length)


async def run_load(n: int, concurrency: int, op) -> tuple[float, list[float]]:
    """Run op(client, i) for i in 0..n-1 on `concurrency` clients; returns (seconds, latencies)."""
    items = iter(range(n))  # shared: each client takes the next item when it is free
    latencies: list[float] = []

    async def client(c: int) -> None:
        for i in items:
            t0 = time.perf_counter()
            await op(c, i)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return time.perf_counter() - start, latencies


async def create_then_read(create, read, ids: list, n: int, concurrency: int) -> dict:
    """Warm-up and n timed creates (create(c, i) sets ids[i]), then warm-up and n timed reads
    (read(c, id)) of the timed creates in random order."""
    await run_load(WARMUP, concurrency, lambda c, i: create(c, n + i))
    result = {"create": await run_load(n, concurrency, create)}
    order = random.sample(ids[:n], n)
    await run_load(min(WARMUP, n), concurrency, lambda c, i: read(c, order[i]))
    order = random.sample(ids[:n], n)
    result["read"] = await run_load(n, concurrency, lambda c, i: read(c, order[i]))
    return result


# -- the two systems under test ------------------------------------------------------------------
async def bench_telemed(base: str, token: str, bodies: list[bytes], n: int, concurrency: int) -> dict:
    url = urlsplit(base)
    prefix = url.path.rstrip("/") + "/fhir/Patient"
    conns = [HttpConnection(url.hostname, url.port or 80, token) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    ids: list[str | None] = [None] * len(bodies)

    async def create(c: int, i: int) -> None:
        status, body = await conns[c].request("POST", prefix, bodies[i])
        if status != 201:
            raise RuntimeError(f"create returned {status}: {body[:300]!r}")
        ids[i] = orjson.loads(body)["id"]

    async def read(c: int, id_: str) -> None:
        status, body = await conns[c].request("GET", f"{prefix}/{id_}")
        if status != 200:
            raise RuntimeError(f"read returned {status}: {body[:300]!r}")

    try:
        return await create_then_read(create, read, ids, n, concurrency)
    finally:
        for c in conns:
            c.writer.close()


# Migration 0002's search index tables: extra columns (name, SQL type) and the lookup index's columns.
RAW_INDEX_TABLES = {
    "string": ([("value", "varchar(255)"), ("exact", "varchar(255)")], ["value"]),
    "token": ([("system", "varchar(255)"), ("value", "varchar(255)"), ("text", "varchar(255)")], ["value", "system"]),
    "reference": (
        [("target_type", "varchar(64)"), ("target_id", "varchar(64)"), ("url", "varchar(512)")],
        ["target_id", "target_type"],
    ),
    "date": ([("low", "timestamptz"), ("high", "timestamptz")], ["low", "high"]),
    "number": ([("value", "double precision")], ["value"]),
    "quantity": (
        [("value", "double precision"), ("system", "varchar(255)"), ("unit_code", "varchar(64)")],
        ["unit_code", "value"],
    ),
    "uri": ([("value", "varchar(512)")], ["value"]),
    "composite": (
        [("c1_system", "varchar(255)"), ("c1_value", "varchar(255)"), ("c2_system", "varchar(255)"),
         ("c2_value", "varchar(255)"), ("c2_low", "double precision"), ("c2_high", "double precision")],
        ["c1_value", "c2_value"],
    ),
}  # fmt: skip
RAW_SCHEMA = """
CREATE SCHEMA raw;
SET search_path TO raw;
CREATE TABLE resource (resource_type varchar(64), id varchar(64), version_id integer NOT NULL,
    last_updated timestamptz NOT NULL, deleted boolean NOT NULL, has_blobs boolean NOT NULL, content jsonb,
    PRIMARY KEY (resource_type, id));
CREATE INDEX ix_resource_type_updated ON resource (resource_type, last_updated);
CREATE TABLE resource_history (seq bigserial PRIMARY KEY, resource_type varchar(64) NOT NULL,
    id varchar(64) NOT NULL, version_id integer NOT NULL, last_updated timestamptz NOT NULL,
    method varchar(8) NOT NULL, has_blobs boolean NOT NULL, content jsonb,
    CONSTRAINT uq_history_version UNIQUE (resource_type, id, version_id));
CREATE INDEX ix_history_type_seq ON resource_history (resource_type, seq);
""" + "".join(
    f"CREATE TABLE idx_{kind} (resource_type varchar(64) NOT NULL, resource_id varchar(64) NOT NULL,"
    f" code varchar(64) NOT NULL, {', '.join(f'{c} {t}' for c, t in cols)});\n"
    f"CREATE INDEX ix_idx_{kind}_lookup ON idx_{kind} (resource_type, code, {', '.join(lookup)});\n"
    f"CREATE INDEX ix_idx_{kind}_owner ON idx_{kind} (resource_type, resource_id, code);\n"
    for kind, (cols, lookup) in RAW_INDEX_TABLES.items()
)
RAW_TABLES = ["resource", "resource_history", *(f"idx_{kind}" for kind in RAW_INDEX_TABLES)]
RAW_INSERT_RESOURCE = "INSERT INTO resource VALUES ('Patient', $1, 1, $2, false, false, $3)"
RAW_INSERT_HISTORY = (
    "INSERT INTO resource_history (resource_type, id, version_id, last_updated, method, has_blobs, content)"
    " VALUES ('Patient', $1, 1, $2, 'POST', false, $3)"
)
RAW_INSERT_INDEX = {  # INSERT INTO idx_token VALUES ('Patient', $1, $2, $3, $4, $5): resource_id, code, columns
    kind: f"INSERT INTO idx_{kind} VALUES ('Patient', {', '.join(f'${k}' for k in range(1, len(cols) + 3))})"
    for kind, (cols, _) in RAW_INDEX_TABLES.items()
}
RAW_READ = "SELECT content FROM resource WHERE resource_type = $1 AND id = $2"


async def create_raw_schema(db_url: str, check: bool) -> None:
    """Create schema ``raw``; with check, require its tables to equal Telemed's migrated ones in
    ``public`` (column names, types and nullability; index definitions)."""
    con = await asyncpg.connect(db_url)
    try:
        await con.execute(RAW_SCHEMA)
        if not check:
            return
        shapes = {}
        for schema in ("public", "raw"):
            columns = await con.fetch(
                "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable"
                " FROM information_schema.columns WHERE table_schema = $1 AND table_name = ANY($2)"
                " ORDER BY table_name, ordinal_position",
                schema,
                RAW_TABLES,
            )
            indexes = await con.fetch(
                "SELECT tablename, indexname, replace(indexdef, $1 || '.', '') AS def FROM pg_indexes"
                " WHERE schemaname = $1 AND tablename = ANY($2) ORDER BY tablename, indexname",
                schema,
                RAW_TABLES,
            )
            shapes[schema] = ([tuple(r) for r in columns], [tuple(r) for r in indexes])
        if shapes["public"] != shapes["raw"]:
            diff = [
                f"  {kind} {'+' if schema == 'raw' else '-'} {item}"
                for kind, i in (("column", 0), ("index", 1))
                for schema, other in (("public", "raw"), ("raw", "public"))
                for item in shapes[schema][i]
                if item not in shapes[other][i]
            ]
            raise RuntimeError("the raw tables differ from Telemed's (- Telemed, + raw):\n" + "\n".join(diff))
    finally:
        await con.close()


async def index_row_counts(db_url: str) -> dict[str, dict[str, int]]:
    """Rows per index table, in Telemed's tables (public) and raw's."""
    con = await asyncpg.connect(db_url)
    try:
        return {
            schema: {
                f"idx_{kind}": await con.fetchval(f"SELECT count(*) FROM {schema}.idx_{kind}")
                for kind in RAW_INDEX_TABLES
            }
            for schema in ("public", "raw")
        }
    finally:
        await con.close()


def raw_index_rows(docs: list[dict], ids: list[str]) -> list[list[tuple[str, list[tuple]]]]:
    """Per document: (INSERT statement, argument tuples) for each index table it has rows in, from
    Telemed's index_rows on the document as stored (with id and meta). Untimed."""
    from telemed.fhir.search.index import index_rows

    meta = {"versionId": "1", "lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds")}
    out = []
    for doc, id_ in zip(docs, ids, strict=True):
        stamped = {"resourceType": "Patient", "id": id_, **doc, "meta": meta}
        inserts = []
        for kind, rows in index_rows(stamped).items():
            if kind not in RAW_INDEX_TABLES:
                raise RuntimeError(f"index_rows returned rows for an unknown table kind {kind!r}")
            columns = [c for c, _ in RAW_INDEX_TABLES[kind][0]]
            inserts.append((RAW_INSERT_INDEX[kind], [(id_, r["code"], *(r.get(c) for c in columns)) for r in rows]))
        out.append(inserts)
    return out


async def bench_raw(db_url: str, docs: list[dict], n: int, concurrency: int) -> dict:
    """What Telemed does per request, with the bare driver: same rows, same JSON, same indexes."""
    pool = await asyncpg.create_pool(
        db_url, min_size=concurrency, max_size=concurrency, server_settings={"search_path": "raw"}
    )
    ids = [str(uuid.uuid4()) for _ in docs]  # Telemed assigns uuid4 ids too
    index = raw_index_rows(docs, ids)

    async def create(_c: int, i: int) -> None:
        now = datetime.now(UTC)  # the document as Telemed stores it: with id and meta
        meta = {"versionId": "1", "lastUpdated": now.isoformat(timespec="milliseconds")}
        content = orjson.dumps({"resourceType": "Patient", "id": ids[i], **docs[i], "meta": meta}).decode()
        async with pool.acquire() as con, con.transaction():
            await con.execute(RAW_INSERT_RESOURCE, ids[i], now, content)
            await con.execute(RAW_INSERT_HISTORY, ids[i], now, content)
            for statement, rows in index[i]:  # the index rows Telemed writes for this document
                await con.executemany(statement, rows)

    async def read(_c: int, id_: str) -> None:
        async with pool.acquire() as con:
            if await con.fetchrow(RAW_READ, "Patient", id_) is None:
                raise RuntimeError(f"raw read found no row for {id_}")

    try:
        result = await create_then_read(create, read, ids, n, concurrency)
    finally:
        await pool.close()
    result["index_rows_per_create"] = sum(len(rows) for inserts in index for _, rows in inserts) / len(index)
    return result


# -- set-up and tear-down ------------------------------------------------------------------------
async def admin_sql(url: str, sql: str) -> None:
    con = await asyncpg.connect(url)
    try:
        await con.execute(sql)
    finally:
        await con.close()


def telemed_env(db_url: str, tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMED_")}
    env.update(TELEMED_DEMO="false", TELEMED_DATABASE_URL=db_url, TELEMED_SECRET_KEY=SECRET, TELEMED_VAR_DIR=tmp)
    env.update(TELEMED_BLOB_URL=f"file:{tmp}/blobs", TELEMED_LOG_LEVEL="WARNING")
    # Outside demo mode the field-encryption keys are required: fixed benchmark keys (not secrets),
    # the same on every run so a kept database (--reuse-db) stays readable.
    env.update(
        TELEMED_ENCRYPTION_KEYS="bench1:28i5omEqhbupl57wFjCaWhtO1J9Mifzn47241XaDM58=",
        TELEMED_INDEX_KEY="wGnBMJFI4qKNqV6acdehlz7Ap+h+j6kdIW+0w488aLE=",
    )
    return env


def telemed_cli(env: dict, *args: str) -> str:
    done = subprocess.run([BIN / "telemed", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"telemed {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def prepare_database(env: dict, db_url: str) -> str:
    """Migrate, create the account `bench` and return a bearer token for it."""
    telemed_cli(env, "migrate")
    from telemed.db.engine import make_engine, unit_of_work
    from telemed.identity import ensure_account

    engine = make_engine(db_url)
    with unit_of_work(engine) as conn:
        ensure_account(conn, "bench", "Benchmark client", ["platform-admin"], datetime.now(UTC))
    engine.dispose()
    return telemed_cli(env, "token", "create", "--user", "bench", "--ttl", "86400").strip().splitlines()[-1]


def start_server(env: dict, workers: int, tmp: str) -> tuple[subprocess.Popen, str, list[str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(BIN / "telemed"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    log = Path(tmp) / "server.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, base, cmd
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("telemed serve did not become ready:\n" + log.read_text()[-3000:])


def stop_server(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor stops its workers
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the server's own process group (start_new_session)
        proc.wait()


# -- report --------------------------------------------------------------------------------------
def ms(latencies: list[float], q: float) -> float:
    return sorted(latencies)[min(len(latencies) - 1, int(q * len(latencies)))] * 1000


def report(args, server_cmd: list[str] | None, tel: dict, raw: dict) -> tuple[bool, dict]:
    """Print the table; returns (both goals met, the figures for --json)."""
    argv = [a if prev != "--token" else "<token>" for prev, a in zip(["", *sys.argv], sys.argv, strict=False)]
    command = shlex.join([sys.executable, *argv])
    print(f"command: {command}")
    if server_cmd:
        print(f"server:  {shlex.join(server_cmd)}")
    print(f"machine: {os.cpu_count()} cores, shared by client, server and PostgreSQL")
    print(f"load:    n={args.n} per operation, concurrency={args.concurrency}, warm-up={WARMUP} per phase\n")
    print(f"{'operation':<10}{'Telemed req/s':>14}{'raw ops/s':>11}{'ratio':>8}  goal     result  ", end="")
    print(f"{'Telemed p50/p99 ms':<20}raw p50/p99 ms")
    ok = True
    figures = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "server": shlex.join(server_cmd) if server_cmd else None,
        "cores": os.cpu_count(),
        "n": args.n,
        "concurrency": args.concurrency,
        "workers": None if args.url else args.workers,
        "warmup": WARMUP,
        "goal": GOAL,
        "raw_index_rows_per_create": raw["index_rows_per_create"],
        "operations": {},
    }
    for op in ("create", "read"):
        (t_sec, t_lat), (r_sec, r_lat) = tel[op], raw[op]
        t_rate, r_rate = len(t_lat) / t_sec, len(r_lat) / r_sec
        passed = t_rate / r_rate >= GOAL
        ok &= passed
        t_ms, r_ms = (f"{ms(lat, 0.5):.2f} / {ms(lat, 0.99):.2f}" for lat in (t_lat, r_lat))
        verdict = "PASS" if passed else "FAIL"
        print(
            f"{op:<10}{t_rate:>14.0f}{r_rate:>11.0f}{t_rate / r_rate:>7.2f}x  >={GOAL}x  {verdict:<6}  {t_ms:<20}{r_ms}"
        )
        figures["operations"][op] = {
            "telemed_per_s": round(t_rate, 1),
            "raw_per_s": round(r_rate, 1),
            "ratio": round(t_rate / r_rate, 3),
            "passed": passed,
            "telemed_ms": {"p50": round(ms(t_lat, 0.5), 3), "p99": round(ms(t_lat, 0.99), 3)},
            "raw_ms": {"p50": round(ms(r_lat, 0.5), 3), "p99": round(ms(r_lat, 0.99), 3)},
        }
    figures["passed"] = ok
    return ok, figures


def main() -> int:
    default_pg = os.environ.get("TELEMED_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="creates and reads per system (default 10000)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients and connections (default 8)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers of the Telemed server (default 2)")
    p.add_argument("--postgres-url", default=default_pg, help="where to CREATE/DROP the benchmark database")
    p.add_argument("--url", help="benchmark this running server (base URL without /fhir) instead of starting one")
    p.add_argument("--token", help="bearer token for --url")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    args = p.parse_args()
    if args.url and not args.token:
        p.error("--url needs --token")

    rng = random.Random(20261125)
    docs = [make_patient(rng, i) for i in range(args.n + WARMUP)]  # the same documents for both systems
    dbname = f"telemed_bench_{uuid.uuid4().hex[:10]}"
    db_url = urlsplit(args.postgres_url)._replace(path="/" + dbname).geturl()
    asyncio.run(admin_sql(args.postgres_url, f'CREATE DATABASE "{dbname}"'))
    server, server_cmd = None, None
    try:
        with tempfile.TemporaryDirectory(prefix="telemed-bench-") as tmp:
            try:
                base, token = args.url, args.token
                if not base:
                    env = telemed_env(db_url, tmp)
                    token = prepare_database(env, db_url)
                asyncio.run(create_raw_schema(db_url, check=not base))  # same tables as Telemed's, or stop
                if not base:
                    server, base, server_cmd = start_server(env, args.workers, tmp)

                async def both() -> tuple[dict, dict]:
                    bodies = [orjson.dumps(d) for d in docs]
                    tel = await bench_telemed(base, token, bodies, args.n, args.concurrency)
                    stop_server(server)  # idle by now; stopped so the raw phase has the machine to itself
                    return tel, await bench_raw(db_url, docs, args.n, args.concurrency)

                tel, raw = uvloop.run(both())  # the server's event loop too; it also makes the client cheaper
            finally:
                stop_server(server)
            if not args.url:  # both wrote the same documents: they must have written the same index rows
                counts = asyncio.run(index_row_counts(db_url))
                if counts["public"] != counts["raw"]:
                    raise RuntimeError(f"index rows differ: Telemed {counts['public']}, raw {counts['raw']}")
    finally:
        asyncio.run(admin_sql(args.postgres_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    ok, figures = report(args, server_cmd, tel, raw)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
