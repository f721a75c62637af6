"""The slide interface over OpenSlide: Deep Zoom geometry, tiles against the source, scale, refusals."""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from telemed.pathology.slide import Slide, SlideError, SlideInfo
from telemed.pathology.synthetic import pattern, write_slide
from telemed.pathology.tilecache import TileCache

W, H, MPP = 3000, 2200, 0.5


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("wsi") / "case.tiff", W, H, mpp=MPP)


def _expected(info: SlideInfo, level: int, col: int, row: int) -> np.ndarray:
    """The source region a Deep Zoom tile shows (with its overlap), computed from the pattern."""
    ds = 2 ** (info.max_level - level)
    lw, lh = info.level_size(level)
    cols, rows = info.tile_grid(level)
    x0 = col * info.tile_size - (info.overlap if col else 0)
    y0 = row * info.tile_size - (info.overlap if row else 0)
    x1 = min(lw, (col + 1) * info.tile_size + (info.overlap if col < cols - 1 else 0))
    y1 = min(lh, (row + 1) * info.tile_size + (info.overlap if row < rows - 1 else 0))
    return pattern(x0 * ds, y0 * ds, x1 - x0, y1 - y0, ds)


def test_geometry_and_scale_match_openslide(slide_path):
    slide = Slide(slide_path)
    info = slide.info
    assert (info.width, info.height) == (W, H)
    assert info.mpp_x == pytest.approx(MPP) and info.mpp_y == pytest.approx(MPP)
    assert info.vendor == "generic-tiff"
    import openslide

    dz = DeepZoomGenerator(openslide.OpenSlide(str(slide_path)), info.tile_size, info.overlap, limit_bounds=False)
    assert dz.level_count == info.max_level + 1
    for level in range(dz.level_count):
        assert dz.level_dimensions[level] == info.level_size(level)
        assert dz.level_tiles[level] == info.tile_grid(level)
    assert 'TileSize="254"' in info.dzi() and f'Width="{W}"' in info.dzi()
    assert SlideInfo.from_json(info.to_json()) == info


def test_tiles_at_each_level_match_the_source_region(slide_path):
    slide = Slide(slide_path)
    info = slide.info
    # Down to 1/32: coarser levels average whole waves of the pattern, which a point sample cannot predict.
    for level in range(info.max_level - 5, info.max_level + 1):
        cols, rows = info.tile_grid(level)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            image = np.asarray(Image.open(io.BytesIO(slide.tile(level, col, row))).convert("RGB"), dtype=np.int16)
            expected = _expected(info, level, col, row).astype(np.int16)
            assert image.shape == expected.shape, (level, col, row)
            # JPEG twice (slide, tile) and resampling: a few grey levels on smooth content
            assert np.abs(image - expected).mean() < 4, (level, col, row)


def test_tiles_are_cached_and_outside_tiles_are_not_found(slide_path):
    cache = TileCache(10 * 1024 * 1024)
    slide = Slide(slide_path, cache)
    first = slide.tile(slide.info.max_level, 1, 1)
    assert slide.tile(slide.info.max_level, 1, 1) is first and cache.hits == 1
    for level, col, row in [(slide.info.max_level + 1, 0, 0), (-1, 0, 0), (slide.info.max_level, 99, 0)]:
        with pytest.raises(Exception) as exc:
            slide.tile(level, col, row)
        assert exc.value.category.status == 404


def test_cache_stays_within_its_bound():
    cache = TileCache(1000)
    for i in range(10):
        cache.put(("s", i), b"x" * 300)
    assert cache.size <= 1000 and cache.get(("s", 9)) is not None and cache.get(("s", 0)) is None


def test_thumbnail_keeps_the_aspect(slide_path):
    thumb = Image.open(io.BytesIO(Slide(slide_path).thumbnail(300)))
    assert thumb.width == 300 and thumb.height == math.ceil(300 * H / W) or thumb.height == 300 * H // W


def test_concurrent_tiles_from_many_threads(slide_path):
    slide = Slide(slide_path, TileCache(0))
    errors = []

    def work(seed):
        try:
            for i in range(20):
                slide.tile(slide.info.max_level, (seed + i) % 10, i % 8)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_corrupt_or_foreign_file_is_refused_clearly(tmp_path, slide_path):
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(SlideError) as exc:
        Slide(text)
    assert "notes.svs" in exc.value.message and exc.value.category.status == 422
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(slide_path.read_bytes()[: slide_path.stat().st_size // 3])
    with pytest.raises(SlideError) as exc:
        Slide(truncated)
    assert "truncated.tiff" in exc.value.message
