"""``telemed serve`` runs the DICOM service beside the web platform; the demo's modality may store at once."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.imaging.conftest import TEST_FILES, need
from tests.test_cli import TELEMED, run


def test_serve_starts_the_dicom_service_for_the_demo_modality(tmp_path):
    echoscu, storescu = need("echoscu"), need("storescu")
    run(tmp_path, "migrate")
    run(tmp_path, "demo", "--if-empty")
    port, dicom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMED_")}
    env |= {"TELEMED_PORT": str(port), "TELEMED_DICOM_PORT": str(dicom_port)}
    proc = subprocess.Popen([*TELEMED, "serve"], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90  # (start-up took over 30 s while other suites loaded the 2 cores)
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail("server did not become ready")
            time.sleep(0.2)
        peer = ["-aet", "DEMO_MODALITY", "-aec", "TELEMED", "127.0.0.1", str(dicom_port)]
        tcp = {**os.environ, "TCP_NODELAY": "1"}
        assert subprocess.run([echoscu, *peer], env=tcp, capture_output=True).returncode == 0
        r = subprocess.run([storescu, "-v", *peer, str(TEST_FILES / "CT_small.dcm")], env=tcp, capture_output=True)
        assert b"Store Response (Success)" in r.stderr
    finally:
        proc.terminate()
        proc.wait(10)
