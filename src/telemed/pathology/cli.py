"""``telemed gateway``: the site gateway as a command (see :mod:`telemed.pathology.gateway`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
from pathlib import Path

from telemed.pathology.gateway import Gateway, GatewayConfig, parse_window

_RATE = re.compile(r"^\s*([\d.]+)\s*([kmg]?)(bit|b)?(/s|ps)?\s*$", re.IGNORECASE)


def parse_rate(text: str | None) -> float | None:
    """``"2Mbit"``, ``"500kbit/s"``, ``"250kB"`` or bytes per second -> bytes per second (None: no cap)."""
    if not text or text.strip().lower() in ("0", "none", "off"):
        return None
    m = _RATE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 2Mbit, 500kbit/s, 250kB)")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return value / 8 if (m.group(3) or "").lower() == "bit" else value


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--centre", default=env("TELEMED_GATEWAY_CENTRE"), help="the centre's address, https://...")
    p.add_argument("--client-id", default=env("TELEMED_GATEWAY_CLIENT_ID"))
    p.add_argument("--folder", default=env("TELEMED_GATEWAY_FOLDER"), help="the folder the scanner writes to")
    p.add_argument("--state", default=env("TELEMED_GATEWAY_STATE", "./var/gateway"), help="where progress is kept")
    p.add_argument("--rate", default=env("TELEMED_GATEWAY_RATE"), help="upload cap, e.g. 2Mbit (default: none)")
    p.add_argument("--window", default=env("TELEMED_GATEWAY_WINDOW"), help="upload hours, e.g. 22:00-06:00")


def run_gateway(args: argparse.Namespace) -> int:
    """The client secret is read from TELEMED_GATEWAY_CLIENT_SECRET only (never a command line)."""
    secret = os.environ.get("TELEMED_GATEWAY_CLIENT_SECRET")
    missing = [n for n, v in [("--centre", args.centre), ("--client-id", args.client_id), ("--folder", args.folder),
                              ("TELEMED_GATEWAY_CLIENT_SECRET", secret)] if not v]  # fmt: skip
    if missing:
        print("missing: " + ", ".join(missing))
        return 2
    config = GatewayConfig(
        centre=args.centre.rstrip("/"), client_id=args.client_id, client_secret=secret, folder=Path(args.folder),
        state_dir=Path(args.state), rate=parse_rate(args.rate), window=parse_window(args.window),
    )  # fmt: skip
    gateway = Gateway(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gateway.stop)
        await gateway.run()

    asyncio.run(main())
    return 0
