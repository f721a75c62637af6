"""Signalling benchmark: many 2-peer rooms joining and negotiating at once on one app instance.

    .venv/bin/python benchmarks/signalling.py [--rooms 200] [--candidates 3] [--json PATH]

Starts the platform (``create_app`` on uvicorn, SQLite in a temporary folder, one process of its
own so its CPU time can be read from /proc) and opens 2 WebSockets per room on
``/portal/video/{room}/ws`` with a portal session cookie and a join token each (minted directly:
the room rules are the call page's, not the socket's). All rooms start together. Per room: peer
A joins, peer B joins, B sends an offer (a 3 kB SDP) to A, A answers, and each sends
``--candidates`` ICE candidates and an end-of-candidates. *Join-to-connected* is the time from
B's ``join`` until B holds A's answer and all of A's candidates and A holds all of B's, i.e. until
both could connect. Every join and leave writes its AuditEvent, as in production. The clock starts
once every socket is open (handshakes are not part of join-to-connected). Prints p50, p95 and max,
the server's CPU seconds (whole run, and server and client during the burst), the load average,
and relayed messages per second. ``BENCH_PROFILE=path`` writes cProfile stats of the server.
``--ramp S`` starts the rooms evenly over S seconds instead of in the same instant. Goal (issue 7):
p95 < 1 s on loopback for 200 rooms. The client runs on the same machine and takes CPU from the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

SECRET = "bench-secret-" + "x" * 40
SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "a=x-filler:" + "0" * 3000 + "\r\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(tmp: Path):
    from telemed.settings import Settings

    return Settings(demo=True, var_dir=tmp, database_url=f"sqlite:///{tmp}/telemed.db", blob_url=f"file:{tmp}/blobs",
                    secret_key=SECRET, encryption_keys="k1:" + base64.b64encode(b"k" * 32).decode(),
                    index_key=base64.b64encode(b"i" * 32).decode(), log_level="WARNING")  # fmt: skip


def _serve(tmp: str, port: int) -> None:
    import logging

    import uvicorn

    from telemed.app import Services, create_app
    from telemed.db.migrate import upgrade

    logging.getLogger("telemed.video").setLevel(logging.WARNING)
    services = Services.from_settings(_settings(Path(tmp)))
    upgrade(services.engine)
    app = create_app(services)
    profile = os.environ.get("BENCH_PROFILE")  # a file for cProfile's stats of the server's event loop thread
    if profile:  # the client sends SIGUSR1 after the run
        import cProfile
        import signal

        profiler = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: (profiler.disable(), profiler.dump_stats(profile)))
        profiler.enable()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=1 << 20)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _credentials(room: str, user: str, keys) -> tuple[str, str]:
    from datetime import UTC, datetime

    from telemed.identity import issue_token
    from telemed.video import join

    now = datetime.now(UTC)
    session = issue_token(keys, user, ["user/*.*"], 3600, now, ["consulting-expert"], practitioner=user)
    grant = join.Grant(room, user, user, user, None, 4)
    return session, join.mint(SECRET, grant, now, ttl_seconds=600)


async def _room(port: int, room: int, candidates: int, creds, start: asyncio.Event, delay: float, opened) -> float:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/portal/video/bench-{room}/ws"
    (sa, ta), (sb, tb) = creds

    async def recv(ws, kind):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == kind:
                return msg
            if msg["type"] == "error":
                raise RuntimeError(msg)

    async def cands(ws, to):
        for i in range(candidates):
            c = f"candidate:{i} 1 udp 2122260223 127.0.0.1 {50000 + i} typ host"
            await ws.send(json.dumps({"type": "candidate", "to": to, "candidate": {"candidate": c, "sdpMid": "0",
                                                                                   "sdpMLineIndex": 0}}))  # fmt: skip
        await ws.send(json.dumps({"type": "candidate", "to": to, "candidate": None}))

    async def wait_cands(ws):
        while True:
            msg = await recv(ws, "candidate")
            if msg["candidate"] is None:
                return

    async with connect(url, additional_headers={"Cookie": f"telemed_session={sa}"}, open_timeout=120) as a, \
               connect(url, additional_headers={"Cookie": f"telemed_session={sb}"}, open_timeout=120) as b:  # fmt: skip
        opened()
        await start.wait()
        await asyncio.sleep(delay)
        await a.send(json.dumps({"type": "join", "token": ta, "peer": f"peer-a-{room:05d}"}))
        await recv(a, "joined")
        t0 = time.perf_counter()
        await b.send(json.dumps({"type": "join", "token": tb, "peer": f"peer-b-{room:05d}"}))
        await recv(b, "joined")
        await recv(a, "peer-joined")
        await b.send(json.dumps({"type": "offer", "to": f"peer-a-{room:05d}", "sdp": SDP}))

        async def side_a():
            await recv(a, "offer")
            await a.send(json.dumps({"type": "answer", "to": f"peer-b-{room:05d}", "sdp": SDP}))
            await cands(a, f"peer-b-{room:05d}")
            await wait_cands(a)

        async def side_b():
            await cands(b, f"peer-a-{room:05d}")
            await recv(b, "answer")
            await wait_cands(b)

        await asyncio.gather(side_a(), side_b())
        elapsed = time.perf_counter() - t0
        await a.send(json.dumps({"type": "leave"}))
        await b.send(json.dumps({"type": "leave"}))
        return elapsed


async def _run(port: int, rooms: int, candidates: int, ramp: float, tmp: str, server_pid: int):
    from telemed.db.engine import make_engine
    from telemed.identity import TokenKeys

    keys = TokenKeys(make_engine(_settings(Path(tmp)).database_url), SECRET)  # the server's database
    creds = [[_credentials(f"bench-{r}", f"bench-u{r}-{s}", keys) for s in "ab"] for r in range(rooms)]
    start = asyncio.Event()
    ready, count = asyncio.Event(), [0]

    def opened() -> None:
        count[0] += 1
        if count[0] == rooms:
            ready.set()

    tasks = [asyncio.create_task(_room(port, r, candidates, creds[r], start, ramp * r / rooms, opened))
             for r in range(rooms)]  # fmt: skip
    opening = time.perf_counter()
    await asyncio.wait_for(ready.wait(), 300)  # every socket open (handshakes are not what is measured)
    opening = time.perf_counter() - opening
    await asyncio.sleep(1)  # and the server done with their session checks
    t0, server0, client0 = time.perf_counter(), _cpu_seconds(server_pid), time.process_time()
    start.set()
    times = await asyncio.gather(*tasks)
    burst = {"server": _cpu_seconds(server_pid) - server0, "client": time.process_time() - client0, "open": opening}
    return times, time.perf_counter() - t0, burst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which the rooms start (0: all at once)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="telemed-bench-signalling-")
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(tmp, port), daemon=True)
    server.start()
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.time() > deadline:
                print("the server did not start", file=sys.stderr)
                return 2
            time.sleep(0.2)
    try:
        cpu0 = _cpu_seconds(server.pid)
        times, wall, burst = asyncio.run(_run(port, args.rooms, args.candidates, args.ramp, tmp, server.pid))
        cpu = _cpu_seconds(server.pid) - cpu0
        if os.environ.get("BENCH_PROFILE"):
            os.kill(server.pid, signal.SIGUSR1)
            time.sleep(3)
    finally:
        server.terminate()
        server.join(10)
    times.sort()
    p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
    messages = args.rooms * (2 + 1 + 1 + 2 * (args.candidates + 1) + 2)  # joins, offer, answer, candidates, leaves
    figures = {"rooms": args.rooms, "ramp_s": args.ramp, "peers": 2 * args.rooms,
               "join_to_connected_p50_ms": round(p50 * 1000, 1),
               "join_to_connected_p95_ms": round(p95 * 1000, 1), "max_ms": round(times[-1] * 1000, 1),
               "wall_s": round(wall, 2), "server_cpu_s": round(cpu, 2),
               "burst_server_cpu_s": round(burst["server"], 2), "burst_client_cpu_s": round(burst["client"], 2),
               "load_average": round(os.getloadavg()[0], 1), "sockets_open_s": round(burst["open"], 2),
               "messages_per_s": round(messages / wall), "cpus": os.cpu_count()}  # fmt: skip
    when = f"starting over {args.ramp} s" if args.ramp else "all starting at once"
    print(
        f"{args.rooms} rooms x 2 peers, {args.candidates} candidates each way, {when} (loopback, {os.cpu_count()} CPUs)"
    )
    print(f"join-to-connected: p50 {figures['join_to_connected_p50_ms']} ms, p95 {figures['join_to_connected_p95_ms']} "
          f"ms, max {figures['max_ms']} ms")  # fmt: skip
    print(f"all rooms in {figures['wall_s']} s; server CPU {figures['server_cpu_s']} s; "
          f"{figures['messages_per_s']} client messages/s")  # fmt: skip
    print(f"during the burst: server CPU {figures['burst_server_cpu_s']} s, "
          f"client CPU {figures['burst_client_cpu_s']} s; load average {figures['load_average']}; "
          f"before it, {2 * args.rooms} sockets took {figures['sockets_open_s']} s to open")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    goal = p95 < 1.0
    print("goal p95 < 1 s:", "met" if goal else "NOT met")
    return 0 if goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
