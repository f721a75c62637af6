"""Whole-slide images with known content, generated (never downloaded) for tests, benchmarks and the demo.

A pyramidal tiled TIFF as OpenSlide reads it ("generic tiled TIFF"): one page per level, level 0
``subfiletype=0``, the reduced levels ``subfiletype=1``, 256-pixel JPEG tiles, and the resolution
tag in pixels per centimetre so that OpenSlide reports micrometres per pixel. Tiles are written from
a generator, so a large slide never sits in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TILE = 256


def pattern(x0: int, y0: int, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
    """The RGB pixels of the region at level-0 origin (x0, y0) of a slide, ``downsample`` level-0
    pixels per output pixel: smooth colour gradients and slow waves, so that a JPEG round trip and
    any resampling filter agree to a few grey levels (the tests compare tiles with the source)."""
    xs = x0 + (np.arange(width, dtype=np.float64) + 0.5) * downsample
    ys = y0 + (np.arange(height, dtype=np.float64) + 0.5) * downsample
    x, y = np.meshgrid(xs, ys)
    r = 128 + 100 * np.sin(x / 1500.0)
    g = 128 + 100 * np.cos(y / 1100.0)
    b = 128 + 90 * np.sin((x + y) / 2300.0)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def write_slide(path: str | Path, width: int, height: int, mpp: float = 0.25, quality: int = 90,
                noise: bool = False) -> Path:  # fmt: skip
    """Write a pyramid (levels halved until the slide fits one tile) and return the path.

    ``noise`` adds texture (JPEG then compresses like tissue, megabytes rather than kilobytes)."""
    import tifffile

    path = Path(path)
    levels: list[tuple[int, int, int]] = []
    w, h, ds = width, height, 1
    while True:
        levels.append((w, h, ds))
        if w <= TILE and h <= TILE:
            break
        w, h, ds = max(1, w // 2), max(1, h // 2), ds * 2
    rng = np.random.default_rng(7)

    def tiles(w: int, h: int, ds: int):
        for ty in range(0, h, TILE):
            for tx in range(0, w, TILE):
                tile = pattern(tx * ds, ty * ds, TILE, TILE, ds)
                if noise:
                    tile = np.clip(tile.astype(np.int16) + rng.integers(-40, 40, tile.shape), 0, 255).astype(np.uint8)
                yield tile

    per_cm = 10_000.0 / mpp
    with tifffile.TiffWriter(path, bigtiff=width * height > 2**31) as tif:
        for i, (w, h, ds) in enumerate(levels):
            tif.write(
                tiles(w, h, ds), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                compression="jpeg", compressionargs={"level": quality}, subfiletype=0 if i == 0 else 1,
                resolution=(per_cm / ds, per_cm / ds), resolutionunit="CENTIMETER",
                description="Telemed synthetic slide" if i == 0 else None,
            )  # fmt: skip
    return path
