"""One interface to whole-slide images: Deep Zoom tiles, thumbnail, associated images, micrometres per pixel.

OpenSlide (https://openslide.org/) reads the vendor formats (Aperio SVS, Hamamatsu NDPI, MIRAX,
Philips TIFF, Leica SCN, Ventana) and generic tiled TIFF; wsidicom reads DICOM WSI (a folder with one
instance per pyramid level, :class:`DicomWsi`). Tiles follow the Deep Zoom
Image format (DZI, https://learn.microsoft.com/previous-versions/windows/silverlight/dotnet-windows-silverlight/cc645077(v=vs.95)):
level ``L`` is the slide scaled by ``2**(L - max_level)``, cut into ``tile_size`` squares with
``overlap`` pixels shared with each neighbour; OpenSeadragon reads it as is.

What this adds to OpenSlide's own ``DeepZoomGenerator``: encoded tiles kept in a shared LRU cache,
one OpenSlide handle per thread (reads do not queue behind one lock), a clear refusal of an unreadable
file, and the micrometres per pixel from the vendor property or, failing that, the TIFF resolution tag.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from telemed.kernel.errors import Category, TelemedError
from telemed.pathology.tilecache import TileCache

TILE_SIZE = 254
OVERLAP = 1
FORMAT = "jpeg"
QUALITY = 80


class SlideError(TelemedError):
    """A file that is not a readable whole-slide image."""

    def __init__(self, message: str):
        super().__init__(Category.UNPROCESSABLE, message)


@dataclass
class SlideInfo:
    """What a viewer needs before the first tile: the Deep Zoom geometry and the physical scale."""

    width: int
    height: int
    mpp_x: float | None
    mpp_y: float | None
    vendor: str
    tile_size: int = TILE_SIZE
    overlap: int = OVERLAP
    format: str = FORMAT
    objective_power: float | None = None
    associated: list[str] = field(default_factory=list)

    @property
    def max_level(self) -> int:
        return max(0, math.ceil(math.log2(max(self.width, self.height, 1))))

    def level_size(self, level: int) -> tuple[int, int]:
        scale = 2 ** (self.max_level - level)
        return max(1, math.ceil(self.width / scale)), max(1, math.ceil(self.height / scale))

    def tile_grid(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def valid_tile(self, level: int, col: int, row: int) -> bool:
        if not 0 <= level <= self.max_level:
            return False
        cols, rows = self.tile_grid(level)
        return 0 <= col < cols and 0 <= row < rows

    def dzi(self) -> str:
        """The DZI descriptor (XML) of this slide."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{self.format}" '
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}"><Size Width="{self.width}" '
            f'Height="{self.height}"/></Image>'
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SlideInfo:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _mpp(props) -> tuple[float | None, float | None]:
    import openslide

    def number(name: str) -> float | None:
        try:
            value = float(props.get(name, ""))
        except ValueError:
            return None
        return value if value > 0 and math.isfinite(value) else None

    x, y = number(openslide.PROPERTY_NAME_MPP_X), number(openslide.PROPERTY_NAME_MPP_Y)
    if x is None:
        # TIFF resolution tag: pixels per centimetre or per inch.
        unit = props.get("tiff.ResolutionUnit", "")
        per = {"centimeter": 10_000.0, "inch": 25_400.0}.get(unit)
        rx, ry = number("tiff.XResolution"), number("tiff.YResolution")
        if per and rx:
            x, y = per / rx, per / (ry or rx)
    return x, y if y is not None else x


class Slide:
    """A whole-slide image file opened for Deep Zoom tiles; safe to share between threads."""

    def __init__(self, path: str | Path, cache: TileCache | None = None, key: str | None = None):
        import openslide

        self.path = Path(path)
        self.cache = cache if cache is not None else TileCache(64 * 1024 * 1024)
        self.key = key or str(self.path)
        self._local = threading.local()
        self._dicom: DicomWsi | None = None
        if is_dicom_wsi(self.path):
            self._dicom = DicomWsi(self.path.parent if self.path.is_file() else self.path)
            self.info = self._dicom.info
            return
        try:
            osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(f"{self.path.name} is not a whole-slide image format that can be read") from None
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideError(f"{self.path.name} cannot be read as a whole-slide image: {exc}") from None
        self._local.osr = osr
        width, height = osr.dimensions
        mpp_x, mpp_y = _mpp(osr.properties)
        try:
            power = float(osr.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER, ""))
        except ValueError:
            power = None
        self.info = SlideInfo(
            width, height, mpp_x, mpp_y, osr.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
            objective_power=power, associated=sorted(osr.associated_images),
        )  # fmt: skip
        # Refuse a truncated or corrupt file now rather than on the tile an expert is waiting for.
        try:
            osr.read_region((0, 0), osr.level_count - 1, osr.level_dimensions[-1]).load()
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{self.path.name} is damaged: {exc}") from None

    def _handle(self):
        osr = getattr(self._local, "osr", None)
        if osr is None:
            import openslide

            osr = self._local.osr = openslide.OpenSlide(str(self.path))
        return osr

    def _generator(self):
        gen = getattr(self._local, "dz", None)
        if gen is None:
            from openslide.deepzoom import DeepZoomGenerator

            gen = self._local.dz = DeepZoomGenerator(self._handle(), TILE_SIZE, OVERLAP, limit_bounds=False)
        return gen

    def tile(self, level: int, col: int, row: int) -> bytes:
        """The JPEG bytes of one Deep Zoom tile (404 outside the pyramid)."""
        if not self.info.valid_tile(level, col, row):
            raise TelemedError(Category.NOT_FOUND, "No such tile")
        key = (self.key, level, col, row)
        data = self.cache.get(key)
        if data is None:
            image = self._dicom.tile(level, col, row) if self._dicom else self._generator().get_tile(level, (col, row))
            data = encode(image)
            self.cache.put(key, data)
        return data

    def thumbnail(self, size: int = 512) -> bytes:
        if self._dicom:
            return encode(self._dicom.wsi().read_thumbnail((size, size)))
        return encode(self._handle().get_thumbnail((size, size)))

    def associated_image(self, name: str) -> bytes:
        images = self._dicom.associated() if self._dicom else self._handle().associated_images
        if name not in images:
            raise TelemedError(Category.NOT_FOUND, f"This slide has no {name} image")
        return encode(images[name])

    def close(self) -> None:
        if self._dicom:
            self._dicom.close()
        osr = getattr(self._local, "osr", None)
        if osr is not None:
            osr.close()


def is_dicom_wsi(path: Path) -> bool:
    """A folder of DICOM files (one per pyramid level), or one of them: read with wsidicom."""
    if path.is_dir():
        return True
    try:
        with path.open("rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


class DicomWsi:
    """A DICOM WSI (PS3.3 A.32.8: one instance per pyramid level, tiled) read with wsidicom
    (https://github.com/imi-bigpicture/wsidicom): Deep Zoom tiles cut from the closest level at or
    above the tile's resolution, µm per pixel from the pixel spacing, label and overview images."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._local = threading.local()
        name = folder.name
        try:
            wsi = self.wsi()
            size, levels = wsi.size, sorted(level.level for level in wsi.levels)
            spacing = wsi.mpp
            mpp_x, mpp_y = float(spacing.width), float(spacing.height)
            wsi.read_region((0, 0), levels[-1], (1, 1))  # a damaged pyramid is refused now
        except SlideError:
            raise
        except Exception as exc:  # noqa: BLE001 - wsidicom raises many kinds; all mean "cannot read"
            raise SlideError(f"{name} cannot be read as a DICOM whole-slide image: {exc}") from None
        self.levels = levels
        self.sizes = {level.level: (level.size.width, level.size.height) for level in wsi.levels}
        associated = []
        for label, reader in (("label", wsi.read_label), ("macro", wsi.read_overview)):
            try:
                reader()
                associated.append(label)
            except Exception:  # noqa: BLE001 - absent
                continue
        self.info = SlideInfo(size.width, size.height, mpp_x or None, mpp_y or None, "DICOM",
                              associated=associated)  # fmt: skip

    def wsi(self):
        wsi = getattr(self._local, "wsi", None)
        if wsi is None:
            from wsidicom import WsiDicom

            if not any(self.folder.glob("*.dcm")) and not any(p.is_file() for p in self.folder.iterdir()):
                raise SlideError(f"{self.folder.name} holds no DICOM files")
            wsi = self._local.wsi = WsiDicom.open(str(self.folder))
        return wsi

    def tile(self, level: int, col: int, row: int):
        """The Deep Zoom tile as DeepZoomGenerator cuts it (``OVERLAP`` shared with neighbours)."""
        from PIL import Image

        info = self.info
        k = info.max_level - level  # the Deep Zoom level is the slide downsampled 2**k
        lw, lh = info.level_size(level)
        x0 = col * info.tile_size - (info.overlap if col else 0)
        y0 = row * info.tile_size - (info.overlap if row else 0)
        x1 = min(lw, (col + 1) * info.tile_size + info.overlap)
        y1 = min(lh, (row + 1) * info.tile_size + info.overlap)
        source = max((lv for lv in self.levels if lv <= k), default=self.levels[0])
        f = 2 ** (k - source)
        sw, sh = self.sizes[source]
        rx, ry = min(x0 * f, sw - 1), min(y0 * f, sh - 1)
        rw, rh = max(1, min((x1 - x0) * f, sw - rx)), max(1, min((y1 - y0) * f, sh - ry))
        image = self.wsi().read_region((rx, ry), source, (rw, rh))
        if image.size != (x1 - x0, y1 - y0):
            image = image.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
        return image

    def associated(self) -> dict:
        out = {}
        if "label" in self.info.associated:
            out["label"] = self.wsi().read_label()
        if "macro" in self.info.associated:
            out["macro"] = self.wsi().read_overview()
        return out

    def close(self) -> None:
        wsi = getattr(self._local, "wsi", None)
        if wsi is not None:
            wsi.close()


def encode(image) -> bytes:
    buf = io.BytesIO()
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()
