"""A bounded, thread-safe least-recently-used cache of encoded tiles (bytes), shared by all slides."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class TileCache:
    """Keeps at most ``max_bytes`` of tile bytes; the least recently used go first."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._items[key] = data
            self.size += len(data)
            while self.size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)

    def drop(self, prefix: Hashable) -> None:
        """Forget every tile whose key starts with ``prefix`` (a slide replaced by its full file)."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k[0] == prefix]:
                self.size -= len(self._items.pop(key))
