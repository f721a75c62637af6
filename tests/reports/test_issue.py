"""issue_signed_report on the real store (SQLite and PostgreSQL): Provenance, DocumentReference, PDF."""

from __future__ import annotations

import base64
import hashlib

import pytest

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import Category, TelemedError
from telemed.reports import canonical_bytes, verify_document
from tests.reports.conftest import (
    BASE_URL,
    EXPERT_NAME,
    EXPERT_TITLE,
    IMPRESSION,
    PATIENT_NAME,
    amend,
    issue,
    make_clinic,
    pdf_text,
)


def test_issue_files_provenance_document_reference_and_pdf(services, clinic):
    signed = issue(services, clinic)
    report = clinic.report
    doc, prov = signed.document_reference, signed.provenance

    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, clinic.context())
        stored_doc = repo.read("DocumentReference", doc["id"]).resource
        stored_prov = repo.read("Provenance", prov["id"]).resource
        result = services.signer.verify(
            conn, base64.b64decode(stored_prov["signature"][0]["data"]).decode(), canonical_bytes(report)
        )
    assert result.valid and result.username == clinic.username

    assert stored_prov["target"] == [{"reference": f"DiagnosticReport/{report['id']}/_history/1"}]
    assert stored_prov["agent"][0]["who"] == {
        "reference": f"Practitioner/{clinic.practitioner}",
        "display": EXPERT_NAME,
    }
    assert stored_prov["signature"][0]["sigFormat"] == "application/jose"

    assert stored_doc["status"] == "current" and stored_doc["docStatus"] == "final"
    assert stored_doc["type"]["coding"][0]["code"] == "11488-4"
    assert stored_doc["subject"] == {"reference": f"Patient/{clinic.patient}"}
    assert stored_doc["authenticator"]["reference"] == f"Practitioner/{clinic.practitioner}"
    assert stored_doc["context"]["related"] == [
        {"reference": f"DiagnosticReport/{report['id']}/_history/1"},
        {"reference": f"Provenance/{prov['id']}"},
    ]
    attachment = stored_doc["content"][0]["attachment"]
    pdf = base64.b64decode(attachment["data"])  # moved to the blob store and back
    assert pdf == signed.pdf
    assert attachment["contentType"] == "application/pdf" and attachment["language"] == "zh-CN"
    assert attachment["size"] == len(pdf)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(pdf).digest()).decode()

    assert signed.document.verification_url == f"{BASE_URL}/verify/{doc['id']}"
    text = pdf_text(pdf)
    for expected in (PATIENT_NAME, IMPRESSION, EXPERT_NAME, EXPERT_TITLE, doc["id"]):
        assert expected in text, expected
    # The key id wraps in its column, and pdftotext takes a '-' at a break for a hyphenation.
    assert signed.document.signers[0].key_id.replace("-", "") in text.replace("-", "").replace("\n", "")


def test_amendment_supersedes_the_earlier_document(services, clinic):
    first = issue(services, clinic)
    amend(services, clinic, IMPRESSION + "；高血压病3级")
    second = issue(services, clinic, amendment_reason="补充诊断：高血压病3级")

    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, AccessContext.system())
        old = repo.read("DocumentReference", first.document_reference["id"]).resource
        new = repo.read("DocumentReference", second.document_reference["id"]).resource
        prov = repo.read("Provenance", second.provenance["id"]).resource
        assert verify_document(repo, services.signer, new["id"]).authentic
        old_check = verify_document(repo, services.signer, old["id"])
    assert old["status"] == "superseded"
    assert new["status"] == "current" and new["docStatus"] == "amended"
    assert new["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{old['id']}"}}]
    assert prov["activity"]["coding"][0]["code"] == "amend"
    assert prov["reason"] == [{"text": "补充诊断：高血压病3级"}]
    assert prov["target"][0]["reference"].endswith("/_history/2")
    assert prov["entity"][0]["what"]["reference"].endswith("/_history/1")
    # The old version's signature stays valid; it is just no longer the current document.
    assert old_check.authentic and old_check.status == "superseded" and old_check.replaced_by == new["id"]
    assert "补充诊断：高血压病3级" in pdf_text(second.pdf)


def test_refusals(services):
    clinic = make_clinic(services)
    issue(services, clinic)
    with pytest.raises(TelemedError) as again:
        issue(services, clinic, amendment_reason="nothing changed")
    assert again.value.category is Category.CONFLICT  # this version is already signed
    amend(services, clinic, "更正")
    with pytest.raises(TelemedError) as no_reason:
        issue(services, clinic)
    assert no_reason.value.category is Category.CONFLICT

    other = make_clinic(services)
    stale = dict(other.report)
    amend(services, other, "新结论")
    with pytest.raises(TelemedError) as changed:
        issue(services, other, report=stale)
    assert changed.value.category is Category.CONFLICT
    with pytest.raises(TelemedError) as edited:
        issue(services, other, report={**other.report, "conclusion": "未保存的结论"})
    assert edited.value.category is Category.CONFLICT

    draft = make_clinic(services)
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, draft.context())
        draft.report = repo.update(
            "DiagnosticReport", draft.report["id"], {**draft.report, "status": "preliminary"}
        ).resource
    with pytest.raises(TelemedError) as preliminary:
        issue(services, draft)
    assert preliminary.value.category is Category.UNPROCESSABLE

    impostor = make_clinic(services)
    impostor.practitioner = other.practitioner  # signing as someone else's Practitioner
    with pytest.raises(TelemedError) as forbidden:
        issue(services, impostor)
    assert forbidden.value.category is Category.FORBIDDEN


def test_nothing_is_written_when_the_unit_of_work_fails(services, clinic):
    with pytest.raises(RuntimeError), unit_of_work(services.engine) as conn:
        from telemed.reports import issue_signed_report
        from tests.reports.conftest import document

        repo = services.repository(conn, clinic.context())
        signed = issue_signed_report(
            repo,
            services.signer,
            report=clinic.report,
            document=document(),
            author_practitioner=clinic.practitioner,
            username=clinic.username,
            now=services.clock.now(),
            base_url=BASE_URL,
        )
        raise RuntimeError("the workflow step failed after signing")
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, AccessContext.system())
        assert not repo.exists("DocumentReference", signed.document_reference["id"])
        assert not repo.exists("Provenance", signed.provenance["id"])
