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


def _hash(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    h = (a.astype(np.uint64) * np.uint64(73856093)) ^ (b.astype(np.uint64) * np.uint64(19349663)) ^ np.uint64(salt)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995)
    return ((h >> np.uint64(8)) & np.uint64(0xFFFF)).astype(np.float64) / 65535.0


def tissue(x0: int, y0: int, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
    """Something that looks like an H&E section (for screenshots and demos): pink stroma in lobes
    on a white background, purple nuclei of 3.5-6 µm at 0.25 µm/px, deterministic everywhere."""
    xs = x0 + (np.arange(width, dtype=np.float64) + 0.5) * downsample
    ys = y0 + (np.arange(height, dtype=np.float64) + 0.5) * downsample
    x, y = np.meshgrid(xs, ys)
    lobes = np.sin(x / 2100.0) * np.cos(y / 1700.0) + 0.6 * np.sin((x + 2 * y) / 3300.0) + 0.35 * np.cos(x / 700.0)
    inside = np.clip((lobes + 0.15) * 4.0, 0.0, 1.0)
    cell = 44.0
    cx, cy = np.floor(x / cell), np.floor(y / cell)
    jx, jy = _hash(cx, cy, 1), _hash(cx, cy, 2)
    radius = 7.0 + 5.0 * _hash(cx, cy, 3)  # inside its cell whatever the jitter: no cut nuclei
    d = np.hypot(x - (cx + 0.3 + 0.4 * jx) * cell, y - (cy + 0.3 + 0.4 * jy) * cell)
    # Nuclei blur into the stroma as the pixels grow (what a lower level shows).
    nucleus = np.clip((radius - d) / max(downsample, 1.5), 0.0, 1.0) * (_hash(cx, cy, 4) < 0.55) * inside
    white = np.array([246.0, 244.0, 248.0])
    stroma = np.array([232.0, 150.0, 190.0]) - 25.0 * np.sin(y / 90.0)[..., None] * np.cos(x / 130.0)[..., None]
    purple = np.array([92.0, 48.0, 140.0])
    rgb = white + (stroma - white) * inside[..., None]
    rgb = rgb + (purple - rgb) * nucleus[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_slide(path: str | Path, width: int, height: int, mpp: float = 0.25, quality: int = 90,
                noise: int = 0, look: str = "pattern") -> Path:  # fmt: skip
    """Write a pyramid (levels halved until the slide fits one tile) and return the path.

    ``noise`` adds texture of that amplitude (JPEG then compresses like tissue, megabytes rather than kilobytes);
    ``look="tissue"`` draws :func:`tissue` instead of the smooth :func:`pattern`."""
    draw = tissue if look == "tissue" else pattern
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
                tile = draw(tx * ds, ty * ds, TILE, TILE, ds)
                if noise:
                    tile = np.clip(tile.astype(np.int16) + rng.integers(-noise, noise + 1, tile.shape), 0, 255).astype(
                        np.uint8
                    )
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
