"""The diagnostic viewer: OHIF Viewer's prebuilt ``dist/`` (npm ``@ohif/app``) served under ``/portal/viewer/``.

OHIF is built to live at ``/``; it is served here unchanged except for what names that root:

- ``index.html`` gets ``/portal/viewer/`` in its links, its two inline scripts move to ``boot.js`` (the
  viewer's CSP allows no inline script) and the service worker is left out (it would cache patient images);
- the bundles that set webpack's public path (``__webpack_require__.p = "/"``) get ``/portal/viewer/``;
- scripts, styles and WebAssembly are sent gzip-compressed (compressed once per process, kept in memory);
- ``app-config.js`` is ours: one DICOMweb data source, ``/portal/dicomweb`` (the same routes and access
  rules as ``/dicomweb``, reached by the portal's session cookie), no study list of OHIF's own (the portal
  has one), no other data sources.

Everything else is sent as installed (``make deps``); nothing comes from a CDN. Under the viewer's path
an unknown name is one of OHIF's client-side routes (``/portal/viewer/viewer?StudyInstanceUIDs=…``) and
gets ``index.html``, for signed-in users only.
"""

from __future__ import annotations

import gzip
import mimetypes
import os
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from telemed.kernel.errors import Category, TelemedError
from telemed.portal.session import current_user

router = APIRouter()
BASE = "/portal/viewer/"
PUBLIC_PATH_JS = b'__webpack_require__.p = "/";'
# OHIF decodes images in web workers with WebAssembly codecs; React sets style attributes; workers
# and some codecs are started from blob: URLs. Nothing leaves the origin.
VIEWER_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "worker-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self' data: blob:",
        "media-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ]
)
HEADERS = {"Content-Security-Policy": VIEWER_CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
STATIC_HEADERS = {**HEADERS, "Cache-Control": "public, max-age=86400"}
mimetypes.add_type("application/wasm", ".wasm")
COMPRESSIBLE = {".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm", ".json": "application/json",
                ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8"}  # fmt: skip

BOOT_JS = f"""// Telemed: OHIF's inline start-up scripts, moved here for the Content-Security-Policy.
function browserImportFunction(n) {{ return import(n); }}
window.PUBLIC_URL = "{BASE}";
"""

APP_CONFIG_JS = """// Telemed: OHIF Viewer configuration (served by telemed.portal.imaging.viewer).
window.config = {
  name: "telemed",
  routerBasename: "/portal/viewer",
  extensions: [],
  modes: [],
  // No onboarding tour over the first image a radiologist opens.
  customizationService: { "ohif.tours": { $set: [] } },
  showStudyList: false,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: "never" },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: "dev",
  defaultDataSourceName: "telemed",
  dataSources: [
    {
      namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
      sourceName: "telemed",
      configuration: {
        friendlyName: "Telemed",
        name: "telemed",
        wadoUriRoot: window.location.origin + "/portal/dicomweb",
        qidoRoot: window.location.origin + "/portal/dicomweb",
        wadoRoot: window.location.origin + "/portal/dicomweb",
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: "wadors",
        thumbnailRendering: "wadors",
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: "bulkdata,video",
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true }
      }
    }
  ]
};
"""


def node_modules() -> Path:
    """``TELEMED_NODE_MODULES``, else the checkout's ``node_modules`` (``make deps`` installs it)."""
    configured = os.environ.get("TELEMED_NODE_MODULES")
    if configured:
        return Path(configured)
    for base in (Path(__file__).resolve().parents[4], Path.cwd()):
        if (base / "node_modules").is_dir():
            return base / "node_modules"
    return Path.cwd() / "node_modules"


def dist() -> Path:
    return node_modules() / "@ohif" / "app" / "dist"


def installed() -> bool:
    return (dist() / "index.html").is_file()


@lru_cache(maxsize=1)
def _index_html(folder: str) -> bytes:
    html = (Path(folder) / "index.html").read_text(encoding="utf-8")
    html = re.sub(r"<script>[^<]*</script>", "", html)  # the inline scripts: boot.js instead
    html = re.sub(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>', "", html)
    html = html.replace('<link rel="manifest" href="/manifest.json">', "")
    html = re.sub(r'(href|src)="/(?!/)', rf'\1="{BASE}', html)
    boot = f'<script src="{BASE}boot.js"></script>'
    html = html.replace(f'<script rel="preload" as="script" src="{BASE}app-config.js"></script>',
                        f'<script src="{BASE}app-config.js"></script>{boot}')  # fmt: skip
    if boot not in html:
        raise RuntimeError("OHIF's index.html has changed: check telemed.portal.imaging.viewer")
    return html.encode()


def _patched(data: bytes) -> bytes:
    """The bundle with the viewer's public path (unchanged when it does not set one)."""
    return data.replace(PUBLIC_PATH_JS, f'__webpack_require__.p = "{BASE}";'.encode())


@lru_cache(maxsize=64)
def _body(path: str, mtime: float, gzipped: bool) -> bytes:
    """A file as sent: bundles patched, and gzip-compressed once per process when the browser takes
    it (the main bundle is 17 MB, 3.4 MB compressed: seconds saved on a county hospital's link)."""
    data = Path(path).read_bytes()
    if path.endswith(".js"):
        data = _patched(data)
    return gzip.compress(data, 6) if gzipped else data


def _file(name: str) -> Path | None:
    root = dist().resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def _index(request: Request) -> Response:
    current_user(request)  # the viewer is for signed-in users (a login redirect otherwise)
    if not installed():
        raise TelemedError(Category.UNAVAILABLE, "The image viewer is not installed (make deps)")
    body = _index_html(str(dist()))
    return Response(body, media_type="text/html; charset=utf-8", headers={**HEADERS, "Cache-Control": "no-store"})


@router.get("/portal/viewer")
def viewer_root(request: Request) -> Response:
    return _index(request)


@router.get("/portal/viewer/{name:path}")
def viewer_file(request: Request, name: str) -> Response:
    if name == "app-config.js":
        return Response(APP_CONFIG_JS, media_type="text/javascript", headers={**HEADERS, "Cache-Control": "no-cache"})
    if name == "boot.js":
        return Response(BOOT_JS, media_type="text/javascript", headers={**HEADERS, "Cache-Control": "no-cache"})
    if name in ("", "index.html", "sw.js", "init-service-worker.js", "manifest.json"):
        return _index(request)
    path = _file(name) if installed() else None
    if path is None:
        if "." in name.rsplit("/", 1)[-1]:  # a file OHIF asks for that is not there
            raise TelemedError(Category.NOT_FOUND, "No such file")
        return _index(request)  # one of OHIF's routes
    if path.suffix not in COMPRESSIBLE:
        return FileResponse(path, headers=STATIC_HEADERS)
    gzipped = "gzip" in request.headers.get("accept-encoding", "")
    headers = {**STATIC_HEADERS, "Vary": "Accept-Encoding", **({"Content-Encoding": "gzip"} if gzipped else {})}
    media = COMPRESSIBLE[path.suffix]
    return Response(_body(str(path), path.stat().st_mtime, gzipped), media_type=media, headers=headers)
