"""FHIR search benchmark on PostgreSQL: bulk ingest, then six search shapes, Telemed over HTTP
against the same queries hand-written in SQL on Telemed's own tables and indexes.

    .venv/bin/python benchmarks/fhir_search.py [--patients 10000] [--observations 1000000] [--bundle 500]
        [--concurrency 8] [--queries 500] [--workers 2] [--json PATH] [--keep-db]
        [--reuse-db URL [--token T]] [--dump-sql DIR] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

Ingest: Patients (realistic mainland-China demographics, ``fhir_crud.make_patient``), then
Observations (about ten LOINC vital-sign and lab codes with UCUM valueQuantity, ``subject``
Patient/<id>, ``effectiveDateTime`` spread over two years, 2024-07-01 .. 2026-07-01 +08:00; the lab
codes 4548-4 and 1558-6 only for a 20 % "chronic" cohort), all as transaction Bundles of BUNDLE
entries (``POST`` with ``urn:uuid:`` fullUrls, ``Prefer: return=minimal``) from C concurrent clients.
Bundles are built before each phase is timed. Prints resources/s per phase and overall. After the
load (untimed): ``VACUUM (ANALYZE)``, as autovacuum would do soon after a bulk load.

Queries, each with random parameters (the same parameter sets for Telemed and raw SQL), Q per kind
after Q/10 (at most 50) untimed warm-up requests, C concurrent clients:
  a  Observation?subject=Patient/X&code=http://loinc.org|C&date=geY-M-01&date=ltY-M+6-01
  b  Observation?subject=Patient/X&_sort=-date&_count=20          (one patient's latest, as a chart)
  b2 Observation?code=http://loinc.org|C&_sort=-date&_count=20     (unscoped, the issue's literal form)
  c  Observation?subject=Patient/X&_include=Observation:subject&_count=20
  d  Observation?subject.name=<family name>&code=http://loinc.org|C&_count=20
  e  Patient?_has:Observation:subject:code=http://loinc.org|<lab code>&name=<family name>&_count=20
  f  Observation?subject=Patient/X&code:not=http://loinc.org|C&_count=20
The C client connections are spread evenly over the server's worker processes (checked with ``ss``;
opened at once, they would all land on one uvicorn worker). Every Telemed response must be 200 with
a searchset Bundle. Raw: the equivalent SQL written by hand
(see RAW below) run with asyncpg on a pool of C connections, returning the same page (ids and
content; for c also the included Patients). Telemed additionally writes the request's AuditEvent,
and for _sort stores the first 50 ordered ids (paging snapshot): that work is part of Telemed's
figure, not of raw's (a full page carries no Bundle.total unless ``_total`` asks for one; the
queries here do not). After timing, the pages of the first 10 parameter sets per kind
are compared: Telemed and raw must return the same ids in the same order. The Telemed server is
stopped before the raw phase. ``--plan-cache-mode`` sets ``plan_cache_mode`` on the database for
both (default ``auto``, PostgreSQL's: Telemed's psycopg prepares a statement after 5 executions on a
connection and asyncpg at once, and a prepared statement may switch to a generic plan, blind to the
parameter values). Each phase prints the CPU seconds of client, server, PostgreSQL and everything
else (the machine may be shared; a phase with much "other" CPU is not trustworthy).
Goals (issue): ingest >= 2,000 resources/s; p95 < 20 ms per query.

``--keep-db`` keeps the database and prints its URL and a token; ``--reuse-db URL`` (with ``--token``,
or a new token is issued for the account ``bench``) skips creation and loading and runs only the query
phase against that database. ``--dump-sql DIR`` writes Telemed's SQL for the first parameter set of
each kind (page statement, and the count statement when there is one) as files for ``psql -f``.
Exit status: 0 when all goals are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import asyncpg
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fhir_crud import (  # noqa: E402 - the shared harness of benchmarks/fhir_crud.py
    SURNAMES,
    HttpConnection,
    admin_sql,
    make_patient,
    ms,
    prepare_database,
    run_load,
    start_server,
    stop_server,
    telemed_cli,
    telemed_env,
)

INGEST_GOAL = 2000.0  # resources/s
P95_GOAL = 20.0  # ms
MAX_WARMUP = 50
CHECKED = 10  # parameter sets per kind whose first page is compared between Telemed and raw

# -- test data ---------------------------------------------------------------------------------
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# code, English display, Chinese text, UCUM code, unit, low, high, decimals, category, weight
CODES = [
    ("8480-6", "Systolic blood pressure", "收缩压", "mm[Hg]", "mmHg", 95, 175, 0, "vital-signs", 1.0),
    ("8462-4", "Diastolic blood pressure", "舒张压", "mm[Hg]", "mmHg", 55, 110, 0, "vital-signs", 1.0),
    ("8867-4", "Heart rate", "心率", "/min", "beats/minute", 50, 120, 0, "vital-signs", 1.0),
    ("9279-1", "Respiratory rate", "呼吸频率", "/min", "breaths/minute", 12, 24, 0, "vital-signs", 1.0),
    ("8310-5", "Body temperature", "体温", "Cel", "°C", 36.0, 38.5, 1, "vital-signs", 1.0),
    ("59408-5", "Oxygen saturation by pulse oximetry", "血氧饱和度", "%", "%", 90, 100, 0, "vital-signs", 1.0),
    ("29463-7", "Body weight", "体重", "kg", "kg", 40, 100, 1, "vital-signs", 1.0),
    ("8302-2", "Body height", "身高", "cm", "cm", 150, 190, 0, "vital-signs", 1.0),
    ("39156-5", "Body mass index", "体重指数", "kg/m2", "kg/m2", 17, 35, 1, "vital-signs", 1.0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "糖化血红蛋白", "%", "%", 4.5, 11, 1, "laboratory", 0.5),
    ("1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma", "空腹血糖", "mg/dL", "mg/dL", 70, 250, 0,
     "laboratory", 0.5),
]  # fmt: skip
VITALS = [c[0] for c in CODES if c[8] == "vital-signs"]
LABS = [c[0] for c in CODES if c[8] == "laboratory"]
CN = timezone(timedelta(hours=8))
DATA_START = datetime(2024, 7, 1, tzinfo=CN)
DATA_DAYS = 730


def make_observation(rng: random.Random, patient_id: str, spec: tuple) -> dict:
    code, display, text, ucum, unit, low, high, decimals, category, _ = spec
    when = DATA_START + timedelta(days=rng.randrange(DATA_DAYS), minutes=rng.randrange(7 * 60, 21 * 60))
    value = round(rng.uniform(low, high), decimals) if decimals else rng.randint(int(low), int(high))
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": text},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when.isoformat(timespec="seconds"),
        "issued": (when + timedelta(minutes=rng.randint(1, 90))).isoformat(timespec="seconds"),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }


def observations(rng: random.Random, patient_ids: list[str], n: int):
    """n Observations over the patients; lab codes only for the cohort (every fifth patient)."""
    cohort = patient_ids[::5]
    weights = [c[9] for c in CODES]
    for spec in rng.choices(CODES, weights, k=n):
        pool = cohort if spec[8] == "laboratory" else patient_ids
        yield make_observation(rng, rng.choice(pool), spec)


def transaction(resources) -> bytes:
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
        for r in resources
    ]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


class CpuMeter:
    """CPU seconds used during a phase by this client, the server's processes, the PostgreSQL backends
    of the benchmark database, and everything else on the machine (other users' work, autovacuum,
    checkpoints): the machine is shared, so a phase is only trustworthy when "other" is small."""

    def __init__(self, server_pid: int | None, dbname: str | None):
        self.server_pid, self.dbname = server_pid, dbname
        self.tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _machine() -> int:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal

    def _procs(self) -> tuple[int, int]:
        server = postgres = 0
        tree = {self.server_pid} if self.server_pid else set()
        stats = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            stats[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]), cmd)  # ppid, utime + stime
        for _ in range(3):  # uvicorn supervisor -> workers (-> multiprocessing helpers)
            tree |= {pid for pid, (ppid, _, _) in stats.items() if ppid in tree}
        for pid, (_, ticks, cmd) in stats.items():
            if pid in tree:
                server += ticks
            elif self.dbname and cmd.startswith(b"postgres: ") and f" {self.dbname} ".encode() in cmd:
                postgres += ticks
        return server, postgres

    def __enter__(self) -> CpuMeter:
        self.t0, self.m0, self.c0, self.p0 = time.perf_counter(), self._machine(), os.times(), self._procs()
        return self

    def __exit__(self, *exc) -> None:
        t1, m1, c1, p1 = time.perf_counter(), self._machine(), os.times(), self._procs()
        client = (c1.user + c1.system) - (self.c0.user + self.c0.system)
        server, postgres = ((b - a) / self.tick for a, b in zip(self.p0, p1, strict=True))
        machine = (m1 - self.m0) / self.tick
        self.figures = {
            "wall_s": round(t1 - self.t0, 2),
            "client_s": round(client, 2),
            "server_s": round(server, 2),
            "postgres_s": round(postgres, 2),
            "other_s": round(max(machine - client - server - postgres, 0.0), 2),
            "capacity_s": round((t1 - self.t0) * (os.cpu_count() or 1), 2),
        }

    def line(self) -> str:
        f = self.figures
        return (f"CPU s over {f['wall_s']} s wall ({f['capacity_s']} available): client {f['client_s']}, "
                f"server {f['server_s']}, postgres {f['postgres_s']}, other {f['other_s']}")  # fmt: skip


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- ingest ------------------------------------------------------------------------------------------
def _server_pids(port: int) -> dict[int, int]:
    """Client port -> pid of the server process that accepted the connection (``ss``)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    )
    pids = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if "pid=" in line and len(fields) >= 4:
            pids[int(fields[3].rsplit(":", 1)[1])] = int(line.split("pid=")[1].split(",")[0])
    return pids


async def open_balanced(host: str, port: int, token: str, n: int, workers: int, headers: str = "") -> list:
    """n keep-alive connections spread evenly over the server's worker processes. Connections
    opened together all land on one uvicorn worker (it accepts them in one burst), so ``--workers
    2`` would run on one core of Python; a connection that lands on a full worker is reopened."""
    quota, per_pid, conns, spare = -(-n // max(workers, 1)), Counter(), [], []
    for _ in range(n * 20):
        if len(conns) == n:
            break
        c = HttpConnection(host, port, token)
        c.common += headers
        await c.open()
        mine = c.writer.get_extra_info("sockname")[1]
        pid = None
        for _ in range(100):  # until the server has accepted it
            pid = _server_pids(port).get(mine)
            if pid is not None:
                break
            await asyncio.sleep(0.01)
        if pid is None or per_pid[pid] < quota:
            per_pid[pid] += 1
            conns.append(c)
        else:
            spare.append(c)  # kept open until the end, so the next one goes elsewhere
    for c in spare:
        c.writer.close()
    conns += [await _opened(host, port, token, headers) for _ in range(n - len(conns))]  # gave up balancing
    print(f"  client connections per server process: {dict(per_pid)}", flush=True)
    return conns


async def _opened(host: str, port: int, token: str, headers: str) -> HttpConnection:
    c = HttpConnection(host, port, token)
    c.common += headers
    await c.open()
    return c


async def ingest_phase(
    base: str, token: str, bodies: list[bytes], concurrency: int, workers: int
) -> tuple[float, list[list[str]]]:
    """POST each transaction Bundle; returns (seconds, per Bundle the ids created, in entry order)."""
    url = urlsplit(base)
    conns = await open_balanced(url.hostname, url.port, token, concurrency, workers, "Prefer: return=minimal\r\n")
    created: list[list[str]] = [[] for _ in bodies]

    async def post(c: int, i: int) -> None:
        status, body = await conns[c].request("POST", url.path.rstrip("/") + "/fhir", bodies[i])
        if status != 200:
            raise RuntimeError(f"transaction returned {status}: {body[:500]!r}")
        response = orjson.loads(body)
        for entry in response["entry"]:
            if not entry["response"]["status"].startswith("201"):
                raise RuntimeError(f"transaction entry answered {entry['response']}")
            created[i].append(entry["response"]["location"].split("/_history/")[0].rsplit("/", 1)[1])

    try:
        seconds, _ = await run_load(len(bodies), concurrency, post)
    finally:
        for c in conns:
            c.writer.close()
    return seconds, created


def load(base: str, token: str, args, meter) -> dict:
    rng = random.Random(20261126)
    patients = [make_patient(rng, i) for i in range(args.patients)]
    bodies = [transaction(b) for b in chunks(patients, args.bundle)]
    print(f"ingest: {args.patients} Patients in {len(bodies)} Bundles ...", flush=True)
    with meter() as p_cpu:
        p_sec, created = uvloop.run(ingest_phase(base, token, bodies, args.concurrency, args.workers))
    patient_ids = [i for ids in created for i in ids]
    assert len(patient_ids) == args.patients
    print(f"  {args.patients / p_sec:.0f} Patients/s ({p_sec:.1f} s); {p_cpu.line()}", flush=True)
    bodies = [transaction(b) for b in chunks(list(observations(rng, patient_ids, args.observations)), args.bundle)]
    print(f"ingest: {args.observations} Observations in {len(bodies)} Bundles ...", flush=True)
    with meter() as o_cpu:
        o_sec, created = uvloop.run(ingest_phase(base, token, bodies, args.concurrency, args.workers))
    assert sum(len(ids) for ids in created) == args.observations
    print(f"  {args.observations / o_sec:.0f} Observations/s ({o_sec:.1f} s); {o_cpu.line()}", flush=True)
    return {
        "patients": {
            "n": args.patients,
            "seconds": round(p_sec, 2),
            "per_s": round(args.patients / p_sec, 1),
            "cpu": p_cpu.figures,
        },
        "observations": {
            "n": args.observations,
            "seconds": round(o_sec, 2),
            "per_s": round(args.observations / o_sec, 1),
            "cpu": o_cpu.figures,
        },
        "overall_per_s": round((args.patients + args.observations) / (p_sec + o_sec), 1),
        "bundle": args.bundle,
    }


# -- the queries ---------------------------------------------------------------------------------------
def _window(rng: random.Random) -> tuple[datetime, datetime]:
    """A random half-year [start, end) inside the data's two years, on month boundaries (UTC, as
    Telemed reads dates without a zone)."""
    m = rng.randrange(19)  # 2024-07 .. 2026-01 as the first month
    y, mo = 2024 + (6 + m) // 12, (6 + m) % 12 + 1
    y2, mo2 = y + (mo + 5) // 12, (mo + 5) % 12 + 1
    return datetime(y, mo, 1, tzinfo=UTC), datetime(y2, mo2, 1, tzinfo=UTC)


def make_params(kind: str, rng: random.Random, patient_ids: list[str]) -> dict:
    if kind in ("a", "b", "c", "f"):
        p = {"pid": rng.choice(patient_ids), "code": rng.choice(VITALS)}
        if kind == "a":
            p["low"], p["high"] = _window(rng)
        return p
    if kind == "b2":
        return {"code": rng.choice(VITALS + LABS)}
    if kind == "d":
        return {"family": rng.choice(SURNAMES), "code": rng.choice(VITALS)}
    return {"family": rng.choice(SURNAMES), "code": rng.choice(LABS)}  # e


def telemed_params(kind: str, p: dict) -> tuple[str, list[tuple[str, str]]]:
    code = f"{LOINC}|{p['code']}"
    if kind == "a":
        return "Observation", [("subject", f"Patient/{p['pid']}"), ("code", code),
                               ("date", f"ge{p['low']:%Y-%m-%d}"), ("date", f"lt{p['high']:%Y-%m-%d}")]  # fmt: skip
    if kind == "b":
        return "Observation", [("subject", f"Patient/{p['pid']}"), ("_sort", "-date"), ("_count", "20")]
    if kind == "b2":
        return "Observation", [("code", code), ("_sort", "-date"), ("_count", "20")]
    if kind == "c":
        return "Observation", [("subject", f"Patient/{p['pid']}"), ("_include", "Observation:subject"),
                               ("_count", "20")]  # fmt: skip
    if kind == "d":
        return "Observation", [("subject.name", p["family"]), ("code", code), ("_count", "20")]
    if kind == "e":
        return "Patient", [("_has:Observation:subject:code", code), ("name", p["family"]), ("_count", "20")]
    return "Observation", [("subject", f"Patient/{p['pid']}"), ("code:not", code), ("_count", "20")]  # f


KINDS = {
    "a": "patient + code + date range",
    "b": "patient, _sort=-date&_count=20",
    "b2": "code, _sort=-date&_count=20 (unscoped)",
    "c": "patient, _include=Observation:subject",
    "d": "chained subject.name + code",
    "e": "Patient _has:Observation:subject:code + name",
    "f": "patient + code:not",
}

# Raw: hand-written SQL on Telemed's tables and indexes (migrations 0001/0002), one statement per
# page (c: plus one for the included Patients). $n parameters as in raw_args. d and e add the
# prefix as a range (value >= 'X' AND value < next(X)) next to Telemed's LIKE 'X%': LIKE can use the
# b-tree index only under the "C" collation (this cluster's C.UTF-8 is not), the range can.
_SUBJECT = "s.resource_type = 'Observation' AND s.code = 'subject' AND s.target_type = 'Patient' AND s.target_id = $1"
_OBS = "JOIN resource r ON r.resource_type = 'Observation' AND r.id = s.resource_id AND NOT r.deleted"
RAW = {
    "a": f"""SELECT r.id, r.content FROM idx_reference s {_OBS}
        WHERE {_SUBJECT}
          AND EXISTS (SELECT 1 FROM idx_token c WHERE c.resource_type = 'Observation' AND c.resource_id = s.resource_id
                      AND c.code = 'code' AND c.system = $2 AND c.value = $3)
          AND EXISTS (SELECT 1 FROM idx_date d WHERE d.resource_type = 'Observation' AND d.resource_id = s.resource_id
                      AND d.code = 'date' AND d.high >= $4 AND d.low < $5)
        ORDER BY r.id LIMIT 50""",
    "b": f"""SELECT r.id, r.content FROM idx_reference s {_OBS}
        LEFT JOIN idx_date d ON d.resource_type = 'Observation' AND d.resource_id = s.resource_id AND d.code = 'date'
        WHERE {_SUBJECT}
        ORDER BY d.low DESC NULLS LAST, r.id LIMIT 20""",
    "b2": """SELECT r.id, r.content FROM idx_token c
        JOIN idx_date d ON d.resource_type = 'Observation' AND d.resource_id = c.resource_id AND d.code = 'date'
        JOIN resource r ON r.resource_type = 'Observation' AND r.id = c.resource_id AND NOT r.deleted
        WHERE c.resource_type = 'Observation' AND c.code = 'code' AND c.system = $1 AND c.value = $2
        ORDER BY d.low DESC, r.id LIMIT 20""",
    "c": f"""SELECT r.id, r.content FROM idx_reference s {_OBS}
        WHERE {_SUBJECT}
        ORDER BY r.id LIMIT 20""",
    "c_include": """SELECT p.id, p.content FROM resource p
        WHERE p.resource_type = 'Patient' AND NOT p.deleted AND p.id IN (
            SELECT s.target_id FROM idx_reference s WHERE s.resource_type = 'Observation' AND s.code = 'subject'
            AND s.target_type = 'Patient' AND s.resource_id = ANY($1::varchar[]))
        ORDER BY p.id""",
    "d": """SELECT r.id, r.content FROM resource r
        WHERE r.resource_type = 'Observation' AND NOT r.deleted
          AND r.id IN (SELECT s.resource_id FROM idx_string n
                       JOIN resource p ON p.resource_type = 'Patient' AND p.id = n.resource_id AND NOT p.deleted
                       JOIN idx_reference s ON s.resource_type = 'Observation' AND s.code = 'subject'
                            AND s.target_type = 'Patient' AND s.target_id = n.resource_id
                       WHERE n.resource_type = 'Patient' AND n.code = 'name' AND n.value LIKE $1
                         AND n.value >= $4 AND n.value < $5)
          AND r.id IN (SELECT c.resource_id FROM idx_token c WHERE c.resource_type = 'Observation' AND c.code = 'code'
                       AND c.system = $2 AND c.value = $3)
        ORDER BY r.id LIMIT 20""",
    "e": """SELECT p.id, p.content FROM resource p
        WHERE p.resource_type = 'Patient' AND NOT p.deleted
          AND p.id IN (SELECT n.resource_id FROM idx_string n WHERE n.resource_type = 'Patient' AND n.code = 'name'
                       AND n.value LIKE $1 AND n.value >= $4 AND n.value < $5)
          AND EXISTS (SELECT 1 FROM idx_reference s
                      JOIN idx_token c ON c.resource_type = 'Observation' AND c.resource_id = s.resource_id
                           AND c.code = 'code' AND c.system = $2 AND c.value = $3
                      JOIN resource o ON o.resource_type = 'Observation' AND o.id = s.resource_id AND NOT o.deleted
                      WHERE s.resource_type = 'Observation' AND s.code = 'subject' AND s.target_type = 'Patient'
                        AND s.target_id = p.id)
        ORDER BY p.id LIMIT 20""",
    "f": f"""SELECT r.id, r.content FROM idx_reference s {_OBS}
        WHERE {_SUBJECT}
          AND NOT EXISTS (SELECT 1 FROM idx_token c WHERE c.resource_type = 'Observation'
                          AND c.resource_id = s.resource_id AND c.code = 'code' AND c.system = $2 AND c.value = $3)
        ORDER BY r.id LIMIT 20""",
}


def raw_args(kind: str, p: dict) -> tuple:
    if kind == "a":
        return p["pid"], LOINC, p["code"], p["low"], p["high"]
    if kind in ("b", "c"):
        return (p["pid"],)
    if kind == "b2":
        return LOINC, p["code"]
    if kind == "f":
        return p["pid"], LOINC, p["code"]
    from telemed.fhir.search.types._common import escape_like, normalise  # as Telemed's string condition

    prefix = normalise(p["family"])  # d, e: as Telemed's string condition, plus the prefix as a range (see RAW)
    return escape_like(prefix) + "%", LOINC, p["code"], prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def raw_query(con, kind: str, p: dict) -> list[str]:
    """One page by raw SQL; returns the ids (matches, then included) as the comparison key."""
    rows = await con.fetch(RAW[kind], *raw_args(kind, p))
    ids = [f"{'Patient' if kind == 'e' else 'Observation'}/{r['id']}" for r in rows]
    if kind == "c" and rows:
        included = await con.fetch(RAW["c_include"], [r["id"] for r in rows])
        ids += [f"Patient/{r['id']}" for r in included]
    return ids


def bundle_ids(body: bytes) -> tuple[list[str], int | None]:
    """Checks a searchset Bundle; returns its entries' Type/id (matches first, then includes) and total."""
    bundle = orjson.loads(body)
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
        raise RuntimeError(f"not a searchset Bundle: {body[:300]!r}")
    entries = [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "outcome"]  # warnings
    keyed = [(e.get("search", {}).get("mode") != "match", f"{e['resource']['resourceType']}/{e['resource']['id']}")
             for e in entries]  # fmt: skip
    return [k for _, k in sorted(keyed, key=lambda t: t[0])], bundle.get("total")


async def warm_then_time(n: int, warmup: int, concurrency: int, op, meter) -> tuple[float, list[float], CpuMeter]:
    """op(c, i) on the last `warmup` items untimed, then timed on the other n - warmup."""
    await run_load(warmup, concurrency, lambda c, i: op(c, n - 1 - i))
    with meter() as cpu:
        seconds, latencies = await run_load(n - warmup, concurrency, op)
    return seconds, latencies, cpu


async def telemed_queries(
    base: str, token: str, params: dict, concurrency: int, workers: int, warmup: int, meter
) -> dict:
    url = urlsplit(base)
    conns = await open_balanced(url.hostname, url.port, token, concurrency, workers)
    out = {}
    try:
        for kind, sets in params.items():
            paths = []
            for p in sets:
                rt, query = telemed_params(kind, p)
                paths.append(f"{url.path.rstrip('/')}/fhir/{rt}?{urlencode(query, quote_via=quote, safe='')}")
            pages: list = [None] * len(paths)

            async def get(c: int, i: int, paths=paths, pages=pages) -> None:
                status, body = await conns[c].request("GET", paths[i])
                if status != 200:
                    raise RuntimeError(f"GET {paths[i]} returned {status}: {body[:300]!r}")
                pages[i] = bundle_ids(body)

            seconds, lat, cpu = await warm_then_time(len(paths), warmup, concurrency, get, meter)
            out[kind] = {"latencies": lat, "seconds": seconds, "pages": pages, "cpu": cpu.figures}
            print(f"  {kind:<3}{cpu.line()}", flush=True)
    finally:
        for c in conns:
            c.writer.close()
    return out


async def raw_queries(db_url: str, params: dict, concurrency: int, warmup: int, meter) -> dict:
    pool = await asyncpg.create_pool(db_url, min_size=concurrency, max_size=concurrency)
    out = {}
    try:
        for kind, sets in params.items():
            pages: list = [None] * len(sets)

            async def one(_c: int, i: int, kind=kind, sets=sets, pages=pages) -> None:
                async with pool.acquire() as con:
                    pages[i] = await raw_query(con, kind, sets[i])

            seconds, lat, cpu = await warm_then_time(len(sets), warmup, concurrency, one, meter)
            out[kind] = {"latencies": lat, "seconds": seconds, "pages": pages, "cpu": cpu.figures}
            print(f"  {kind:<3}{cpu.line()}", flush=True)
    finally:
        await pool.close()
    return out


async def sample_patient_ids(db_url: str) -> list[str]:
    con = await asyncpg.connect(db_url)
    try:
        rows = await con.fetch("SELECT id FROM resource WHERE resource_type = 'Patient' AND NOT deleted ORDER BY id")
        counts = await con.fetch("SELECT resource_type, count(*) FROM resource GROUP BY 1 ORDER BY 1")
        print("database: " + ", ".join(f"{r[0]} {r[1]}" for r in counts), flush=True)
        return [r["id"] for r in rows]
    finally:
        await con.close()


def dump_sql(directory: Path, params: dict) -> None:
    """Telemed's SQL (as ``searching`` builds it) for the first parameter set of each kind."""
    from sqlalchemy import func, select
    from sqlalchemy.dialects import postgresql

    from telemed.fhir.search.query import parse
    from telemed.fhir.store import search_sql
    from telemed.fhir.store.searching import COUNT_CAP, SNAPSHOT_FIRST

    directory.mkdir(parents=True, exist_ok=True)
    dialect = postgresql.dialect()
    for kind, sets in params.items():
        rt, query = telemed_params(kind, sets[0])
        q = parse(rt, query)
        res, conds = search_sql.base_select(q, "")
        if q.sort:
            page = search_sql.sorted_statements(res, conds, q)[0].limit(max(SNAPSHOT_FIRST, q.count) + 1)
        else:
            page = select(res).where(*conds).order_by(res.c.id).limit(q.count + 1)
        count = select(func.count()).select_from(select(res.c.id).where(*conds).limit(COUNT_CAP + 1).subquery())
        for name, stmt in (("page", page), ("count", count)):
            sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True})).replace("%%", "%")
            (directory / f"{kind}_{name}.sql").write_text(f"-- {rt}?{urlencode(query)}\n{sql};\n")
    print(f"Telemed's SQL written to {directory}/<kind>_page.sql and <kind>_count.sql")


# -- report ---------------------------------------------------------------------------------------------
def pcts(lat: list[float]) -> dict:
    return {f"p{q}": round(ms(lat, q / 100), 2) for q in (50, 95, 99)}


def report(args, ingest: dict | None, tel: dict, raw: dict, params: dict, server_cmd) -> tuple[bool, dict]:
    argv = [a if prev != "--token" else "<token>" for prev, a in zip(["", *sys.argv], sys.argv, strict=False)]
    command = shlex.join([sys.executable, *argv])
    print(f"\ncommand: {command}")
    print(f"server:  {shlex.join(server_cmd)}")
    print(f"machine: {os.cpu_count()} cores, shared by client, server and PostgreSQL")
    print(f"plan_cache_mode: {args.plan_cache_mode} (database setting, Telemed and raw)")
    ok = True
    figures: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "server": shlex.join(server_cmd),
        "cores": os.cpu_count(),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "queries_per_kind": args.queries,
        "plan_cache_mode": args.plan_cache_mode,
        "goals": {"ingest_per_s": INGEST_GOAL, "p95_ms": P95_GOAL},
        "ingest": ingest,
        "queries": {},
    }
    if ingest:
        passed = ingest["overall_per_s"] >= INGEST_GOAL
        ok &= passed
        figures["ingest"]["passed"] = passed
        print(f"\ningest (transaction Bundles of {args.bundle}, {args.concurrency} clients):")
        print(f"  Patients      {ingest['patients']['n']:>9}  {ingest['patients']['per_s']:>8.0f}/s")
        print(f"  Observations  {ingest['observations']['n']:>9}  {ingest['observations']['per_s']:>8.0f}/s")
        total = ingest["patients"]["n"] + ingest["observations"]["n"]
        verdict = "PASS" if passed else "FAIL"
        print(f"  overall       {total:>9}  {ingest['overall_per_s']:>8.0f}/s   goal >= {INGEST_GOAL:.0f}/s  {verdict}")
    print(f"\nqueries ({args.queries} per kind after warm-up, {args.concurrency} clients), ms:")
    print(f"{'':3}{'query':<46}{'rows':>6}{'total':>7}  {'Telemed p50/p95/p99':<25}{'raw p50/p95/p99':<22}"
          f"{'p95 x':>6}  goal p95<{P95_GOAL:.0f}")  # fmt: skip
    for kind, label in KINDS.items():
        if kind not in tel:
            continue
        t, r = tel[kind], raw[kind]
        tp, rp = pcts(t["latencies"]), pcts(r["latencies"])
        passed = tp["p95"] < P95_GOAL
        ok &= passed
        pages = [pg for pg in t["pages"] if pg is not None]
        rows = sum(len(ids) for ids, _ in pages) / len(pages)
        totals = [tot for _, tot in pages if tot is not None]
        mean_total = sum(totals) / len(totals) if totals else None
        fmt = "{p50:.1f} / {p95:.1f} / {p99:.1f}"
        total_s = f"{mean_total:>7.0f}" if mean_total is not None else f"{'-':>7}"
        print(f"{kind:<3}{label:<46}{rows:>6.1f}{total_s}  {fmt.format(**tp):<25}{fmt.format(**rp):<22}"
              f"{tp['p95'] / rp['p95']:>6.1f}  {'PASS' if passed else 'FAIL'}")  # fmt: skip
        rt, query = telemed_params(kind, params[kind][0])
        figures["queries"][kind] = {
            "label": label,
            "example": f"{rt}?{urlencode(query)}",
            "raw_sql": RAW[kind] if kind != "c" else RAW["c"] + ";\n" + RAW["c_include"],
            "mean_entries": round(rows, 1),
            "mean_total": round(mean_total, 1) if mean_total is not None else None,
            "telemed_ms": tp,
            "raw_ms": rp,
            "telemed_per_s": round(len(t["latencies"]) / t["seconds"], 1),
            "raw_per_s": round(len(r["latencies"]) / r["seconds"], 1),
            "telemed_cpu": t["cpu"],
            "raw_cpu": r["cpu"],
            "passed": passed,
        }
    print("rows: mean entries per page (matches + included); total: mean Bundle.total when Telemed sent one")
    figures["passed"] = ok
    return ok, figures


def compare_pages(tel: dict, raw: dict) -> None:
    """The first CHECKED parameter sets of each kind: the same ids in the same order."""
    for kind in tel:
        for i in range(CHECKED):
            t_ids, r_ids = tel[kind]["pages"][i][0], raw[kind]["pages"][i]
            if t_ids != r_ids:
                raise RuntimeError(f"query {kind}, parameter set {i}: Telemed {t_ids[:5]}... raw {r_ids[:5]}...")


def main() -> int:
    default_pg = os.environ.get("TELEMED_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=10_000)
    p.add_argument("--observations", type=int, default=1_000_000)
    p.add_argument("--bundle", type=int, default=500, help="entries per transaction Bundle (default 500)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients and connections (default 8)")
    p.add_argument("--queries", type=int, default=500, help="timed requests per query kind (default 500)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"query kinds to run (default {','.join(KINDS)})")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers of the Telemed server (default 2)")
    p.add_argument("--postgres-url", default=default_pg, help="where to CREATE/DROP the benchmark database")
    p.add_argument("--keep-db", action="store_true", help="keep the database and print its URL")
    p.add_argument("--reuse-db", metavar="URL", help="run only the queries against this loaded database")
    p.add_argument("--token", help="bearer token for --reuse-db (default: issue one for the account bench)")
    p.add_argument(
        "--plan-cache-mode",
        choices=("auto", "force_custom_plan", "force_generic_plan"),
        default="auto",
        help="ALTER DATABASE ... SET plan_cache_mode before the server starts, for Telemed and raw alike (default auto,"
        " PostgreSQL's default: prepared statements may switch to a generic plan after 5 executions)",
    )
    p.add_argument("--dump-sql", metavar="DIR", type=Path, help="write Telemed's SQL for each kind to DIR")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    args = p.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        p.error(f"unknown query kinds {sorted(unknown)}")
    if args.token and not args.reuse_db:
        p.error("--token goes with --reuse-db")

    if args.reuse_db:
        db_url, dbname = args.reuse_db, None
    else:
        dbname = f"telemed_bench_{uuid.uuid4().hex[:10]}"
        db_url = urlsplit(args.postgres_url)._replace(path="/" + dbname).geturl()
        asyncio.run(admin_sql(args.postgres_url, f'CREATE DATABASE "{dbname}"'))
    server, keep = None, args.keep_db or args.reuse_db
    try:
        with tempfile.TemporaryDirectory(prefix="telemed-bench-") as tmp:
            env = telemed_env(db_url, tmp)
            if args.reuse_db:
                telemed_cli(env, "migrate")  # the code may have moved on since the database was loaded
                token = args.token or telemed_cli(env, "token", "create", "--user", "bench", "--ttl", "86400")
                token = token.strip().splitlines()[-1]
            else:
                token = prepare_database(env, db_url)
            if args.keep_db:
                print(f"database (kept): {db_url}", flush=True)
            db = urlsplit(db_url).path.lstrip("/")
            # For every new connection, the server's and raw's (it applies to the load phase too).
            asyncio.run(admin_sql(db_url, f'ALTER DATABASE "{db}" SET plan_cache_mode = {args.plan_cache_mode}'))
            try:
                server, base, server_cmd = start_server(env, args.workers, tmp)
                meter = lambda: CpuMeter(server.pid, db)  # noqa: E731
                ingest = None
                if not args.reuse_db:
                    ingest = load(base, token, args, meter)
                    t0 = time.perf_counter()
                    asyncio.run(admin_sql(db_url, "VACUUM (ANALYZE)"))
                    print(f"VACUUM (ANALYZE): {time.perf_counter() - t0:.1f} s (untimed)", flush=True)
                patient_ids = asyncio.run(sample_patient_ids(db_url))
                rng = random.Random(7)
                warmup = min(MAX_WARMUP, max(args.queries // 10, CHECKED))
                params = {k: [make_params(k, rng, patient_ids) for _ in range(args.queries + warmup)] for k in kinds}
                if args.dump_sql:
                    dump_sql(args.dump_sql, params)
                print(f"queries: Telemed, {len(kinds)} kinds x {args.queries} ...", flush=True)
                tel = uvloop.run(telemed_queries(base, token, params, args.concurrency, args.workers, warmup, meter))
            finally:
                stop_server(server)  # the raw phase gets the machine to itself
            print("queries: raw SQL ...", flush=True)
            raw = uvloop.run(raw_queries(db_url, params, args.concurrency, warmup, lambda: CpuMeter(None, db)))
            compare_pages(tel, raw)
    finally:
        if not keep and dbname:
            asyncio.run(admin_sql(args.postgres_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    ok, figures = report(args, ingest, tel, raw, params, server_cmd)
    if args.keep_db and not args.reuse_db:
        print(f"\nkept database: {db_url}\nrerun the queries: {shlex.join([sys.executable, sys.argv[0]])} "
              f"--reuse-db {db_url} --token {token}")  # fmt: skip
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
