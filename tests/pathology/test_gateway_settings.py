"""The gateway's settings: bandwidth caps, upload windows, the throttle yielding to tiles."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime

import pytest

from telemed.__main__ import main
from telemed.pathology.cli import parse_rate
from telemed.pathology.gateway import Throttle, in_window, parse_window


def test_rates():
    assert parse_rate("2Mbit") == 250_000
    assert parse_rate("500kbit/s") == 62_500
    assert parse_rate("250kB") == 250_000
    assert parse_rate("none") is None and parse_rate(None) is None
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rate("fast")


def test_windows_across_midnight():
    night = parse_window("22:00-06:00")
    assert in_window(night, datetime(2026, 1, 1, 23, 30)) and in_window(night, datetime(2026, 1, 1, 5, 59))
    assert not in_window(night, datetime(2026, 1, 1, 12, 0))
    assert in_window(parse_window("08:00-18:00"), datetime(2026, 1, 1, 12, 0))
    assert in_window(None, datetime(2026, 1, 1, 12, 0))


def test_throttle_paces_and_yields_to_tiles():
    async def run() -> tuple[float, float]:
        throttle = Throttle(100_000)
        started = time.monotonic()
        for _ in range(5):
            await throttle.acquire(20_000)  # 100 kB at 100 kB/s: about 0.8 s after the first part
        paced = time.monotonic() - started
        throttle.spend(0)  # a tile request: the upload waits half a second
        started = time.monotonic()
        await throttle.acquire(1)
        return paced, time.monotonic() - started

    paced, yielded = asyncio.run(run())
    assert 0.7 < paced < 1.5 and yielded >= 0.3
    assert Throttle(250_000).part_size(4 * 2**20) == 125_000 and Throttle(None).part_size(4 * 2**20) == 4 * 2**20


def test_the_command_needs_its_secret_from_the_environment(monkeypatch, capsys):
    monkeypatch.delenv("TELEMED_GATEWAY_CLIENT_SECRET", raising=False)
    assert main(["gateway", "--centre", "https://centre.example.cn", "--client-id", "c-1", "--folder", "."]) == 2
    assert "TELEMED_GATEWAY_CLIENT_SECRET" in capsys.readouterr().out
