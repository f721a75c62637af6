"""Public report verification: ``/verify/{id}`` (page, JSON, file check) and ``/api/signing-keys``.

No login: whoever holds a paper copy scans its QR code. The pages therefore show no patient
identity, are not indexed by search engines, and every check is written to the audit trail with
the caller's address, like any other access to a patient's records.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import APIRouter, File, Request, UploadFile
from sqlalchemy import Connection, Engine
from starlette.responses import HTMLResponse, JSONResponse

from telemed.db.engine import unit_of_work
from telemed.fhir.store import audit
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.clock import Clock
from telemed.kernel.errors import Category, TelemedError
from telemed.reports.labels import LOCALES, labels, local_time
from telemed.reports.pdf import environment
from telemed.reports.signing import Signer
from telemed.reports.verify import DocumentVerification, FileCheck, check_file, verify_document

MAX_UPLOAD = 20 * 1024 * 1024
# Who the audit trail names for these requests: nobody logged in.
PUBLIC = AccessContext(user="anonymous", scopes=frozenset(), roles=frozenset({"public"}), clinical="none")
HEADERS = {
    "Cache-Control": "no-store",  # the status changes when the report is amended
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'",
}

router = APIRouter(tags=["report verification"])


class ReportServices(Protocol):
    """What these routes need from the application's services."""

    engine: Engine
    clock: Clock
    signer: Signer

    def repository(self, conn: Connection, context: AccessContext) -> Repository: ...


def _services(request: Request) -> ReportServices:
    return request.app.state.services


def _langs(lang: str | None) -> list[str]:
    """Both languages, Chinese first, unless one is asked for."""
    if lang and lang.lower().startswith("en"):
        return ["en"]
    if lang and lang.lower().startswith("zh"):
        return ["zh-CN"]
    return list(LOCALES)


def _verify(
    request: Request, doc_id: str, upload: bytes | None = None
) -> tuple[DocumentVerification | None, FileCheck | None]:
    """Verification (and file check), audited in the same transaction; None for an unknown id."""
    services = _services(request)
    address = request.client.host if request.client else None
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        try:
            result = verify_document(repo, services.signer, doc_id)
            check = check_file(repo, doc_id, upload) if upload is not None else None
        except TelemedError as exc:
            if exc.category is not Category.NOT_FOUND:
                raise
            result, check = None, None
        audit.record(
            conn,
            PUBLIC,
            audit.AuditRecord(
                interaction="operation:verify-report",
                outcome="0" if result is not None else "4",
                entity=f"DocumentReference/{doc_id}" if result is not None else "DocumentReference",
                patient=result.patient_id if result is not None else None,
                address=address,
                description=None if check is None else f"file check: {'match' if check.matches else 'differs'}",
            ),
            services.clock,
        )
    return result, check


def _page(
    request: Request, doc_id: str, result: DocumentVerification | None, check: FileCheck | None, lang: str | None
) -> HTMLResponse:
    langs = _langs(lang)
    html = (
        environment()
        .get_template("verify.html")
        .render(
            v=result,
            check=check,
            doc_id=doc_id,
            langs=[(code, labels(code)) for code in langs],
            lang=lang if len(langs) == 1 else None,
            local_time=local_time,
            action=str(request.url.path) + (f"?lang={langs[0]}" if len(langs) == 1 else ""),
        )
    )
    return HTMLResponse(html, 200 if result is not None else 404, headers=HEADERS)


@router.get("/api/signing-keys", summary="Public keys of report signatures (JWK Set, RFC 7517)")
def signing_keys(request: Request) -> JSONResponse:
    services = _services(request)
    with unit_of_work(services.engine, write=False) as conn:
        jwks = services.signer.jwks(conn)
    return JSONResponse(jwks, media_type="application/jwk-set+json", headers={"Cache-Control": "public, max-age=300"})


# Declared before /verify/{doc_id}, which would otherwise take "abc.json" as the id.
@router.get("/verify/{doc_id}.json", summary="Verify an issued report (JSON)")
def verification_json(request: Request, doc_id: str) -> JSONResponse:
    result, _ = _verify(request, doc_id)
    if result is None:
        raise TelemedError(Category.NOT_FOUND, f"No issued report {doc_id!r}")
    return JSONResponse(result.as_json(), headers=HEADERS)


@router.get("/verify/{doc_id}", response_class=HTMLResponse, summary="Verify an issued report")
def verification_page(request: Request, doc_id: str, lang: str | None = None) -> HTMLResponse:
    result, _ = _verify(request, doc_id)
    return _page(request, doc_id, result, None, lang)


@router.post("/verify/{doc_id}", response_class=HTMLResponse, summary="Check a PDF against the issued report")
def verification_upload(
    request: Request, doc_id: str, file: Annotated[UploadFile, File()], lang: str | None = None
) -> HTMLResponse:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD + 64 * 1024:
        raise TelemedError(Category.TOO_LARGE, f"A report PDF is at most {MAX_UPLOAD // (1024 * 1024)} MiB")
    data = file.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise TelemedError(Category.TOO_LARGE, f"A report PDF is at most {MAX_UPLOAD // (1024 * 1024)} MiB")
    result, check = _verify(request, doc_id, data)
    return _page(request, doc_id, result, check, lang)
