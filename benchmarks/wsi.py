"""Whole-slide tile serving: our tile path against plain OpenSlide DeepZoomGenerator, served the same way.

Both run in one uvicorn process on loopback (same framework, same process, same slide):

- ``/ours/...``: :class:`telemed.pathology.centre.SlideStore` as ``/api/pathology`` uses it (shared LRU
  cache of encoded tiles, served without a thread hop on a hit, one OpenSlide handle per thread);
- ``/plain/...``: ``DeepZoomGenerator.get_tile`` on one OpenSlide handle, JPEG-encoded per request.

8 concurrent clients (asyncio + httpx), random access over a working set of tiles at the three most
detailed levels, and sequential access (panning across full resolution, viewport by viewport), after
one warm-up pass. Then the progressive time-to-first-full-resolution-view of a 1 GB slide over a
10 Mbit/s link, from the bytes the gateway sends before that view (thumbnail, pushed overview levels,
one viewport of full-resolution tiles) against sending the whole file first.

    .venv/bin/python benchmarks/wsi.py [--width 16384 --height 12288] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from telemed.pathology.centre import SlideRecord, SlideStore
from telemed.pathology.slide import Slide
from telemed.pathology.synthetic import write_slide
from telemed.pathology.tilecache import TileCache

CLIENTS = 8


def build_app(path: Path, root: Path) -> FastAPI:
    import hashlib

    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    store = SlideStore(root, TileCache(512 * 1024 * 1024))
    info = Slide(path).info
    folder = root / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slide.tiff").symlink_to(path.resolve())
    store.save(SlideRecord("bench", "slide.tiff", path.stat().st_size, hashlib.sha256(b"").hexdigest(),
                           info.to_json(), complete=True))  # fmt: skip
    plain = DeepZoomGenerator(openslide.OpenSlide(str(path)), 254, 1, limit_bounds=False)
    app = FastAPI()

    @app.get("/ours/{level}/{col}_{row}.jpeg")
    async def ours(level: int, col: int, row: int) -> Response:
        return Response(await store.tile("bench", level, col, row), media_type="image/jpeg")

    def plain_tile(level: int, col: int, row: int) -> bytes:
        buf = io.BytesIO()
        plain.get_tile(level, (col, row)).save(buf, "JPEG", quality=80)
        return buf.getvalue()

    @app.get("/plain/{level}/{col}_{row}.jpeg")
    async def plain_route(level: int, col: int, row: int) -> Response:
        return Response(await run_in_threadpool(plain_tile, level, col, row), media_type="image/jpeg")

    return app


def workloads(info, rng: random.Random) -> dict[str, list[tuple[int, int, int]]]:
    top = info.max_level
    working = []
    for level in (top, top - 1, top - 2):
        cols, rows = info.tile_grid(level)
        working += [(level, rng.randrange(cols), rng.randrange(rows)) for _ in range(300 if level == top else 100)]
    cols, rows = info.tile_grid(top)
    pan = []
    for y in range(0, min(rows, 16), 4):  # viewports of 6 x 4 tiles, sliding right one column at a time
        for x in range(0, cols - 6):
            pan += [(top, x + dx, y + dy) for dy in range(4) for dx in range(6) if y + dy < rows]
    return {"random": working, "sequential (pan)": pan}


async def warm_up(base: str, tiles: list) -> None:
    """Every tile of the workload once (8 clients), so that the timed run is warm."""
    todo = list(dict.fromkeys(tiles))

    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            for level, col, row in todo[n::CLIENTS]:
                (await c.get(f"/{level}/{col}_{row}.jpeg")).raise_for_status()

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))


async def run_clients(base: str, tiles: list, seconds: float, rng: random.Random, sequential: bool) -> dict:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(n: int) -> None:
        i = n * len(tiles) // CLIENTS
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            while time.perf_counter() < stop:
                level, col, row = tiles[i % len(tiles)] if sequential else rng.choice(tiles)
                i += 1
                t0 = time.perf_counter()
                r = await c.get(f"/{level}/{col}_{row}.jpeg")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "tiles/s": len(latencies) / elapsed,
        "p50 ms": 1000 * statistics.median(latencies),
        "p99 ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=16384)
    ap.add_argument("--height", type=int, default=12288)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--slide", help="use this slide (generated there first when it does not exist)")
    args = ap.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = Path(args.slide) if args.slide else tmp_path / "bench.tiff"
        if not path.exists():
            t0 = time.perf_counter()
            path = write_slide(path, args.width, args.height, noise=20)
            print(f"generated {args.width} x {args.height} slide, {path.stat().st_size / 1e6:.0f} MB, "
                  f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
        info = Slide(path).info
        server = uvicorn.Server(uvicorn.Config(build_app(path, tmp_path / "store"), host="127.0.0.1", port=0,
                                               log_level="warning", access_log=False))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        print(f"\n{CLIENTS} clients, {args.seconds:.0f} s each, warm (one pass over the tiles first)\n")
        print(f"{'access':<18} {'server':<28} {'tiles/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        results = {}
        for name, tiles in workloads(info, rng).items():
            for label, prefix in (("DeepZoomGenerator (plain)", "/plain"), ("Telemed tile server", "/ours")):
                asyncio.run(warm_up(base + prefix, tiles))
                r = asyncio.run(run_clients(base + prefix, tiles, args.seconds, rng, name != "random"))
                results[(name, label)] = r
                print(f"{name:<18} {label:<28} {r['tiles/s']:>8.0f} {r['p50 ms']:>8.1f} {r['p99 ms']:>8.1f}")
            ratio = (
                results[(name, "Telemed tile server")]["tiles/s"]
                / results[(name, "DeepZoomGenerator (plain)")]["tiles/s"]
            )
            print(f"{'':<18} {'ratio':<28} {ratio:>7.1f}x")
        server.should_exit = True
        thread.join(5)

        # Progressive first view: what the gateway sends before an expert sees full resolution.
        slide = Slide(path)
        first = len(slide.thumbnail())
        budget = 85
        for level in range(info.max_level + 1):
            cols, rows = info.tile_grid(level)
            if cols * rows > budget:
                break
            budget -= cols * rows
            first += sum(len(slide.tile(level, c, r)) for r in range(rows) for c in range(cols))
        top = info.max_level
        cols, rows = info.tile_grid(top)
        viewport = [(cols // 2 + dx, rows // 2 + dy) for dx in range(6) for dy in range(4)]  # 1400 x 900 screen
        view = sum(len(slide.tile(top, c, r)) for c, r in viewport)
        link = 10e6 / 8
        one_gb = 1e9
        print("\nfirst full-resolution view over a 10 Mbit/s link (1 GB slide):")
        print(f"  progressive: registration + overview {first / 1e3:.0f} kB + one viewport of full-resolution "
              f"tiles {view / 1e3:.0f} kB = {(first + view) / link:.1f} s (+ round trips)")  # fmt: skip
        print(f"  upload then view: {one_gb / link:.0f} s = {one_gb / link / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
