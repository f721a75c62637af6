"""One interface to whole-slide images: Deep Zoom tiles, thumbnail, associated images, micrometres per pixel.

OpenSlide (https://openslide.org/) reads the vendor formats (Aperio SVS, Hamamatsu NDPI, MIRAX,
Philips TIFF, Leica SCN, Ventana, DICOM WSI) and generic tiled TIFF. Tiles follow the Deep Zoom
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
            image = self._generator().get_tile(level, (col, row))
            data = encode(image)
            self.cache.put(key, data)
        return data

    def thumbnail(self, size: int = 512) -> bytes:
        return encode(self._handle().get_thumbnail((size, size)))

    def associated_image(self, name: str) -> bytes:
        images = self._handle().associated_images
        if name not in images:
            raise TelemedError(Category.NOT_FOUND, f"This slide has no {name} image")
        return encode(images[name])

    def close(self) -> None:
        osr = getattr(self._local, "osr", None)
        if osr is not None:
            osr.close()


def encode(image) -> bytes:
    buf = io.BytesIO()
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()
