"""What the access rules cost: the foundation's FHIR reads and searches, unrestricted vs institution-scoped.

    .venv/bin/python benchmarks/access_overhead.py [--patients 2000] [--observations 40000] [--orgs 10]
        [--reads 3000] [--searches 600] [--concurrency 8] [--workers 2] [--rounds 2] [--json PATH]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

One Telemed server on PostgreSQL (the harness of benchmarks/fhir_crud.py: a fresh database
``telemed_bench_<random>``, ``telemed migrate``, ``telemed token create``, ``telemed serve
--workers 2``, a minimal keep-alive HTTP/1.1 client), loaded over HTTP with P Patients spread
over K institutions (``managingOrganization``, which grants each patient to its institution)
and O Observations (benchmarks/fhir_search.py's generator: vital signs and labs over two years).

Two callers make the same requests:

- **unrestricted**: a platform administrator (clinical mode ``all``: no access predicate at all);
- **scoped**: a requesting doctor of institution 0 (clinical mode ``scoped``: every read and search
  goes through :mod:`telemed.fhir.store.access`, the owner-institution and grant checks).

The requests only touch patients of institution 0, so both callers get the same answers, except
the two cross-patient searches (``Patient?family``, ``Observation?code&date``), where the
doctor's answer is limited to institution 0 (the rules doing their job; the page size is the same).
Every request is audited for both callers (AuditEvent in the same transaction), so the difference
is the access rules alone.

The database is ANALYZEd after loading (as autovacuum would have done on a live system). Per
operation kind the two callers run in the order A B B A (``--rounds`` times), so slow drift on
a shared machine falls on both; each phase starts with untimed warm-up requests. Printed side by
side: requests/s and p50/p95 latency per caller, and the overhead of the rules
(unrestricted rate / scoped rate - 1, in %). Goal (issue 5): < 20 % on read and on search.
Exit status 0 when both aggregate goals are met.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fhir_crud import (  # noqa: E402 - the shared harness of benchmarks/fhir_crud.py
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
from fhir_search import CODES, chunks, observations, transaction  # noqa: E402

GOAL = 20.0  # % the access rules may add
WARMUP = 100
ORG = "org-bench-{}"
LOINC = "http://loinc.org"


def _org(i: int, orgs: int) -> str:
    return ORG.format(i % orgs)


async def ingest(base: str, token: str, bodies: list[bytes], concurrency: int) -> list[list[str]]:
    url = urlsplit(base)
    conns = [HttpConnection(url.hostname, url.port, token) for _ in range(concurrency)]
    for c in conns:
        await c.open()
    created: list[list[str]] = [[] for _ in bodies]

    async def post(c: int, i: int) -> None:
        status, body = await conns[c].request("POST", "/fhir", bodies[i])
        if status != 200:
            raise RuntimeError(f"transaction returned {status}: {body[:500]!r}")
        for entry in orjson.loads(body)["entry"]:
            created[i].append(entry["response"]["location"].split("/_history/")[0].rsplit("/", 1)[1])

    try:
        await run_load(len(bodies), concurrency, post)
    finally:
        for c in conns:
            c.writer.close()
    return created


def load(base: str, token: str, args) -> tuple[list[str], list[str], list[str]]:
    """Patients (each managed by one of the K institutions) and Observations; returns the ids of
    institution 0's patients, of their Observations, and the family names used."""
    rng = random.Random(20261204)
    patients = []
    for i in range(args.patients):
        p = make_patient(rng, i)
        p["managingOrganization"] = {"reference": f"Organization/{_org(i, args.orgs)}"}
        patients.append(p)
    created = asyncio.run(ingest(base, token, [transaction(b) for b in chunks(patients, 250)], args.concurrency))
    ids = [i for batch in created for i in batch]
    mine = {pid for n, pid in enumerate(ids) if n % args.orgs == 0}
    obs = list(observations(rng, ids, args.observations))
    created = asyncio.run(ingest(base, token, [transaction(b) for b in chunks(obs, 500)], args.concurrency))
    obs_ids = [i for batch in created for i in batch]
    my_obs = [oid for oid, o in zip(obs_ids, obs, strict=True) if o["subject"]["reference"][8:] in mine]
    families = sorted({p["name"][0]["family"] for p in patients})
    return sorted(mine), my_obs, families


def requests_for(kind: str, rng: random.Random, mine: list[str], my_obs: list[str], families: list[str]) -> str:
    pid = rng.choice(mine)
    code = rng.choice(CODES)[0]
    if kind == "read Patient":
        return f"/fhir/Patient/{pid}"
    if kind == "read Observation":
        return f"/fhir/Observation/{rng.choice(my_obs)}"
    if kind == "Observation?subject":
        return f"/fhir/Observation?subject=Patient/{pid}&_count=20"
    if kind == "Observation?subject&code&_sort":
        return f"/fhir/Observation?subject=Patient/{pid}&code={quote(LOINC + '|' + code)}&_sort=-date&_count=10"
    if kind == "Observation?subject&_include":
        return f"/fhir/Observation?subject=Patient/{pid}&_include=Observation:subject&_count=20"
    if kind == "Patient?family":
        return f"/fhir/Patient?family={quote(rng.choice(families))}&_count=20"
    if kind == "Observation?code&date":
        month = rng.randrange(1, 13)
        window = f"date=ge2025-{month:02d}-01&date=lt2025-{month:02d}-15"
        return f"/fhir/Observation?code={quote(LOINC + '|' + code)}&{window}&_count=20"
    raise ValueError(kind)


READS = ["read Patient", "read Observation"]
SEARCHES = ["Observation?subject", "Observation?subject&code&_sort", "Observation?subject&_include",
            "Patient?family", "Observation?code&date"]  # fmt: skip


async def phase(base: str, token: str, paths: list[str], concurrency: int) -> tuple[float, list[float]]:
    url = urlsplit(base)
    conns = [HttpConnection(url.hostname, url.port, token) for _ in range(concurrency)]
    for c in conns:
        await c.open()

    async def get(c: int, i: int) -> None:
        status, body = await conns[c].request("GET", paths[i])
        if status != 200:
            raise RuntimeError(f"GET {paths[i]} answered {status}: {body[:300]!r}")

    try:
        await run_load(min(WARMUP, len(paths)), concurrency, get)
        return await run_load(len(paths), concurrency, get)
    finally:
        for c in conns:
            c.writer.close()


def measure(base: str, callers: dict[str, str], kind: str, n: int, args, data) -> dict[str, tuple[float, list]]:
    """Both callers on the same request list, in the order A B B A per round; per caller the
    total seconds and every latency."""
    rng = random.Random(hash(kind) & 0xFFFF)
    paths = [requests_for(kind, rng, *data) for _ in range(n)]
    totals: dict[str, list] = {name: [0.0, []] for name in callers}
    order = list(callers)
    for _ in range(args.rounds):
        for name in order + order[::-1]:
            seconds, lat = uvloop.run(phase(base, callers[name], paths, args.concurrency))
            totals[name][0] += seconds
            totals[name][1] += lat
    return {name: (t[0], t[1]) for name, t in totals.items()}


def main() -> int:
    default_pg = os.environ.get("TELEMED_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--observations", type=int, default=40_000)
    p.add_argument("--orgs", type=int, default=10, help="institutions the patients are spread over (default 10)")
    p.add_argument("--reads", type=int, default=3000, help="timed requests per read kind, per caller and pass")
    p.add_argument("--searches", type=int, default=600, help="timed requests per search kind, per caller and pass")
    p.add_argument("--rounds", type=int, default=1, help="A B B A passes per kind (default 1)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--postgres-url", default=default_pg)
    p.add_argument("--json", metavar="PATH", type=Path)
    p.add_argument("--kinds", help="comma-separated operation kinds to run (default all)")
    p.add_argument("--keep-db", action="store_true", help="do not drop the database (its URL is printed)")
    args = p.parse_args()
    kinds = args.kinds.split(",") if args.kinds else READS + SEARCHES

    dbname = f"telemed_bench_{uuid.uuid4().hex[:10]}"
    db_url = urlsplit(args.postgres_url)._replace(path="/" + dbname).geturl()
    asyncio.run(admin_sql(args.postgres_url, f'CREATE DATABASE "{dbname}"'))
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="telemed-bench-") as tmp:
            env = telemed_env(db_url, tmp)
            admin = prepare_database(env, db_url)  # account "bench", platform-admin
            from telemed.db.engine import make_engine, unit_of_work
            from telemed.identity import ensure_account

            engine = make_engine(db_url)
            with unit_of_work(engine) as conn:
                ensure_account(conn, "doctor", "Scoped doctor", ["requesting-doctor"], datetime.now(UTC), None,
                               _org(0, args.orgs))  # fmt: skip
            engine.dispose()
            doctor = telemed_cli(env, "token", "create", "--user", "doctor", "--ttl", "86400").strip().splitlines()[-1]
            server, base, server_cmd = start_server(env, args.workers, tmp)
            print(f"loading {args.patients} Patients over {args.orgs} institutions and {args.observations} "
                  "Observations ...", flush=True)  # fmt: skip
            data = load(base, admin, args)
            # Statistics as autovacuum would have them on a live database; without them the planner
            # takes each index scan for one row after the bulk load.
            asyncio.run(admin_sql(db_url, "ANALYZE"))
            print(f"  institution 0: {len(data[0])} patients, {len(data[1])} Observations", flush=True)
            callers = {"unrestricted": admin, "scoped": doctor}
            results = {}
            for kind in kinds:
                n = args.reads if kind in READS else args.searches
                print(f"{kind} ...", flush=True)
                results[kind] = measure(base, callers, kind, n, args, data)
            ok, figures = report(args, server_cmd, results)
    finally:
        stop_server(server)
        if args.keep_db:
            print(f"database kept: {db_url}")
        else:
            asyncio.run(admin_sql(args.postgres_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    if args.json:
        args.json.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    return 0 if ok else 1


def report(args, server_cmd: list[str], results: dict) -> tuple[bool, dict]:
    command = shlex.join([sys.executable, *sys.argv])
    print(f"\ncommand: {command}")
    print(f"server:  {shlex.join(server_cmd)}")
    print(f"machine: {os.cpu_count()} cores shared by client, server and PostgreSQL; load average "
          f"{os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print(f"data:    {args.patients} Patients over {args.orgs} institutions, {args.observations} Observations; "
          f"concurrency {args.concurrency}, {args.rounds} x A B B A per kind\n")  # fmt: skip
    head = f"{'operation':<32}{'unrestricted req/s':>19}{'scoped req/s':>14}{'overhead':>10}"
    print(head + f"   {'p50/p95 ms unrestricted':<25}p50/p95 ms scoped")
    figures: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command, "kinds": {}}
    groups: dict[str, dict[str, list]] = {"read": {"unrestricted": [0.0, 0], "scoped": [0.0, 0]},
                                          "search": {"unrestricted": [0.0, 0], "scoped": [0.0, 0]}}  # fmt: skip
    for kind, per in results.items():
        group = "read" if kind in READS else "search"
        rates = {}
        for name, (seconds, lat) in per.items():
            rates[name] = len(lat) / seconds
            groups[group][name][0] += seconds
            groups[group][name][1] += len(lat)
        overhead = (rates["unrestricted"] / rates["scoped"] - 1) * 100
        lat_u, lat_s = per["unrestricted"][1], per["scoped"][1]
        cols = [f"{ms(lat, 0.5):.1f} / {ms(lat, 0.95):.1f}" for lat in (lat_u, lat_s)]
        print(f"{kind:<32}{rates['unrestricted']:>19.0f}{rates['scoped']:>14.0f}{overhead:>9.1f}%   ", end="")
        print(f"{cols[0]:<25}{cols[1]}")
        figures["kinds"][kind] = {"unrestricted_per_s": round(rates["unrestricted"], 1),
                                  "scoped_per_s": round(rates["scoped"], 1), "overhead_pct": round(overhead, 1),
                                  "p50_ms": [round(ms(lat_u, 0.5), 2), round(ms(lat_s, 0.5), 2)],
                                  "p95_ms": [round(ms(lat_u, 0.95), 2), round(ms(lat_s, 0.95), 2)]}  # fmt: skip
    ok = True
    print()
    for group, per in groups.items():
        if not per["scoped"][0]:
            continue  # no kind of this group was run (--kinds)
        u, s = (per[name][1] / per[name][0] for name in ("unrestricted", "scoped"))
        overhead = (u / s - 1) * 100
        passed = overhead < GOAL
        ok &= passed
        print(f"all {group} kinds: unrestricted {u:.0f} req/s, scoped {s:.0f} req/s, overhead {overhead:.1f}% "
              f"(goal < {GOAL:.0f}%): {'PASS' if passed else 'FAIL'}")  # fmt: skip
        figures[group] = {"unrestricted_per_s": round(u, 1), "scoped_per_s": round(s, 1),
                          "overhead_pct": round(overhead, 1), "passed": passed}  # fmt: skip
    figures["passed"] = ok
    return ok, figures


if __name__ == "__main__":
    sys.exit(main())
