"""Janus started for a test: its own config folder (``janus -F``), HTTP port and RTP port range."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

KEEP_PLUGINS = ("libjanus_videoroom.so",)
KEEP_TRANSPORTS = ("libjanus_http.so",)
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


@contextmanager
def janus(folder: Path) -> Iterator[str]:
    """Start Janus (VideoRoom and the HTTP transport only) on a free port; yields its API URL."""
    binary = shutil.which("janus")
    if binary is None or not Path("/etc/janus/janus.jcfg").exists():
        pytest.skip("Janus is not installed (make system-deps)")
    port = free_port()
    kinds = ("plugins", "transports", "events", "loggers")
    names = {kind: [p.name for p in (LIB / kind).glob("*.so")] for kind in kinds}
    keep = {"plugins": KEEP_PLUGINS, "transports": KEEP_TRANSPORTS, "events": (), "loggers": ()}
    main = Path("/etc/janus/janus.jcfg").read_text()
    for kind in names:
        main = re.sub(rf"^{kind}: \{{.*?^\}}", "", main, flags=re.S | re.M)
        main += f'{kind}: {{\n\tdisable = "{",".join(n for n in names[kind] if n not in keep[kind])}"\n}}\n'
    (folder / "janus.jcfg").write_text(main)
    (folder / "janus.transport.http.jcfg").write_text(
        f'general: {{\n\tbase_path = "/janus"\n\thttp = true\n\tport = {port}\n\tip = "127.0.0.1"\n'
        '\thttps = false\n}\nadmin: {\n\tadmin_http = false\n}\n'
    )  # fmt: skip
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    log = folder / "janus.log"
    proc = subprocess.Popen([binary, "-F", str(folder), "-L", str(log), "-N", "-r", f"{port + 1000}-{port + 1200}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/janus"
    deadline = time.time() + 15
    while True:
        try:
            if httpx.get(url + "/info", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"Janus did not start: {log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
