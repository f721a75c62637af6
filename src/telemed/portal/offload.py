"""Blocking work of the portal's ``async`` routes, run off the event loop.

Routes that read a form or an upload must be ``async`` (Starlette parses the body on the loop), but
their unit of work (SQL, signing, WeasyPrint) blocks. Run on the loop, one report PDF stalled every
page and every live-board event of the instance for its whole duration (benchmarks/board.py
measured board events minutes late). So the blocking part goes to a worker thread, and state
changes get their own small limiter: writes serialise in the database anyway (SQLite has one writer),
and bounding them keeps the shared thread pool free for page reads and the board's streams.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import anyio
from anyio import to_thread

T = TypeVar("T")
WRITERS = 4
_limiter: anyio.CapacityLimiter | None = None


def _writers() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:  # created on first use, inside the running event loop
        _limiter = anyio.CapacityLimiter(WRITERS)
    return _limiter


async def write(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, at most ``WRITERS`` at once per process."""
    return await to_thread.run_sync(partial(fn, *args, **kwargs), limiter=_writers())
