"""The teleconsultation portal under load: portal users working their queues while consultations
move through the workflow, and how soon the live board hears of each step.

    .venv/bin/python benchmarks/board.py [--consultations 200] [--readers 50] [--workers 1]
        [--concurrency 10] [--think 3 6] [--db postgresql://postgres@127.0.0.1:5432/test]
        [--broker-url redis://127.0.0.1:6379/0] [--seed N] [--json PATH] [--server-log PATH]

Set-up: a fresh database (by default a SQLite file in a temporary directory; with ``--db URL`` a
PostgreSQL database ``telemed_board_<random>`` created through URL and dropped at the end, also on
failure), ``telemed migrate`` and ``telemed demo`` in demo mode (``TELEMED_DEMO=true``: the demo
accounts, password ``Telemed-Demo-2026``, no second factor), then ``telemed serve`` on a free loopback
port (``fhir_crud.start_server``). With more than one worker the board's events must cross processes,
so ``TELEMED_BROKER_URL`` is set to ``--broker-url`` (Redis).

Every client is a portal user signed in through the login form (``/portal/login``, the session
cookie, the page's ``<meta name="csrf-token">`` sent back as ``X-CSRF-Token`` on every POST), on
``httpx.AsyncClient``; movers and readers share one asyncio (uvloop) event loop:

Movers: CONSULTATIONS consultations, CONCURRENCY at a time, each driven over HTTP by the people who
do it in the demo network (``telemed.demo``): the first doctor of the patient's own institution
(county hospital or township clinic; the patients are the 30 demo patients in turn) creates and
submits it (``POST /portal/consultations``, multipart like the browser's form), ``qc`` accepts it,
``triage`` assigns one province/city expert (the experts in turn, the request's specialty being
theirs) and schedules it, the expert writes the opinion (``POST .../opinion``) and signs it (the
report PDF is made and filed), the requester acknowledges it with a rating: seven state-changing
POSTs, each expected to answer 303. One client per account, shared by the movers. Between two
steps a mover waits a think time (uniform in THINK seconds), as the people doing the steps would.
The default, 3-6 s, is a short human think time (a person glances at a list or a case before the
next click; load-testing practice uses 3-10 s): 50 readers then ask for about 11 pages a second.
``--think 0.5 1`` is a stress run at five to ten times that rate, also recorded in the docs.

Readers: READERS portal users, each signed in once, in blocks of 30: 6 triage, 5 qc, 10 requesting
doctors (the movers' doctors in turn), 9 experts (for 50 readers: 12, 10, 19, 9; an account may
serve several readers), each loading its pages in turn until the movers are done:
``/portal/`` (home with its worklist sections), ``/portal/consultations`` (worklists),
``/portal/board/rows`` (not for doctors: the board is not theirs) and a case page
``/portal/consultations/{id}`` of a consultation they may see (doctors: theirs; experts: assigned to
them; qc/triage: any created in this run), with a think time after each (uniform in THINK). The
latency of a page is from sending the GET to having the whole body; every one must be a 200.

Board: one more client (``triage``) in a thread of its own (its own event loop, so the readers'
work does not delay the timestamps) keeps ``GET /portal/board/events`` open (``text/event-stream``:
``event: change`` + ``data: <consultation id>``) and behaves like the board page's script: on an
event it reloads ``/portal/board/rows`` unless a reload is already under way (then the event does
not start one), and every 60 s anyway. For each mover step, the first not yet matched event naming
its consultation received after the step's POST was sent is its event; the board figure is event
received - POST's response received (negative when the event overtakes the 303). Percentiles are
over all steps, a step whose event never came counting as infinitely late; a step whose event did
not come within MISS_AFTER seconds of its 303 is a miss. The board stays connected MISS_AFTER s
after the last step (later events count as never received). Also shown (not a goal): "rows shown",
from the 303 until a rows reload received after the POST was sent shows the consultation's tile
(``data-id``/``data-state``) in the step's state or a later one: what the wall screen displays.

Goals (issue): p95 page latency < 150 ms over all reader page loads; board p99 < 500 ms with no
miss. Prints the figures, PASS/FAIL per goal, and the CPU used by client, server, PostgreSQL and
the rest of the (shared) machine. Exit status 0 when both goals are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fhir_crud import admin_sql, start_server, stop_server, telemed_cli, telemed_env  # noqa: E402 - shared harness
from fhir_search import CpuMeter  # noqa: E402

from telemed.demo.loader import DEMO_PASSWORD, demo_accounts  # noqa: E402
from telemed.demo.network import build_network  # noqa: E402

PAGE_GOAL_MS = 150.0  # p95 over all reader page loads
BOARD_GOAL_MS = 500.0  # p99 from the step's 303 to the board's event
MISS_AFTER = 5.0  # seconds: an event later than this (or none) is a miss
BOARD_TICK = 60.0  # the board page's periodic reload
CHINA = ZoneInfo("Asia/Shanghai")  # the portal's display time zone (datetime-local fields)
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
STEPS = ("submit", "accept", "assign", "schedule", "opinion", "sign", "acknowledge")
STEP_STATE = dict(zip(STEPS, ("submitted", "accepted", "assigned", "scheduled", "opinion-drafted", "concluded",
                              "acknowledged"), strict=True))  # fmt: skip
RANK = {state: i for i, state in enumerate(("draft", "submitted", "accepted", "assigned", "scheduled", "in-session",
                                            "opinion-drafted", "concluded", "acknowledged", "archived"))}  # fmt: skip
TILE = re.compile(r'data-id="([^"]+)" data-state="([^"]+)"')
PAGES = {"home": "/portal/", "worklists": "/portal/consultations", "board rows": "/portal/board/rows", "case": None}


# -- the demo network's people ------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One consultation to drive: who asks, about whom, and who answers."""

    patient: str
    requester: str
    expert: str
    specialty: str
    kind: str


def demo_people() -> tuple[list[tuple[str, str]], dict[str, str], list[str]]:
    """(patient, requesting doctor) pairs, each expert's specialty, and the expert accounts, from the
    demo network: a patient's requester is the first doctor of its managing institution."""
    network = build_network()
    accounts = demo_accounts()
    doctors_at: dict[str, list[str]] = defaultdict(list)
    for user, _name, roles, org, _prac in accounts:
        if "requesting-doctor" in roles:
            doctors_at[org].append(user)
    specialty = {
        r["practitioner"]["reference"].split("/", 1)[1]: r["specialty"][0]["coding"][0]["code"]
        for r in network
        if r["resourceType"] == "PractitionerRole"
    }
    experts = [user for user, _n, roles, _o, prac in accounts if "consulting-expert" in roles and prac]
    pairs = []
    for r in network:
        if r["resourceType"] == "Patient":
            home = r["managingOrganization"]["reference"].split("/", 1)[1]
            pairs.append((r["id"], doctors_at[home][0]))
    return pairs, {e: specialty[e] for e in experts}, experts


def make_plans(n: int, rng: random.Random) -> list[Plan]:
    pairs, specialty, experts = demo_people()
    plans = []
    for i in range(n):
        patient, requester = pairs[i % len(pairs)]
        expert = experts[i % len(experts)]
        kind = "urgent" if rng.random() < 0.15 else "routine"
        plans.append(Plan(patient, requester, expert, specialty[expert], kind))
    return plans


# -- a signed-in portal user --------------------------------------------------------------------
class StepError(RuntimeError):
    pass


class Portal:
    """One portal session: an httpx client holding the session cookie, and the page's CSRF token."""

    def __init__(self, base: str, username: str):
        self.username = username
        # uvicorn closes a keep-alive connection idle for 5 s; a user thinking 3-6 s would otherwise
        # send into a connection being closed (a browser retries such a request, httpx does not).
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=4.0)
        self.http = httpx.AsyncClient(base_url=base, timeout=120, limits=limits, headers={"Accept": "text/html"})
        self.csrf = ""

    async def login(self) -> None:
        r = await self.http.get("/portal/login")
        form = {"username": self.username, "password": DEMO_PASSWORD, "csrf_token": _csrf(r), "next": "/portal/"}
        r = await self.http.post("/portal/login", data=form)
        if r.status_code != 303 or r.headers.get("location") != "/portal/":
            raise StepError(f"login of {self.username} answered {r.status_code} {r.headers.get('location')}")
        r = await self.http.get("/portal/")
        if r.status_code != 200:
            raise StepError(f"/portal/ for {self.username} answered {r.status_code}")
        self.csrf = _csrf(r)

    async def post(self, path: str, data: dict | None = None, multipart: bool = False) -> tuple[str, float, float]:
        """POST a form like the browser; returns (the 303's Location, sent at, answered at)."""
        headers = {"X-CSRF-Token": self.csrf}
        t0 = time.perf_counter()
        if multipart:  # form fields as multipart parts without a file, as the request form sends them
            r = await self.http.post(path, files=[(k, (None, v)) for k, v in data.items()], headers=headers)
        else:
            r = await self.http.post(path, data=data, headers=headers)
        t1 = time.perf_counter()
        location = r.headers.get("location", "")
        if r.status_code != 303 or "incomplete" in location:
            raise StepError(f"{self.username} POST {path} answered {r.status_code} {location} {_text(r)[:300]!r}")
        return location, t0, t1

    async def close(self) -> None:
        await self.http.aclose()


def _csrf(r: httpx.Response) -> str:
    m = CSRF.search(r.text)
    if not m:
        raise StepError(f"no csrf-token in {r.request.url} ({r.status_code})")
    return m.group(1)


def _text(r: httpx.Response) -> str:
    text = re.sub(r"<[^>]+>", " ", r.text)
    return re.sub(r"\s+", " ", text)


async def login_all(portals: list[Portal], concurrency: int = 4) -> None:
    todo = iter(portals)

    async def worker() -> None:
        for p in todo:
            await p.login()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- movers -------------------------------------------------------------------------------------
@dataclass
class Step:
    cid: str
    name: str
    sent: float
    answered: float


@dataclass
class Shared:
    """What movers have made so far, for the readers' case pages."""

    all: list[str] = field(default_factory=list)
    by_user: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def pick(self, user: str, role: str, rng: random.Random) -> str | None:
        ids = self.all if role in ("triage", "qc") else self.by_user.get(user, [])
        return rng.choice(ids[-50:]) if ids else None  # recent ones: what people are working on


async def run_movers(
    plans: list[Plan], portals: dict[str, Portal], shared: Shared, concurrency: int, think: tuple[float, float],
    rng: random.Random,
) -> tuple[list[Step], list[str], int]:  # fmt: skip
    steps: list[Step] = []
    errors: list[str] = []
    done = 0
    todo = iter(enumerate(plans))
    base_time = datetime.now(CHINA).replace(second=0, microsecond=0)

    async def pause() -> None:
        await asyncio.sleep(rng.uniform(*think))

    async def drive(i: int, plan: Plan) -> None:
        nonlocal done
        doctor, qc, triage, expert = (portals[u] for u in (plan.requester, "qc", "triage", plan.expert))
        form = {
            "patient": plan.patient, "kind": plan.kind, "specialty": plan.specialty,
            "requested_time": (base_time + timedelta(days=1, minutes=i)).strftime("%Y-%m-%dT%H:%M"),
            "purpose": "明确诊断，指导治疗", "summary": f"基准测试病例 {i + 1}：反复胸闷气短两周，心电图 ST-T 改变。",
            "question": "是否需要进一步检查？治疗方案如何调整？", "consent": "1", "consent_witness": "护士 李娟",
            "then_submit": "1", "idempotency_key": str(uuid.uuid4()),
        }  # fmt: skip
        location, t0, t1 = await doctor.post("/portal/consultations", form, multipart=True)
        cid = location.rsplit("/", 1)[1]
        steps.append(Step(cid, "submit", t0, t1))
        shared.all.append(cid)
        shared.by_user[plan.requester].append(cid)
        case = f"/portal/consultations/{cid}"
        start = (base_time + timedelta(hours=2, minutes=i)).strftime("%Y-%m-%dT%H:%M")
        opinion = {
            "impression": "结合病史及检查结果，考虑冠心病、不稳定型心绞痛。", "diagnosis": "不稳定型心绞痛",
            "recommendations": "建议冠脉造影；规范抗血小板及他汀治疗。", "follow-up": "两周后门诊复诊。",
        }  # fmt: skip
        actions = [
            ("accept", qc, f"{case}/act", {"event": "accept"}),
            ("assign", triage, f"{case}/act", {"event": "assign", "experts": [plan.expert]}),
            ("schedule", triage, f"{case}/act", {"event": "schedule", "start": start}),
            ("opinion", expert, f"{case}/opinion", opinion),
            ("sign", expert, f"{case}/act", {"event": "sign"}),
            ("acknowledge", doctor, f"{case}/acknowledge", {"rating": "5", "comment": "意见明确，非常感谢"}),
        ]
        for name, who, path, data in actions:
            await pause()
            _, t0, t1 = await who.post(path, data)
            steps.append(Step(cid, name, t0, t1))
            if name == "assign":
                shared.by_user[plan.expert].append(cid)
        done += 1

    async def mover() -> None:
        for i, plan in todo:
            try:
                await drive(i, plan)
            except (StepError, httpx.HTTPError) as exc:
                errors.append(f"consultation {i}: {exc.__class__.__name__}: {exc}")

    await asyncio.gather(*(mover() for _ in range(concurrency)))
    return steps, errors, done


# -- readers ------------------------------------------------------------------------------------
@dataclass
class Reader:
    portal: Portal
    role: str  # triage | qc | doctor | expert

    @property
    def pages(self) -> list[str]:
        return [p for p in PAGES if not (p == "board rows" and self.role == "doctor")]


def reader_mix(n: int, doctors: list[str], experts: list[str]) -> list[tuple[str, str]]:
    """(role, account) for n readers, in blocks of 30: 6 triage, 5 qc, 10 doctors, 9 experts."""
    out = []
    for i in range(n):
        k = i % 30
        if k < 6:
            out.append(("triage", "triage"))
        elif k < 11:
            out.append(("qc", "qc"))
        elif k < 21:
            out.append(("doctor", doctors[i % len(doctors)]))
        else:
            out.append(("expert", experts[i % len(experts)]))
    return out


async def run_reader(
    reader: Reader, shared: Shared, stop: asyncio.Event, think: tuple[float, float], rng: random.Random,
    latencies: dict[str, list[float]], errors: list[str],
) -> None:  # fmt: skip
    pages = reader.pages
    turn = rng.randrange(len(pages))
    try:
        await asyncio.wait_for(stop.wait(), rng.uniform(0, think[1]))  # spread the first loads
    except TimeoutError:
        pass
    while not stop.is_set():
        page = pages[turn % len(pages)]
        turn += 1
        path = PAGES[page]
        if path is None:
            cid = shared.pick(reader.portal.username, reader.role, rng)
            if cid is None:
                continue
            path = f"/portal/consultations/{cid}"
        t0 = time.perf_counter()
        try:
            r = await reader.portal.http.get(path)
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                errors.append(f"{reader.portal.username} GET {path}: {r.status_code} {_text(r)[:200]!r}")
            else:
                latencies[page].append(elapsed)
        except httpx.HTTPError as exc:
            errors.append(f"{reader.portal.username} GET {path}: {exc.__class__.__name__}: {exc}")
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(*think))
        except TimeoutError:
            pass


# -- the board ----------------------------------------------------------------------------------
class Board(threading.Thread):
    """The board page of a wall screen, in its own thread and event loop: the event stream, and a
    rows reload per event unless one is under way (as static/consultation.js does)."""

    def __init__(self, base: str):
        super().__init__(name="board", daemon=True)
        self.base = base
        self.events: list[tuple[float, str]] = []  # (received at, consultation id)
        self.reloads: list[tuple[float, float, int, dict]] = []  # (started, body received, status, states)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quit: asyncio.Event | None = None

    def run(self) -> None:
        try:
            uvloop.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._quit is not None:
            self._loop.call_soon_threadsafe(self._quit.set)
        self.join(30)

    async def _main(self) -> None:
        self._loop, self._quit = asyncio.get_running_loop(), asyncio.Event()
        portal = Portal(self.base, "triage")
        await portal.login()
        r = await portal.http.get("/portal/board")
        if r.status_code != 200:
            raise StepError(f"/portal/board answered {r.status_code}")
        tasks = [asyncio.create_task(self._listen(portal)), asyncio.create_task(self._tick(portal))]
        stopped = asyncio.create_task(self._quit.wait())
        done, _ = await asyncio.wait([stopped, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks[0] in done and tasks[0].exception():
            raise tasks[0].exception()
        await portal.close()

    async def _listen(self, portal: Portal) -> None:
        headers = {"Accept": "text/event-stream"}
        timeout = httpx.Timeout(30, read=None)
        async with portal.http.stream("GET", "/portal/board/events", headers=headers, timeout=timeout) as r:
            if r.status_code != 200:
                raise StepError(f"/portal/board/events answered {r.status_code}")
            event = None
            async for line in r.aiter_lines():
                now = time.perf_counter()
                if line.startswith("retry:"):
                    self.ready.set()
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "change":
                    self.events.append((now, line[5:].strip()))
                    self._refresh(portal)
                elif not line:
                    event = None
        raise StepError("the board's event stream ended")

    async def _tick(self, portal: Portal) -> None:
        while True:
            await asyncio.sleep(BOARD_TICK)
            self._refresh(portal)

    def _refresh(self, portal: Portal) -> None:
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().create_task(self._reload(portal))

    async def _reload(self, portal: Portal) -> None:
        t0, status, states = time.perf_counter(), 0, {}
        try:
            r = await portal.http.get("/portal/board/rows")
            status = r.status_code
            states = dict(TILE.findall(r.text))
        except httpx.HTTPError:
            pass
        finally:
            self.reloads.append((t0, time.perf_counter(), status, states))
            self._pending = False


def match_events(steps: list[Step], events: list[tuple[float, str]], reloads: list[tuple[float, float, int, dict]]):
    """Per step in the order sent: (step, event latency, rows-shown latency), inf when there is none."""
    by_cid: dict[str, list[float]] = defaultdict(list)
    for t, cid in events:
        by_cid[cid].append(t)
    used: dict[str, int] = defaultdict(int)  # per consultation: events before this index are matched
    shown_at = sorted((end, states) for _start, end, status, states in reloads if status == 200)
    out = []
    for step in sorted(steps, key=lambda s: s.sent):
        times, k = by_cid[step.cid], used[step.cid]
        while k < len(times) and times[k] < step.sent:
            k += 1
        event = rows = math.inf
        if k < len(times):
            event = times[k] - step.answered
            used[step.cid] = k + 1
        target = RANK[STEP_STATE[step.name]]
        for end, states in shown_at:
            if end >= step.sent and RANK.get(states.get(step.cid, ""), -1) >= target:
                rows = end - step.answered
                break
        out.append((step, event, rows))
    return out


# -- report -------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def trio(values: list[float]) -> str:
    if not values:
        return "-"
    return " / ".join("never" if (v := pct(values, q)) == math.inf else f"{v:,.1f}" for q in (0.5, 0.95, 0.99))


def summary(values: list[float]) -> dict:
    """Percentiles in ms for JSON (None for "never")."""
    if not values:
        return {"n": 0}
    out = {f"p{round(q * 100)}": pct(values, q) for q in (0.5, 0.95, 0.99)}
    out["max"] = max(values) * 1000
    return {"n": len(values), **{k: None if v == math.inf else round(v, 2) for k, v in out.items()}}


# -- main ---------------------------------------------------------------------------------------
async def bench(args, base: str, rng: random.Random) -> dict:
    plans = make_plans(args.consultations, rng)
    _pairs, _spec, experts = demo_people()
    doctors = sorted({p.requester for p in plans})
    board = Board(base)
    board.start()
    if not await asyncio.to_thread(board.ready.wait, 60) or board.error:
        raise RuntimeError(f"the board did not connect: {board.error!r}")

    movers = {u: Portal(base, u) for u in ["qc", "triage", *doctors, *sorted({p.expert for p in plans})]}
    readers = [Reader(Portal(base, user), role) for role, user in reader_mix(args.readers, doctors, experts)]
    mix = Counter(r.role for r in readers)
    await login_all([*movers.values(), *(r.portal for r in readers)])

    shared, stop = Shared(), asyncio.Event()
    latencies: dict[str, list[float]] = defaultdict(list)
    read_errors: list[str] = []
    reading = [
        asyncio.create_task(
            run_reader(r, shared, stop, args.think, random.Random(rng.random()), latencies, read_errors)
        )
        for r in readers
    ]
    meter = CpuMeter(args.server_pid, args.dbname)
    with meter:
        t0 = time.perf_counter()
        steps, move_errors, completed = await run_movers(
            plans, movers, shared, args.concurrency, args.think, random.Random(rng.random())
        )
        run_s = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*reading)
    await asyncio.sleep(MISS_AFTER)  # events of the last steps may still be on their way
    board.stop()
    if board.error:
        raise RuntimeError(f"the board failed: {board.error!r}")
    for p in [*movers.values(), *(r.portal for r in readers)]:
        await p.close()

    matched = match_events(steps, board.events, board.reloads)
    event_lat = [e for _, e, _ in matched]
    rows_lat = [r for _, _, r in matched]
    timeline = [  # for --json: when each step was sent (s into the run) and its latencies (ms, None = never)
        [s.cid, s.name, round(s.sent - t0, 3), round((s.answered - s.sent) * 1000, 1),
         *(None if v == math.inf else round(v * 1000, 1) for v in (e, r))]
        for s, e, r in matched
    ]  # fmt: skip
    posts: dict[str, list[float]] = defaultdict(list)
    for s in steps:
        posts[s.name].append(s.answered - s.sent)
    all_pages = [v for vs in latencies.values() for v in vs]
    return {
        "consultations": args.consultations,
        "mix": ", ".join(f"{n} {role}" for role, n in mix.items()),
        "completed": completed,
        "run_s": run_s,
        "timeline": timeline,
        "page_loads": len(all_pages),
        "pages": {"all": all_pages, **latencies},
        "posts": posts,
        "steps": len(steps),
        "events": len(board.events),
        "board": event_lat,
        "misses": sum(1 for e in event_lat if e > MISS_AFTER),
        "never": sum(1 for e in event_lat if e == math.inf),
        "rows": rows_lat,
        "rows_late": sum(1 for e in rows_lat if e > MISS_AFTER),
        "reloads": [e - s for s, e, status, _ in board.reloads if status == 200],
        "reload_errors": sum(1 for _s, _e, status, _ in board.reloads if status != 200),
        "errors": move_errors + read_errors,
        "cpu": meter.figures,
        "cpu_line": meter.line(),
    }


def report(args, server_cmd: list[str], r: dict) -> tuple[bool, dict]:
    command = shlex.join([sys.executable, *sys.argv])
    print(f"command: {command}")
    print(f"server:  {shlex.join(server_cmd)}  ({args.backend}{', broker ' + args.broker_url if args.broker else ''})")
    print(f"machine: {os.cpu_count()} cores shared by clients, server and database; load average before "
          f"{args.load_before}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print(f"load:    {args.consultations} consultations ({args.concurrency} at a time), {args.readers} readers, "
          f"think time {args.think[0]}-{args.think[1]} s; readers: {r['mix']}\n")  # fmt: skip
    rate = r["steps"] / r["run_s"] if r["run_s"] else 0
    print(f"consultations completed: {r['completed']}/{r['consultations']} in {r['run_s']:.1f} s "
          f"({r['steps']} state-changing POSTs, {rate:.1f}/s); errors: {len(r['errors'])}")  # fmt: skip
    for e in r["errors"][:10]:
        print(f"  {e}")
    print(f"\npage loads: {r['page_loads']} ({r['page_loads'] / r['run_s']:.1f}/s)")
    print(f"{'page':<14}{'n':>7}  p50 / p95 / p99 ms")
    for name, values in r["pages"].items():
        print(f"{name:<14}{len(values):>7}  {trio(values)}")
    print(f"\nstate-changing POSTs (to the 303):\n{'step':<14}{'n':>7}  p50 / p95 / p99 ms")
    for name in STEPS:
        print(f"{name:<14}{len(r['posts'].get(name, [])):>7}  {trio(r['posts'].get(name, []))}")
    received = [e for e in r["board"] if e != math.inf]
    print(f"\nboard: {r['events']} events for {r['steps']} steps; from the 303 to the event, p50 / p95 / p99 ms: "
          f"{trio(r['board'])} (max received {max(received, default=0) * 1000:,.1f}); misses (not within "
          f"{MISS_AFTER:.0f} s): {r['misses']}, of which never received: {r['never']}")  # fmt: skip
    print(f"board rows showing the step (not a goal), p50 / p95 / p99 ms: {trio(r['rows'])}; "
          f"not within {MISS_AFTER:.0f} s: {r['rows_late']}; {len(r['reloads'])} reloads, "
          f"p50 / p95 / p99 ms {trio(r['reloads'])}, failed {r['reload_errors']}")  # fmt: skip
    print(f"\n{r['cpu_line']}")
    page_p95 = pct(r["pages"]["all"], 0.95) if r["pages"]["all"] else float("inf")
    board_p99 = pct(r["board"], 0.99) if r["board"] else float("inf")
    page_ok = page_p95 < PAGE_GOAL_MS and not r["errors"]
    board_ok = board_p99 < BOARD_GOAL_MS and r["misses"] == 0
    print(f"\ngoal page p95 < {PAGE_GOAL_MS:.0f} ms:   {page_p95:,.1f} ms, {len(r['errors'])} errors  "
          f"{'PASS' if page_ok else 'FAIL'}")  # fmt: skip
    print(f"goal board p99 < {BOARD_GOAL_MS:.0f} ms:  {board_p99:,.1f} ms, {r['misses']} missed  "
          f"{'PASS' if board_ok else 'FAIL'}")  # fmt: skip
    figures = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "server": shlex.join(server_cmd),
        "backend": args.backend,
        "cores": os.cpu_count(),
        "consultations": args.consultations,
        "completed": r["completed"],
        "readers": args.readers,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "think_s": list(args.think),
        "run_s": round(r["run_s"], 2),
        "errors": r["errors"],
        "pages_ms": {k: summary(v) for k, v in r["pages"].items()},
        "posts_ms": {k: summary(v) for k, v in r["posts"].items()},
        "board_ms": summary(r["board"]),
        "board_misses": r["misses"],
        "board_never_received": r["never"],
        "rows_shown_ms": summary(r["rows"]),
        "rows_not_shown": r["rows_late"],
        "cpu_s": r["cpu"],
        "steps": {
            "columns": ["consultation", "step", "sent_s", "post_ms", "event_ms", "rows_ms"],
            "rows": r["timeline"],
        },
        "page_goal_met": page_ok,
        "board_goal_met": board_ok,
    }
    return page_ok and board_ok, figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--consultations", type=int, default=200, help="consultations driven through (default 200)")
    p.add_argument("--readers", type=int, default=50, help="portal users loading pages (default 50)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1)")
    p.add_argument("--concurrency", type=int, default=10, help="consultations moving at a time (default 10)")
    p.add_argument("--think", type=float, nargs=2, default=(3.0, 6.0), metavar=("MIN", "MAX"),
                   help="think time in seconds after each page or step (default 3 6)")  # fmt: skip
    p.add_argument("--db", help="PostgreSQL URL to CREATE/DROP a fresh database through (default: SQLite file)")
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/0", help="Redis for --workers > 1")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    p.add_argument("--server-log", metavar="PATH", type=Path, help="keep the server's log (warnings) as PATH")
    args = p.parse_args()
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.broker = args.workers > 1
    args.dbname = None
    rng = random.Random(args.seed)
    server = None
    with tempfile.TemporaryDirectory(prefix="telemed-board-") as tmp:
        if args.db:
            args.dbname = f"telemed_board_{uuid.uuid4().hex[:10]}"
            db_url = urlsplit(args.db)._replace(path="/" + args.dbname).geturl()
            asyncio.run(admin_sql(args.db, f'CREATE DATABASE "{args.dbname}"'))
            args.backend = "PostgreSQL"
        else:
            db_url = f"sqlite:///{tmp}/telemed.db"
            args.backend = "SQLite"
        try:
            env = telemed_env(db_url, tmp)
            env["TELEMED_DEMO"] = "true"
            if args.broker:
                env["TELEMED_BROKER_URL"] = args.broker_url
            telemed_cli(env, "migrate")
            telemed_cli(env, "demo")
            server, base, server_cmd = start_server(env, args.workers, tmp)
            args.server_pid = server.pid
            try:
                result = uvloop.run(bench(args, base, rng))
            except BaseException:
                log = Path(tmp) / "server.log"
                print(log.read_text()[-3000:] if log.exists() else "", file=sys.stderr)
                raise
        finally:
            stop_server(server)
            if args.server_log and (Path(tmp) / "server.log").exists():
                args.server_log.write_bytes((Path(tmp) / "server.log").read_bytes())
            if args.db:
                asyncio.run(admin_sql(args.db, f'DROP DATABASE IF EXISTS "{args.dbname}" WITH (FORCE)'))
    ok, figures = report(args, server_cmd, result)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
