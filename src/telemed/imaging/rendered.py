"""Rendered and thumbnail resources (PS3.18 §10.4.1.1.6 and §10.4.1.2.7, §8.3.5.1.3 window).

A frame is decoded (pydicom + pylibjpeg for compressed transfer syntaxes), the Modality LUT is
applied (Rescale Slope/Intercept), then the VOI window: from ``window=center,width[,function]`` in
the request, else the instance's first Window Center/Width, else the frame's range. Colour images
are sent as they are. JPEG or PNG, optionally scaled to fit ``viewport=width,height``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom import dcmread

from telemed.kernel.errors import Category, TelemedError, incorrect

MEDIA = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL = (128, 128)


def choose_media(accept: str) -> str:
    for media in (a.split(";")[0].strip().lower() for a in (accept or "").split(",")):
        if media in MEDIA:
            return media
        if media in ("image/*", "*/*", ""):
            return "image/jpeg"
    raise TelemedError(Category.UNSUPPORTED_MEDIA, "Rendered images are image/jpeg or image/png")


def _window(value: str | None) -> tuple[float, float, str] | None:
    if not value:
        return None
    parts = value.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise incorrect("window is center,width[,function]", "window") from None
    function = parts[2].strip().lower() if len(parts) > 2 else "linear"
    if width <= 0 or function not in ("linear", "sigmoid", "linear_exact"):
        raise incorrect("window width must be positive; function linear, linear_exact or sigmoid", "window")
    return center, width, function


def _first(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def render(
    raw: bytes,
    frame: int = 1,
    *,
    media: str = "image/jpeg",
    window: str | None = None,
    viewport: str | None = None,
    quality: int = 90,
    thumbnail: bool = False,
) -> bytes:
    ds = dcmread(io.BytesIO(raw))
    if "PixelData" not in ds:
        raise TelemedError(Category.NOT_FOUND, "The instance has no image to render")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= count:
        raise TelemedError(Category.NOT_FOUND, f"Frame {frame} is not in 1..{count}")
    arr = ds.pixel_array
    if count > 1:
        arr = arr[frame - 1]
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1:
        pixels = arr.astype(np.float64)
        slope, intercept = _first(ds.get("RescaleSlope")) or 1.0, _first(ds.get("RescaleIntercept")) or 0.0
        pixels = pixels * slope + intercept
        win = _window(window)
        if win is None:
            center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
            if center is not None and width and width > 0:
                win = (center, width, "linear")
            else:
                low, high = float(pixels.min()), float(pixels.max())
                win = ((low + high) / 2, max(high - low, 1.0), "linear_exact")
        center, width, function = win
        if function == "sigmoid":
            out = 255.0 / (1 + np.exp(-4 * (pixels - center) / width))
        elif function == "linear_exact":
            out = (pixels - (center - width / 2)) / width * 255.0
        else:  # PS3.3 C.11.2.1.2.1
            out = ((pixels - (center - 0.5)) / (width - 1) + 0.5) * 255.0
        out = np.clip(out, 0, 255).astype(np.uint8)
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            out = 255 - out
        image = Image.fromarray(out, "L")
    else:
        if arr.dtype != np.uint8:
            arr = (arr / max(float(arr.max()), 1.0) * 255).astype(np.uint8)
        image = Image.fromarray(arr[..., :3], "RGB")
    size = THUMBNAIL if thumbnail else _viewport(viewport)
    if size:
        image.thumbnail(size)
    buf = io.BytesIO()
    if MEDIA[media] == "JPEG":
        image.save(buf, "JPEG", quality=max(1, min(quality, 100)))
    else:
        image.save(buf, "PNG")
    return buf.getvalue()


def _viewport(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        w, h = (int(v) for v in value.split(",")[:2])
    except ValueError:
        raise incorrect("viewport is width,height", "viewport") from None
    if w <= 0 or h <= 0:
        raise incorrect("viewport is width,height", "viewport")
    return w, h
