"""The ``telemed`` command, run as a user would run it (a subprocess in a fresh directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import free_port

TELEMED = [sys.executable, "-m", "telemed"]


def run(cwd: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMED_")} | (env or {})
    return subprocess.run([*TELEMED, *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("cli")
    run(cwd, "migrate")
    return cwd


def test_demo_is_idempotent_and_token_is_last_line(workdir):
    first = run(workdir, "demo", "--if-empty").stdout
    assert "14 Organization" in first and "30 Patient" in first
    assert "already has data" in run(workdir, "demo", "--if-empty").stdout
    assert "0 Organization" in run(workdir, "demo").stdout
    out = run(workdir, "token", "create", "--user", "admin", "--scope", "user/*.read", "--ttl", "120").stdout
    token = out.strip().splitlines()[-1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "admin" and claims["scope"] == "user/*.read"
    assert claims["exp"] - claims["iat"] == 120
    assert (workdir / "var" / "secret.key").exists()


def test_token_for_unknown_user_fails_clearly(workdir):
    r = run(workdir, "token", "create", "--user", "nobody", check=False)
    assert r.returncode == 2 and "no active account" in r.stderr


def test_check_reports_problems(workdir):
    assert run(workdir, "check").stdout.strip() == "configuration OK"
    r = run(workdir, "check", env={"TELEMED_DEMO": "false"}, check=False)
    assert r.returncode == 1
    assert "TELEMED_SECRET_KEY is required" in r.stdout and "SQLite" in r.stdout
    r = run(workdir, "check", env={"TELEMED_DATABASE_URL": "sqlite:///./var/other.db"}, check=False)
    assert "not migrated" in r.stdout


def test_serve_lists_the_thirteen_institutions(workdir):
    run(workdir, "demo")
    token = run(workdir, "token", "create", "--user", "admin").stdout.strip().splitlines()[-1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMED_")} | {"TELEMED_PORT": str(port)}
    proc = subprocess.Popen([*TELEMED, "serve"], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline and proc.poll() is None, "server did not become ready"
            time.sleep(0.2)
        r = httpx.get(f"http://127.0.0.1:{port}/fhir/Organization", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        bundle = r.json()
        assert bundle["total"] == 14
        names = {e["resource"]["name"] for e in bundle["entry"]}
        assert "岚江省人民医院" in names
    finally:
        proc.terminate()
        proc.wait(10)
        logs = proc.stderr.read()
    assert '"msg": "request"' in logs and '"request_id"' in logs  # structured JSON access log
