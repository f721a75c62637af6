"""The centre's side of remote slides: what each slide is, where its tiles come from, its upload.

A slide registered by a site gateway is viewable at once: its Deep Zoom geometry and scale arrive
with the registration, its thumbnail and low-resolution levels right after, and any other tile is
asked of the gateway over the connection the gateway opened (:mod:`telemed.pathology.link`) and
kept on disk. Meanwhile the file arrives in resumable parts (``Upload-Offset``, each part with its
SHA-256 as in the tus checksum extension); when the last part is in and the whole file's SHA-256
matches the one announced, the slide is opened here and every tile is made locally.

Files live under ``<var_dir>/pathology/<slide id>/``: ``slide.json`` (the record), ``tiles/``
(received tiles), ``upload.part`` and, once complete and verified, ``slide.<ext>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tarfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from telemed.kernel.errors import Category, TelemedError
from telemed.pathology.slide import Slide, SlideError, SlideInfo
from telemed.pathology.tilecache import TileCache

MAX_PART = 8 * 1024 * 1024
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass
class SlideRecord:
    id: str
    name: str
    size: int
    sha256: str
    info: dict
    gateway: str | None = None  # the client id of the gateway that holds the original
    offset: int = 0
    complete: bool = False
    study: str | None = None  # the FHIR ImagingStudy id
    extra: dict = field(default_factory=dict)

    @property
    def slide_info(self) -> SlideInfo:
        return SlideInfo.from_json(self.info)

    @property
    def dicom_tar(self) -> bool:
        """A DICOM WSI folder sent as one tar by a gateway (unpacked to ``slide.dicom/`` when complete)."""
        return self.name.lower().endswith(".dicom.tar")

    @property
    def local_name(self) -> str:
        return "slide.dicom" if self.dicom_tar else f"slide{self.suffix}"

    @property
    def suffix(self) -> str:
        suffix = Path(self.name).suffix.lower()
        return suffix if re.fullmatch(r"\.[a-z0-9]{1,6}", suffix) else ".bin"


class Unavailable(TelemedError):
    def __init__(self, message: str):
        super().__init__(Category.UNAVAILABLE, message)


class SlideStore:
    """Slides at the centre: records, received tiles, uploads and the local files once complete."""

    def __init__(self, root: Path, cache: TileCache | None = None, links=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache = cache if cache is not None else TileCache()
        self.links = links  # a telemed.pathology.link.Links (tiles from gateways)
        self._slides: dict[str, Slide] = {}
        self._lock = threading.Lock()
        self._upload_locks: dict[str, threading.Lock] = {}

    # --- records ---------------------------------------------------------------------------

    def folder(self, slide_id: str) -> Path:
        if not _ID.match(slide_id):
            raise TelemedError(Category.NOT_FOUND, "No such slide")
        return self.root / slide_id

    def record(self, slide_id: str) -> SlideRecord:
        try:
            data = json.loads((self.folder(slide_id) / "slide.json").read_text())
        except (OSError, ValueError):
            raise TelemedError(Category.NOT_FOUND, "No such slide") from None
        return SlideRecord(**data)

    def save(self, rec: SlideRecord) -> None:
        folder = self.folder(rec.id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "slide.json.tmp"
        tmp.write_text(json.dumps(asdict(rec)))
        os.replace(tmp, folder / "slide.json")  # atomic: the old record or the new one

    def find(self, gateway: str | None, sha256: str) -> SlideRecord | None:
        """A slide this gateway registered before with the same content (a restarted gateway)."""
        for meta in self.root.glob("*/slide.json"):
            try:
                rec = SlideRecord(**json.loads(meta.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if rec.gateway == gateway and rec.sha256 == sha256:
                return rec
        return None

    def register(self, rec: SlideRecord) -> SlideRecord:
        self.save(rec)
        (self.folder(rec.id) / "upload.part").touch()
        return rec

    def records(self) -> list[SlideRecord]:
        out = []
        for meta in sorted(self.root.glob("*/slide.json")):
            try:
                out.append(SlideRecord(**json.loads(meta.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return out

    # --- tiles -----------------------------------------------------------------------------

    def local_slide(self, rec: SlideRecord) -> Slide | None:
        if not rec.complete:
            return None
        with self._lock:
            slide = self._slides.get(rec.id)
            if slide is None:
                slide = self._slides[rec.id] = Slide(self.folder(rec.id) / rec.local_name, self.cache, rec.id)
            return slide

    def _tile_path(self, slide_id: str, level: int, col: int, row: int) -> Path:
        return self.folder(slide_id) / "tiles" / str(level) / f"{col}_{row}.jpeg"

    def put_tile(self, slide_id: str, level: int, col: int, row: int, data: bytes) -> None:
        """Keep a tile sent by the gateway (pushed low-resolution levels, or asked for)."""
        rec = self.record(slide_id)
        if not rec.slide_info.valid_tile(level, col, row):
            raise TelemedError(Category.NOT_FOUND, "No such tile")
        if not data.startswith(b"\xff\xd8"):
            raise TelemedError(Category.UNSUPPORTED_MEDIA, "A tile is a JPEG image")
        path = self._tile_path(slide_id, level, col, row)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.cache.put((slide_id, level, col, row), data)

    def cached_tile(self, rec: SlideRecord, level: int, col: int, row: int) -> bytes | None:
        """A tile made here or received before; None when only the gateway has it."""
        if not rec.slide_info.valid_tile(level, col, row):
            raise TelemedError(Category.NOT_FOUND, "No such tile")
        slide = self.local_slide(rec)
        if slide is not None:
            return slide.tile(level, col, row)
        key = (rec.id, level, col, row)
        data = self.cache.get(key)
        if data is None:
            try:
                data = self._tile_path(rec.id, level, col, row).read_bytes()
            except OSError:
                return None
            self.cache.put(key, data)
        return data

    async def tile(self, slide_id: str, level: int, col: int, row: int, timeout: float = 30.0) -> bytes:
        """A tile from wherever it is: the local file, the tiles received, or the gateway now."""
        rec = self.record(slide_id)
        key = (rec.id, level, col, row)
        data = self.cache.get(key)  # the hot path: no thread hop, no file system
        if data is not None:
            return data
        data = await run_in_threadpool(self.cached_tile, rec, level, col, row)
        if data is not None:
            return data
        if self.links is None or not self.links.connected(rec.gateway):
            raise Unavailable("The site holding this slide is offline and this part has not arrived yet")
        data = await self.links.request_tile(rec.gateway, rec.id, level, col, row, timeout)
        await run_in_threadpool(self.put_tile, rec.id, level, col, row, data)
        return data

    def thumbnail(self, slide_id: str) -> bytes:
        path = self.folder(slide_id) / "thumbnail.jpeg"
        try:
            return path.read_bytes()
        except OSError:
            rec = self.record(slide_id)
            slide = self.local_slide(rec)
            if slide is None:
                raise TelemedError(Category.NOT_FOUND, "The thumbnail has not arrived yet") from None
            data = slide.thumbnail()
            path.write_bytes(data)
            return data

    def put_thumbnail(self, slide_id: str, data: bytes) -> None:
        self.record(slide_id)
        if not data.startswith(b"\xff\xd8"):
            raise TelemedError(Category.UNSUPPORTED_MEDIA, "A thumbnail is a JPEG image")
        (self.folder(slide_id) / "thumbnail.jpeg").write_bytes(data)

    # --- upload ----------------------------------------------------------------------------

    def append(self, slide_id: str, offset: int, data: bytes, checksum: str | None) -> SlideRecord:
        """Append one part at ``offset`` (tus-like); a wrong offset is a 409 carrying the right one.

        ``checksum`` is ``sha256 <base64 digest>`` of the part (Upload-Checksum, tus checksum
        extension): a damaged part is refused and the offset stays where it was."""
        with self._lock:
            lock = self._upload_locks.setdefault(slide_id, threading.Lock())
        with lock:
            rec = self.record(slide_id)
            if rec.complete:
                return rec
            if offset != rec.offset:
                raise TelemedError(Category.CONFLICT, "offset mismatch", headers={"Upload-Offset": str(rec.offset)})
            if len(data) > MAX_PART:
                raise TelemedError(Category.TOO_LARGE, f"Parts are at most {MAX_PART} bytes")
            if rec.offset + len(data) > rec.size:
                raise TelemedError(Category.INCORRECT, "More data than the announced size")
            algo, _, digest = (checksum or "").partition(" ")
            if algo.lower() != "sha256" or base64.b64decode(digest or "=") != hashlib.sha256(data).digest():
                raise TelemedError(Category.UNPROCESSABLE, "The part's checksum does not match (Upload-Checksum)")
            part = self.folder(slide_id) / "upload.part"
            with part.open("r+b") as f:
                f.seek(rec.offset)
                f.write(data)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
            rec.offset += len(data)
            if rec.offset == rec.size:
                self._finish(rec, part)
            self.save(rec)  # the offset moves only after the bytes are on disk
            return rec

    def _finish(self, rec: SlideRecord, part: Path) -> None:
        digest = hashlib.sha256()
        with part.open("rb") as f:
            while chunk := f.read(4 * 1024 * 1024):
                digest.update(chunk)
        if digest.hexdigest() != rec.sha256:
            # Start again: a whole file that differs from the original is worth nothing.
            part.write_bytes(b"")
            rec.offset = 0
            self.save(rec)
            raise TelemedError(Category.UNPROCESSABLE, "The file's SHA-256 does not match the original; sending again")
        final = self.folder(rec.id) / rec.local_name
        try:
            if rec.dicom_tar:
                _unpack(part, final)
            else:
                os.replace(part, final)
            Slide(final, self.cache, rec.id)
        except SlideError as exc:
            rec.extra["error"] = exc.message
            raise
        rec.complete = True


def _unpack(tar_path: Path, folder: Path) -> None:
    """The DICOM instances of a gateway's tar into ``folder``: plain files only, no paths."""
    folder.mkdir(exist_ok=True)
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if not member.isfile() or not name or name != member.name or name.startswith("."):
                    raise SlideError(f"{member.name} is not a plain file of a DICOM WSI")
                with tar.extractfile(member) as src, (folder / name).open("wb") as dst:
                    while chunk := src.read(4 * 1024 * 1024):
                        dst.write(chunk)
    except tarfile.TarError as exc:
        raise SlideError(f"The DICOM WSI archive cannot be read: {exc}") from None
    tar_path.unlink()
