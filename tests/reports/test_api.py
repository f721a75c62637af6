"""The public verification endpoints over real HTTP (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import select, update

from telemed.db.engine import unit_of_work
from telemed.db.schema import audit_event
from telemed.db.schema import resource_history as t_history
from telemed.reports import SignedReport
from tests.conftest import unique
from tests.reports.conftest import (
    EXPERT_NAME,
    EXPERT_TITLE,
    PATIENT_MRN,
    PATIENT_NAME,
    Clinic,
    amend,
    issue,
    make_clinic,
)


@pytest.fixture(scope="module")
def issued(services) -> tuple[Clinic, SignedReport]:
    clinic = make_clinic(services)
    return clinic, issue(services, clinic)


def test_page_says_authentic_and_shows_no_patient_identity(server, issued):
    clinic, signed = issued
    doc_id = signed.document_reference["id"]
    r = httpx.get(f"{server.url}/verify/{doc_id}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert 'data-result="authentic"' in page
    assert "真实有效" in page and "Authentic" in page  # Chinese first, English below
    assert page.index("真实有效") < page.index("Authentic")
    for shown in (EXPERT_NAME, EXPERT_TITLE, "河南省远程医学中心", "远程会诊报告", signed.document.signers[0].key_id):
        assert shown in page, shown
    assert hashlib.sha256(signed.pdf).hexdigest() in page
    for hidden in (PATIENT_NAME, PATIENT_MRN, clinic.patient, clinic.report["id"]):
        assert hidden not in page, hidden
    assert r.headers["x-robots-tag"].startswith("noindex") and r.headers["cache-control"] == "no-store"

    english = httpx.get(f"{server.url}/verify/{doc_id}", params={"lang": "en"}).text
    assert "Authentic" in english and "真实有效" not in english and 'lang="en"' in english


def test_json(server, issued):
    _, signed = issued
    doc_id = signed.document_reference["id"]
    body = httpx.get(f"{server.url}/verify/{doc_id}.json").json()
    assert body["authentic"] is True and body["status"] == "current" and body["problems"] == []
    assert body["signers"] == [
        {
            "name": EXPERT_NAME,
            "title": EXPERT_TITLE,
            "institution": "河南省人民医院 心血管内科",
            "signedAt": signed.document.signers[0].signed_at.isoformat().replace("+00:00", "Z"),
            "keyId": signed.document.signers[0].key_id,
        }
    ]
    assert body["size"] == len(signed.pdf)
    assert PATIENT_NAME not in str(body) and "patient" not in str(body).lower()


def test_uploaded_pdf_matches_or_not(server, issued):
    _, signed = issued
    url = f"{server.url}/verify/{signed.document_reference['id']}"
    same = httpx.post(url, files={"file": ("report.pdf", signed.pdf, "application/pdf")})
    assert same.status_code == 200 and 'data-result="file-matches"' in same.text
    middle = len(signed.pdf) // 2
    tampered = signed.pdf[:middle] + bytes([signed.pdf[middle] ^ 1]) + signed.pdf[middle + 1 :]
    differs = httpx.post(url, params={"lang": "en"}, files={"file": ("report.pdf", tampered, "application/pdf")})
    assert 'data-result="file-differs"' in differs.text and "does not match" in differs.text
    assert 'data-result="authentic"' in differs.text  # the issued report itself is still authentic


def test_unknown_document_is_a_404_page(server):
    r = httpx.get(f"{server.url}/verify/{unique('nope')}")
    assert r.status_code == 404 and 'data-result="not-found"' in r.text and "未找到该报告" in r.text
    assert httpx.get(f"{server.url}/verify/{unique('nope')}.json").status_code == 404
    upload = httpx.post(
        f"{server.url}/verify/{unique('nope')}", files={"file": ("x.pdf", b"%PDF-1.7", "application/pdf")}
    )
    assert upload.status_code == 404


def test_a_document_that_is_not_a_signed_report_is_unknown(server, services, issued):
    clinic, _ = issued
    with unit_of_work(services.engine) as conn:
        plain = (
            services.repository(conn, clinic.context())
            .create(
                "DocumentReference",
                {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "subject": {"reference": f"Patient/{clinic.patient}"},
                    "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
                },
            )
            .resource
        )
    assert httpx.get(f"{server.url}/verify/{plain['id']}").status_code == 404


def test_signing_keys(server, issued):
    _, signed = issued
    r = httpx.get(f"{server.url}/api/signing-keys")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/jwk-set+json")
    keys = {k["kid"]: k for k in r.json()["keys"]}
    assert keys[signed.document.signers[0].key_id]["kty"] == "OKP"


def test_superseded_document_points_to_its_amendment(server, services):
    clinic = make_clinic(services)
    first = issue(services, clinic)
    amend(services, clinic, "更正后的结论")
    second = issue(services, clinic, amendment_reason="更正结论")
    page = httpx.get(f"{server.url}/verify/{first.document_reference['id']}").text
    assert 'data-result="superseded"' in page and f"/verify/{second.document_reference['id']}" in page
    assert httpx.get(f"{server.url}/verify/{second.document_reference['id']}.json").json()["status"] == "current"


def test_altered_report_or_pdf_in_the_database_is_not_authentic(server, services):
    clinic = make_clinic(services)
    signed = issue(services, clinic)
    # Someone with database access edits the signed report version behind the store's back.
    with unit_of_work(services.engine) as conn:
        where = (
            t_history.c.resource_type == "DiagnosticReport",
            t_history.c.id == clinic.report["id"],
            t_history.c.version_id == 1,
        )
        content = conn.execute(select(t_history.c.content).where(*where)).scalar_one()
        conn.execute(update(t_history).where(*where).values(content={**content, "conclusion": "未见异常"}))
    body = httpx.get(f"{server.url}/verify/{signed.document_reference['id']}.json").json()
    assert body["authentic"] is False and body["problems"] == ["signature-invalid"]
    page = httpx.get(f"{server.url}/verify/{signed.document_reference['id']}").text
    assert 'data-result="not-authentic"' in page


def test_checks_are_audited(server, services, issued):
    clinic, signed = issued
    doc_id = signed.document_reference["id"]
    httpx.get(f"{server.url}/verify/{doc_id}")
    with unit_of_work(services.engine, write=False) as conn:
        rows = conn.execute(
            select(audit_event).where(
                audit_event.c.interaction == "operation:verify-report", audit_event.c.patient == clinic.patient
            )
        ).all()
    assert rows and all(r.username == "anonymous" for r in rows)
    assert rows[-1].content["agent"][0]["network"]["address"] == "127.0.0.1"
