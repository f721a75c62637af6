"""The diagnostic viewer's load: from opening a study in OHIF to its first image on screen.

Telemed in one uvicorn process on loopback (SQLite), one CT series of ``--slices`` 512 x 512 images
(pydicom's CT_small.dcm enlarged, new UIDs) stored by STOW-RS; Debian's Chromium (Playwright) signed
in to the portal opens ``/portal/viewer/viewer?StudyInstanceUIDs=…`` and the clock stops when the
viewport's canvas holds an image (the same pixel check as the browser test). Each run is a fresh
browser context (empty cache) unless said "warm":

- loopback, cold and warm;
- a 10 Mbit/s, 30 ms link (Chromium's network emulation), cold: a county hospital's line.

Also printed: the bytes the browser received for the viewer itself (scripts, styles, WebAssembly) against
their size on disk, i.e. what the gzip compression of ``telemed.portal.imaging.viewer`` saves.

    .venv/bin/python benchmarks/viewer_load.py [--slices 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import copy
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import uvicorn
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from telemed.app import Services, create_app  # noqa: E402
from telemed.db.engine import unit_of_work  # noqa: E402
from telemed.db.migrate import upgrade  # noqa: E402
from telemed.fhir.store.context import AccessContext  # noqa: E402
from telemed.identity import ensure_account, issue_token  # noqa: E402
from telemed.identity.passwords import hash_password  # noqa: E402
from telemed.kernel.clock import SystemClock  # noqa: E402
from telemed.portal.imaging import viewer  # noqa: E402
from telemed.settings import Settings  # noqa: E402

PASSWORD = "Bench-Viewer-2026!"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
DRAWN = """() => {
  const c = document.querySelector('.cornerstone-viewport-element canvas, [data-viewport-uid] canvas');
  if (!c || !c.width || !c.height) return false;
  const d = c.getContext('2d', { willReadFrequently: true }).getImageData(0, 0, c.width, c.height).data;
  let differ = 0, lo = 255, hi = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] !== d[0]) differ++;
    lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]);
  }
  return differ > 1000 && hi - lo > 50;
}"""


def series(n: int) -> list[pydicom.Dataset]:
    base = pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm")
    big = np.kron(base.pixel_array, np.ones((4, 4), dtype=base.pixel_array.dtype))  # 128 -> 512
    study, ser = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, ser, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows = ds.Columns = 512
        ds.PixelSpacing = [float(v) / 4 for v in base.PixelSpacing]
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [*base.ImagePositionPatient[:2], float(base.ImagePositionPatient[2]) + 1.0 * i]
        ds.PixelData = np.roll(big, i, axis=1).tobytes()
        out.append(ds)
    return out


class Server:
    def __init__(self, app, port: int):
        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not viewer.installed():
        sys.exit("OHIF Viewer is not installed (make deps)")
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="telemed-viewer-bench-"))
    settings = Settings(demo=True, var_dir=tmp, database_url=f"sqlite:///{tmp}/t.db", blob_url=f"file:{tmp}/blobs",
                        secret_key="bench-" + "x" * 40, max_body_bytes=16 * 1024 * 1024,
                        encryption_keys="k1:" + base64.b64encode(b"k" * 32).decode(),
                        index_key=base64.b64encode(b"i" * 32).decode())  # fmt: skip
    services = Services.from_settings(settings)
    upgrade(services.engine)
    org, user = "bench-org", "bench-rad"
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        repo.update("Organization", org, {"resourceType": "Organization", "id": org, "name": "Bench hospital"})
        ensure_account(conn, user, "Bench", ["radiologist"], services.clock.now(), None, org,
                       password_hash=hash_password(PASSWORD))  # fmt: skip
    token = issue_token(services.token_keys, user, ["user/*.*"], 3600, SystemClock().now(), ["radiologist"],
                        organization=org)  # fmt: skip
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Server(create_app(services), port):
        url = f"http://127.0.0.1:{port}"
        client = DICOMwebClient(f"{url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
        datasets = series(args.slices)
        for i in range(0, len(datasets), 20):
            client.store_instances(datasets[i : i + 20])
        study = datasets[0].StudyInstanceUID
        target = f"{url}/portal/viewer/viewer?StudyInstanceUIDs={study}&lng=zh"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            login = browser.new_context()
            page = login.new_page()
            page.goto(f"{url}/portal/login")
            page.fill("#username", user)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/portal/")
            state = login.storage_state()
            login.close()

            def run(mbit: float | None, warm: bool = False) -> tuple[float, int, int]:
                context = browser.new_context(storage_state=state, viewport={"width": 1400, "height": 900})
                page = context.new_page()
                cdp = context.new_cdp_session(page)
                cdp.send("Network.enable")
                sizes: dict[str, int] = {}
                urls: dict[str, str] = {}
                cdp.on("Network.responseReceived", lambda e: urls.__setitem__(e["requestId"], e["response"]["url"]))
                cdp.on("Network.loadingFinished",
                       lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))  # fmt: skip
                if warm:
                    page.goto(target)
                    page.wait_for_function(DRAWN, timeout=120000)
                    page.goto("about:blank")
                    sizes.clear()
                if mbit:
                    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 30,
                             "downloadThroughput": mbit * 1e6 / 8, "uploadThroughput": mbit * 1e6 / 8})  # fmt: skip
                t0 = time.perf_counter()
                page.goto(target)
                page.wait_for_function(DRAWN, timeout=300000, polling=50)
                elapsed = time.perf_counter() - t0
                app_sent, app_disk = 0, 0
                for rid, n in sizes.items():
                    path = urls.get(rid, "").split("?")[0].split("/portal/viewer/", 1)
                    if len(path) == 2 and path[1] and (viewer.dist() / path[1]).is_file():
                        app_sent += n
                        app_disk += (viewer.dist() / path[1]).stat().st_size
                context.close()
                return elapsed, app_sent, app_disk

            run(None)  # warm-up: the server compresses and caches the bundles once per process
            print(f"CT series: {args.slices} slices of 512 x 512 (16-bit), {args.runs} runs each; median (min-max)")
            for label, mbit, warm in [("loopback, cold cache", None, False), ("loopback, warm cache", None, True),
                                      ("10 Mbit/s + 30 ms, cold cache", 10.0, False)]:  # fmt: skip
                results = [run(mbit, warm) for _ in range(args.runs)]
                times = [r[0] for r in results]
                print(f"  {label:32s} first image {statistics.median(times):6.2f} s "
                      f"({min(times):.2f}-{max(times):.2f})")  # fmt: skip
                if not warm:
                    sent, disk = results[-1][1], results[-1][2]
                    print(f"  {'':32s} viewer files received {sent / 1e6:6.2f} MB (on disk {disk / 1e6:.2f} MB)")
            browser.close()


if __name__ == "__main__":
    main()
