"""DICOM ingest and retrieval: Telemed against Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``), in one run.

    .venv/bin/python benchmarks/dicom_vs_orthanc.py [--n 2000] [--series 500] [--stow-batch 100]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test] [--json PATH]

Both servers are started by the script, each with its own temporary folder and free ports: Orthanc
with its default SQLite index and files (plugin DICOMweb, no authentication, no compression);
Telemed with ``telemed serve`` (DICOM service on, demo network loaded so DEMO_MODALITY may
store) on SQLite by default, or on a fresh PostgreSQL database with ``--postgres-url``.

The instances are ``CT_small.dcm`` from pydicom (128x128, 16 bits, 39 kB) with new UIDs: N
instances in series of SERIES instances, new UIDs for every phase, the same files for both servers.

1. C-STORE, one association: ``storescu +sd`` of N files (dcmtk, ``TCP_NODELAY=1``).
2. C-STORE, 4 associations in parallel: four ``storescu`` processes of N/4 files each.
3. STOW-RS: N instances in multipart/related requests of STOW_BATCH instances, one client.
4. WADO-RS: retrieval of one SERIES-instance series (multipart, all bytes read), and its /metadata,
   each 5 times after one untimed call; the median and the first (cold) call are printed.

Telemed's DICOMweb requests carry a bearer token of the demo platform administrator; Orthanc's none.
Exit status: 0 when Telemed meets the goals (ingest >= 1.0x Orthanc, retrieval latency <= Orthanc's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
TELEMED = [str(ROOT / ".venv" / "bin" / "telemed")]
CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, headers: dict | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def make_instances(folder: Path, n: int, per_series: int) -> list[tuple[str, str]]:
    """N files with new UIDs; returns (study, series) of each series."""
    folder.mkdir(parents=True)
    template = pydicom.dcmread(CT_SMALL)
    study = generate_uid()
    series_list = []
    for i in range(n):
        if i % per_series == 0:
            series = generate_uid()
            series_list.append((study, series))
        template.StudyInstanceUID, template.SeriesInstanceUID = study, series
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = i % per_series + 1
        template.PatientID = "BENCH-" + study[-8:]
        template.save_as(folder / f"{i:05d}.dcm")
    return series_list


def storescu(port: int, aet: str, aec: str, files: list[Path]) -> subprocess.Popen:
    # storescu takes files on the command line; thousands of names would overflow it: one folder each
    sub = files[0].parent / f"part-{uuid.uuid4().hex[:6]}"
    sub.mkdir()
    for f in files:
        f.rename(sub / f.name)
    return subprocess.Popen(
        ["storescu", "-aet", aet, "-aec", aec, "127.0.0.1", str(port), "+sd", str(sub)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def cstore(port: int, aet: str, aec: str, folder: Path, parallel: int) -> float:
    files = sorted(folder.glob("*.dcm"))
    chunks = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [storescu(port, aet, aec, chunk) for chunk in chunks]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err[-2000:]}")
    return time.perf_counter() - start


def stow(url: str, headers: dict, folder: Path, batch: int) -> float:
    files = sorted(folder.glob("*.dcm"))
    payloads = [[f.read_bytes() for f in files[i : i + batch]] for i in range(0, len(files), batch)]
    bnd = "bench-" + uuid.uuid4().hex
    bodies = []
    for parts in payloads:
        body = b"".join(f"--{bnd}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
        bodies.append(body + f"--{bnd}--\r\n".encode())
    ctype = f'multipart/related; type="application/dicom"; boundary={bnd}'
    with httpx.Client(timeout=300, headers={**headers, "Content-Type": ctype, "Accept": "application/dicom+json"}) as c:
        start = time.perf_counter()
        for body in bodies:
            r = c.post(url + "/studies", content=body)
            if r.status_code != 200:
                raise RuntimeError(f"STOW-RS answered {r.status_code}: {r.text[:500]}")
        return time.perf_counter() - start


def timed_get(client: httpx.Client, url: str, accept: str, runs: int = 5) -> tuple[float, float, int]:
    """(first call, median of ``runs`` later calls) in seconds, and the response size."""
    t0 = time.perf_counter()
    r = client.get(url, headers={"Accept": accept})
    first = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} answered {r.status_code}: {r.text[:300]}")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = client.get(url, headers={"Accept": accept})
        r.read()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), len(r.content)


def start_orthanc(tmp: Path) -> tuple[subprocess.Popen, int, int]:
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "StorageCompression": False,
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config))
    # Orthanc speaks DICOM through dcmtk, which reads TCP_NODELAY from the environment as storescu does.
    proc = subprocess.Popen(["Orthanc", str(path)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{http_port}/system")
    return proc, dicom_port, http_port


def start_telemed(tmp: Path, database_url: str) -> tuple[subprocess.Popen, int, int, str]:
    http_port, dicom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMED_")}
    env |= {
        "TELEMED_VAR_DIR": str(tmp / "var"),
        "TELEMED_DATABASE_URL": database_url,
        "TELEMED_BLOB_URL": f"file:{tmp}/var/blobs",
        "TELEMED_PORT": str(http_port),
        "TELEMED_DICOM_PORT": str(dicom_port),
        "TELEMED_LOG_LEVEL": "WARNING",
    }
    subprocess.run([*TELEMED, "migrate"], env=env, cwd=tmp, check=True, capture_output=True)
    subprocess.run([*TELEMED, "demo"], env=env, cwd=tmp, check=True, capture_output=True)
    out = subprocess.run(
        [*TELEMED, "token", "create", "--user", "admin"], env=env, cwd=tmp, check=True, capture_output=True, text=True
    )
    token = out.stdout.strip().splitlines()[-1]
    proc = subprocess.Popen([*TELEMED, "serve"], env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_http(f"http://127.0.0.1:{http_port}/readyz")
    return proc, dicom_port, http_port, token


def run_target(name, dicom_port, aet, aec, web, headers, work: Path, args) -> dict:
    res: dict = {}
    for phase, parallel in (("cstore_1", 1), ("cstore_4", 4)):
        folder = work / f"{name}-{phase}"
        make_instances(folder, args.n, args.series)
        res[phase] = args.n / cstore(dicom_port, aet, aec, folder, parallel)
        print(f"  {name:8} C-STORE x{parallel}: {res[phase]:7.1f} instances/s", flush=True)
    folder = work / f"{name}-stow"
    series = make_instances(folder, args.n, args.series)
    res["stow"] = args.n / stow(web, headers, folder, args.stow_batch)
    print(f"  {name:8} STOW-RS:    {res['stow']:7.1f} instances/s", flush=True)
    study, se = series[0]
    with httpx.Client(timeout=300, headers=headers) as c:
        url = f"{web}/studies/{study}/series/{se}"
        first, median, size = timed_get(c, url, 'multipart/related; type="application/dicom"; transfer-syntax=*')
        res["wado_series_first"], res["wado_series"], res["wado_series_bytes"] = first, median, size
        print(
            f"  {name:8} WADO-RS series ({args.series}): first {first * 1000:7.1f} ms, median {median * 1000:7.1f} ms"
        )
        first, median, size = timed_get(c, url + "/metadata", "application/dicom+json")
        res["metadata_first"], res["metadata"], res["metadata_bytes"] = first, median, size
        print(f"  {name:8} series /metadata:   first {first * 1000:7.1f} ms, median {median * 1000:7.1f} ms")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--series", type=int, default=500)
    ap.add_argument("--stow-batch", type=int, default=100)
    ap.add_argument("--postgres-url")
    ap.add_argument("--json")
    args = ap.parse_args()
    for tool in ("storescu", "Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: apt-get install dcmtk orthanc orthanc-dicomweb", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="dicom-bench-"))
    procs = []
    pg_db = None
    try:
        database_url = f"sqlite:///{tmp}/telemed/var/telemed.db"
        if args.postgres_url:
            from sqlalchemy import create_engine, text

            pg_db = f"telemed_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres_url.replace("postgresql://", "postgresql+psycopg://"))
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f'CREATE DATABASE "{pg_db}"'))
            database_url = args.postgres_url.rsplit("/", 1)[0] + "/" + pg_db
        (tmp / "orthanc").mkdir()
        (tmp / "telemed").mkdir()
        orthanc, o_dicom, o_http = start_orthanc(tmp / "orthanc")
        procs.append(orthanc)
        telemed, t_dicom, t_http, token = start_telemed(tmp / "telemed", database_url)
        procs.append(telemed)
        print(f"Orthanc {subprocess.run(['Orthanc', '--version'], capture_output=True, text=True).stdout.split()[1]}"
              f" (SQLite index) vs Telemed ({'PostgreSQL' if args.postgres_url else 'SQLite'}); "
              f"{args.n} CT_small instances per phase, series of {args.series}")  # fmt: skip
        load_before = os.getloadavg()
        print("load average", " ".join(f"{x:.2f}" for x in load_before), flush=True)
        results = {
            "orthanc": run_target(
                "Orthanc", o_dicom, "BENCH", "ORTHANC", f"http://127.0.0.1:{o_http}/dicom-web", {}, tmp, args
            ),
            "telemed": run_target(
                "Telemed",
                t_dicom,
                "DEMO_MODALITY",
                "TELEMED",
                f"http://127.0.0.1:{t_http}/dicomweb",
                {"Authorization": f"Bearer {token}"},
                tmp,
                args,
            ),  # fmt: skip
        }
        o, t = results["orthanc"], results["telemed"]
        ratios = {
            "cstore_1": t["cstore_1"] / o["cstore_1"],
            "cstore_4": t["cstore_4"] / o["cstore_4"],
            "stow": t["stow"] / o["stow"],
            "wado_series": t["wado_series"] / o["wado_series"],
            "metadata": t["metadata"] / o["metadata"],
        }
        results["ratios"] = ratios
        results["load_average"] = {"before": load_before, "after": os.getloadavg()}
        print("load average", " ".join(f"{x:.2f}" for x in results["load_average"]["after"]))
        print("Telemed / Orthanc (ingest: higher is better; latency: lower is better)")
        for k, v in ratios.items():
            print(f"  {k:12} {v:5.2f}x")
        ok = all(ratios[k] >= 1.0 for k in ("cstore_1", "cstore_4", "stow")) and all(
            ratios[k] <= 1.0 for k in ("wado_series", "metadata")
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0 if ok else 1
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_db:
            from sqlalchemy import create_engine, text

            admin = create_engine(args.postgres_url.replace("postgresql://", "postgresql+psycopg://"))
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)'))


if __name__ == "__main__":
    sys.exit(main())
