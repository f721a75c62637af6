"""multipart/related bodies (RFC 2387) as DICOMweb uses them (PS3.18 §8.6.1.2, §8.7.3.5)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator

from telemed.kernel.errors import Category, TelemedError

CHUNK = 1024 * 1024


def boundary() -> str:
    return "telemed-" + secrets.token_hex(12)


def content_type(part_type: str, bnd: str, transfer_syntax: str | None = None) -> str:
    ts = f";transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"; boundary={bnd}'.replace(f'"{part_type}"', f'"{part_type}"{ts}')


def encode(parts: Iterable[tuple[bytes, str]], bnd: str, locations: Iterable[str] | None = None) -> Iterator[bytes]:
    """Chunks of a multipart body: each part with its own Content-Type (and Content-Location)."""
    locs = iter(locations) if locations is not None else None
    head = f"--{bnd}\r\n".encode()
    # Parts are gathered into chunks of about CHUNK bytes: a streaming response pays a thread hop per
    # chunk, and 500 small instances in 1,500 pieces spend more time hopping than sending.
    pending: list[bytes] = []
    size = 0
    for data, ctype in parts:
        loc = f"Content-Location: {next(locs)}\r\n" if locs is not None else ""
        pending += [head + f"Content-Type: {ctype}\r\n{loc}Content-Length: {len(data)}\r\n\r\n".encode(), data, b"\r\n"]
        size += len(data)
        if size >= CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(f"--{bnd}--\r\n".encode())
    yield b"".join(pending)


def params(header: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` -> (``type/subtype``, {a: b, c: d}) with lower-case names."""
    main, *rest = [p.strip() for p in header.split(";")]
    out = {}
    for p in rest:
        name, _, value = p.partition("=")
        out[name.strip().lower()] = value.strip().strip('"')
    return main.lower(), out


def decode(body: bytes, header: str) -> list[tuple[dict[str, str], bytes]]:
    """Parts of a multipart/related body: (headers with lower-case names, content)."""
    media, p = params(header)
    if media != "multipart/related" or not p.get("boundary"):
        raise TelemedError(
            Category.UNSUPPORTED_MEDIA, 'STOW-RS needs Content-Type: multipart/related; type="application/dicom"'
        )
    delimiter = b"--" + p["boundary"].encode()
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise TelemedError(Category.INCORRECT, "A multipart part has no header/body separator")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts
