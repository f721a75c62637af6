"""Blob storage for large binaries (``Binary`` bodies, attachment data), kept out of database rows.

Blobs are content-addressed (SHA-256), so writing is idempotent: a request that rolls back after
writing a blob leaves at most an unreferenced file, never a row pointing at nothing. Only the
``file:`` scheme exists today; object storage plugs in behind the same two methods.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from telemed.kernel.errors import Category, TelemedError


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...


class FileBlobStore:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise TelemedError(Category.INCORRECT, f"Malformed blob key {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write-then-rename: a crash never leaves a truncated blob under its final name.
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise TelemedError(Category.FAULT, f"Blob {key} is missing from the blob store") from None


def open_blob_store(url: str) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileBlobStore(Path(parsed.path))
    raise ValueError(f"Unsupported blob store URL {url!r} (supported: file:PATH)")
