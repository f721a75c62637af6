"""The site gateway (``telemed gateway``): runs next to a grassroots hospital's slide scanner.

It watches a folder for finished slide files and, for each one:

1. registers it with the centre at once (name, size, SHA-256, Deep Zoom geometry, micrometres per
   pixel, and whose slide it is from an optional ``<file>.json`` beside it: ``{"patient": {"system",
   "value", "name"}, "specimen": "accession", "gross": "...", "request": "ServiceRequest/..."}``);
2. sends the thumbnail and the low-resolution levels (what an expert sees first);
3. keeps a WebSocket open to the centre, opened from here (the site is behind NAT: no inbound port),
   over which the centre asks for any other tile an expert is looking at (:mod:`telemed.pathology.link`);
4. uploads the whole file in the background in resumable parts, each with its SHA-256, under a
   bandwidth cap and an optional time window, pausing while experts are asking for tiles; after a
   dropped link or a restart it asks the centre where to continue. The centre checks the whole file's
   SHA-256 and from then on serves the slide itself.

It authenticates with OAuth2 client credentials (RFC 6749 §4.4) at the centre's ``/oauth/token``.
The link and the upload loop know nothing of slides beyond the tile operation, so other
store-and-forward traffic (DICOM, ECG) can ride on the same process later.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

import httpx

from telemed.pathology.link import HEADER
from telemed.pathology.slide import Slide, SlideError, is_dicom_wsi

log = logging.getLogger("telemed.gateway")

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif"})
SCOPES = "system/ImagingStudy.* system/Patient.* system/Device.* system/Specimen.*"


def parse_window(text: str | None) -> tuple[dtime, dtime] | None:
    """``"22:00-06:00"`` -> the hours in which the background upload may run (None: always)."""
    if not text:
        return None
    start, _, end = text.partition("-")
    return dtime.fromisoformat(start.strip()), dtime.fromisoformat(end.strip())


def in_window(window: tuple[dtime, dtime] | None, now: datetime) -> bool:
    if window is None:
        return True
    start, end = window
    t = now.time()
    return start <= t < end if start <= end else t >= start or t < end


class Throttle:
    """Paces the background upload to ``rate`` bytes/s; interactive traffic is never held back but
    counts against the cap, pushing the upload later (it yields to tiles)."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self._next = time.monotonic()
        self.interactive_until = 0.0

    def spend(self, n: int) -> None:
        if self.rate:
            self._next = max(self._next, time.monotonic()) + n / self.rate
        self.interactive_until = time.monotonic() + 0.5

    async def acquire(self, n: int) -> None:
        while True:
            now = time.monotonic()
            wait = max(self.interactive_until - now, self._next - now if self.rate else 0.0)
            if wait <= 0:
                break
            await asyncio.sleep(min(wait, 0.25))
        if self.rate:
            self._next = max(self._next, time.monotonic()) + n / self.rate

    def part_size(self, chunk: int) -> int:
        """At most half a second of the cap per part, so a tile never waits behind a long part."""
        if not self.rate:
            return chunk
        return max(16 * 1024, min(chunk, int(self.rate / 2)))


@dataclass
class GatewayConfig:
    centre: str
    client_id: str
    client_secret: str
    folder: Path
    state_dir: Path
    rate: float | None = None  # bytes per second for the background upload; None: no cap
    window: tuple[dtime, dtime] | None = None
    chunk: int = 4 * 1024 * 1024
    poll: float = 2.0
    push_tiles: int = 85  # the low-resolution levels sent first: as many levels as fit in this many tiles
    scope: str = SCOPES


@dataclass
class LocalSlide:
    path: str
    size: int
    mtime: float
    sha256: str = ""
    id: str | None = None
    pushed: bool = False
    complete: bool = False
    error: str | None = None
    upload: str | None = None  # what is sent when it is not ``path``: a DICOM WSI folder packed as one tar


@dataclass
class Gateway:
    config: GatewayConfig
    stats: dict = field(default_factory=lambda: {"uploaded": 0, "parts": 0, "resumed": 0, "tiles": 0, "links": 0})

    def __post_init__(self) -> None:
        self.throttle = Throttle(self.config.rate)
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self.config.state_dir / "gateway.json"
        self.slides: dict[str, LocalSlide] = {}
        try:
            for path, data in json.loads(self._state_path.read_text()).items():
                self.slides[path] = LocalSlide(**data)
        except (OSError, ValueError, TypeError):
            pass
        self._open: dict[str, Slide] = {}
        self._token: tuple[str, float] | None = None
        self._stop = asyncio.Event()
        self.linked = asyncio.Event()
        self._work = asyncio.Event()

    # --- state ----------------------------------------------------------------------------------

    def _save(self) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({p: s.__dict__ for p, s in self.slides.items()}))
        os.replace(tmp, self._state_path)

    def by_id(self, slide_id: str) -> LocalSlide | None:
        return next((s for s in self.slides.values() if s.id == slide_id), None)

    def _slide(self, local: LocalSlide) -> Slide:
        slide = self._open.get(local.path)
        if slide is None:
            slide = self._open[local.path] = Slide(local.path)
        return slide

    def stop(self) -> None:
        self._stop.set()

    # --- the centre ------------------------------------------------------------------------------

    async def token(self, client: httpx.AsyncClient, renew: bool = False) -> str:
        if self._token and not renew and self._token[1] > time.time() + 30:
            return self._token[0]
        r = await client.post(
            f"{self.config.centre}/oauth/token",
            data={"grant_type": "client_credentials", "scope": self.config.scope},
            auth=(self.config.client_id, self.config.client_secret),
        )
        r.raise_for_status()
        body = r.json()
        self._token = (body["access_token"], time.time() + float(body.get("expires_in", 300)))
        return self._token[0]

    async def call(self, client: httpx.AsyncClient, method: str, path: str, **kw) -> httpx.Response:
        """One request with the gateway's token (renewed once on a 401)."""
        for attempt in (0, 1):
            headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {await self.token(client, attempt == 1)}"}
            r = await client.request(method, f"{self.config.centre}{path}", headers=headers, **kw)
            if r.status_code != 401:
                return r
            kw["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
        return r

    # --- folder ----------------------------------------------------------------------------------

    def scan(self) -> list[LocalSlide]:
        """Files that stopped growing since the last look (a scanner writes for minutes)."""
        ready = []
        for path in sorted(self.config.folder.iterdir()):
            if path.is_dir():  # a DICOM WSI: a folder of instances, one per level
                files = [f for f in path.iterdir() if f.is_file()]
                if not files or not is_dicom_wsi(files[0]):
                    continue
                stats = [f.stat() for f in files]
                size, mtime = sum(st.st_size for st in stats), max(st.st_mtime for st in stats)
            elif path.suffix.lower() in SLIDE_SUFFIXES and path.is_file():
                st = path.stat()
                size, mtime = st.st_size, st.st_mtime
            else:
                continue
            known = self.slides.get(str(path))
            if known is None or (known.size, known.mtime) != (size, mtime) and not known.id and not known.upload:
                self.slides[str(path)] = LocalSlide(str(path), size, mtime)
                continue  # look again next time: still the same size means the scanner is done
            if known.id is None and known.error is None:
                ready.append(known)
        return ready

    async def register(self, client: httpx.AsyncClient, local: LocalSlide) -> None:
        path = Path(local.path)
        try:
            slide = await asyncio.to_thread(self._slide, local)
        except SlideError as exc:
            local.error = exc.message
            log.warning("%s", exc.message)
            self._save()
            return
        name = path.name
        if path.is_dir():
            name = f"{path.name}.dicom.tar"
            if not local.upload:
                packed = self.config.state_dir / "packed" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:16]}.tar"
                await asyncio.to_thread(pack_folder, path, packed)
                local.upload, local.size = str(packed), packed.stat().st_size
        if not local.sha256:
            local.sha256 = await asyncio.to_thread(_sha256, Path(local.upload or path))
        body: dict = {"name": name, "size": local.size, "sha256": local.sha256, "info": slide.info.to_json()}
        sidecar = path.with_name(path.name + ".json")
        if sidecar.exists():
            try:
                body.update(json.loads(sidecar.read_text()))
            except ValueError:
                log.warning("%s is not JSON; the slide is registered without it", sidecar.name)
        r = await self.call(client, "POST", "/api/pathology/slides", json=body)
        r.raise_for_status()
        answer = r.json()
        local.id, local.complete = answer["id"], answer["complete"]
        self._save()
        log.info("registered %s as slide %s", path.name, local.id)
        if not local.pushed and not local.complete:
            await self.push_overview(client, local, slide)
        self._work.set()

    async def push_overview(self, client: httpx.AsyncClient, local: LocalSlide, slide: Slide) -> None:
        """The thumbnail, then whole Deep Zoom levels from the smallest while they fit ``push_tiles``."""
        thumb = await asyncio.to_thread(slide.thumbnail)
        (
            await self.call(client, "PUT", f"/api/pathology/slides/{local.id}/thumbnail", content=thumb)
        ).raise_for_status()
        budget = self.config.push_tiles
        for level in range(slide.info.max_level + 1):
            cols, rows = slide.info.tile_grid(level)
            if cols * rows > budget:
                break
            budget -= cols * rows
            for row in range(rows):
                for col in range(cols):
                    data = await asyncio.to_thread(slide.tile, level, col, row)
                    self.throttle.spend(len(data))
                    url = f"/api/pathology/slides/{local.id}/tiles/{level}/{col}_{row}.jpeg"
                    (await self.call(client, "PUT", url, content=data)).raise_for_status()
        local.pushed = True
        self._save()

    async def watch(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            try:
                for local in self.scan():
                    await self.register(client, local)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("cannot register with the centre (%s); trying again", exc.__class__.__name__)
            await self._sleep(self.config.poll)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    # --- the link ----------------------------------------------------------------------------------

    async def link(self, client: httpx.AsyncClient) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        url = self.config.centre.replace("http", "ws", 1) + "/api/pathology/gateway"
        backoff = 0.5
        while not self._stop.is_set():
            try:
                token = await self.token(client)
                async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                   max_size=None, ping_interval=20, open_timeout=10) as ws:  # fmt: skip
                    self.stats["links"] += 1
                    self.linked.set()
                    backoff = 0.5
                    log.info("linked to the centre")
                    stop = asyncio.ensure_future(self._stop.wait())
                    try:
                        while True:
                            recv = asyncio.ensure_future(ws.recv())
                            done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                            if stop in done:
                                recv.cancel()
                                return
                            message = recv.result()
                            if isinstance(message, str):
                                asyncio.ensure_future(self._answer(ws, message))
                    finally:
                        stop.cancel()
            except (OSError, WebSocketException, httpx.HTTPError, TimeoutError) as exc:
                log.info("link to the centre lost (%s); reconnecting", exc.__class__.__name__)
            finally:
                self.linked.clear()
            await self._sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _answer(self, ws, message: str) -> None:
        try:
            req = json.loads(message)
        except ValueError:
            return
        if req.get("op") != "tile":
            return
        self.throttle.spend(0)  # the upload steps aside at once
        local = self.by_id(str(req.get("slide")))
        try:
            if local is None:
                raise LookupError("unknown slide")
            slide = self._slide(local)
            data = await asyncio.to_thread(slide.tile, int(req["level"]), int(req["col"]), int(req["row"]))
        except Exception as exc:  # noqa: BLE001 - any failure is answered, the link stays up
            await ws.send(json.dumps({"id": req.get("id"), "error": str(exc)[:200]}))
            return
        self.throttle.spend(len(data))
        self.stats["tiles"] += 1
        await ws.send(HEADER.pack(int(req["id"])) + data)

    # --- the background upload ------------------------------------------------------------------------

    async def upload(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            pending = [s for s in self.slides.values() if s.id and not s.complete]
            if not pending:
                self._work.clear()
                try:
                    await asyncio.wait_for(self._work.wait(), self.config.poll)
                except TimeoutError:
                    pass
                continue
            try:
                await self.upload_one(client, pending[0])
            except (httpx.HTTPError, OSError) as exc:
                self.stats["resumed"] += 1
                log.info("upload interrupted (%s); resuming where the centre stopped", exc.__class__.__name__)
                await self._sleep(1.0)

    async def upload_one(self, client: httpx.AsyncClient, local: LocalSlide) -> None:
        base = f"/api/pathology/slides/{local.id}/upload"
        r = await self.call(client, "GET", base)
        r.raise_for_status()
        status = r.json()
        offset = int(status["offset"])
        with open(local.upload or local.path, "rb") as f:
            while offset < local.size and not self._stop.is_set():
                if not in_window(self.config.window, datetime.now()):
                    await self._sleep(30)
                    continue
                size = self.throttle.part_size(self.config.chunk)
                await self.throttle.acquire(size)
                f.seek(offset)
                data = f.read(size)
                digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
                headers = {"Upload-Offset": str(offset), "Upload-Checksum": f"sha256 {digest}"}
                r = await self.call(client, "PATCH", base, content=data, headers=headers)
                if r.status_code == 409:
                    offset = int(r.headers.get("upload-offset", offset))
                    continue
                r.raise_for_status()
                self.stats["uploaded"] += len(data)
                self.stats["parts"] += 1
                offset = int(r.json()["offset"])
                if r.json()["complete"]:
                    break
        if offset >= local.size:
            local.complete = True
            self._save()
            log.info("%s is at the centre in full", Path(local.path).name)

    # --- run -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._stop = asyncio.Event()
        self.linked = asyncio.Event()
        self._work = asyncio.Event()
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            await asyncio.gather(self.watch(client), self.link(client), self.upload(client))
        for slide in self._open.values():
            slide.close()


def pack_folder(folder: Path, target: Path) -> Path:
    """A DICOM WSI folder as one uncompressed tar (the instances are JPEG already), the same bytes
    for the same files (sorted, no times or owners), so a restarted gateway resumes its upload."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(p for p in folder.iterdir() if p.is_file()):
            info = tar.gettarinfo(str(f), arcname=f.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with f.open("rb") as data:
                tar.addfile(info, data)
    os.replace(tmp, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
