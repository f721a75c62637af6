"""A small world for report tests: an institution, its expert (Practitioner + account), a patient
and a finished DiagnosticReport, written through the real store on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import date

import pytest

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import ensure_account
from telemed.reports import (
    Opinion,
    PatientInfo,
    ReportDocument,
    RequestInfo,
    SignedReport,
    SignerInfo,
    issue_signed_report,
)
from tests.conftest import unique

PATIENT_NAME = "王秀英"
PATIENT_MRN = "ZY2026-004512"
EXPERT_NAME = "李明华"
EXPERT_TITLE = "主任医师"
IMPRESSION = "冠状动脉粥样硬化性心脏病，不稳定型心绞痛"
BASE_URL = "https://telemed.example.cn"


@dataclass
class Clinic:
    org: str
    practitioner: str
    username: str
    patient: str
    report: dict

    def context(self) -> AccessContext:
        return AccessContext(user=self.username, organization=self.org, practitioner=self.practitioner)


def document(**changes) -> ReportDocument:
    doc = ReportDocument(
        institution="河南省远程医学中心",
        title="远程会诊报告",
        patient=PatientInfo(name=PATIENT_NAME, gender="female", age=58, identifier=PATIENT_MRN),
        request=RequestInfo(
            question="患者反复胸闷气短2月，加重3天，请协助明确诊断。",
            institution="兰考县人民医院",
            doctor="刘建国",
            requested=date(2026, 3, 2),
        ),
        opinion=Opinion(
            impression=IMPRESSION,
            recommendations="建议尽早行冠状动脉造影检查。",
            follow_up="1个月后心内科门诊复诊。",
        ),
        signers=(SignerInfo(EXPERT_NAME, EXPERT_TITLE, "河南省人民医院 心血管内科"),),
    )
    return ReportDocument(**{**doc.__dict__, **changes})


def make_clinic(services) -> Clinic:
    u = unique("rep")
    org, practitioner, username = f"{u}-org", f"{u}-doc", f"{u}-expert"
    now = services.clock.now()
    with unit_of_work(services.engine) as conn:
        system = services.repository(conn, AccessContext.system())
        system.update("Organization", org, {"resourceType": "Organization", "id": org, "name": "河南省人民医院"})
        system.update(
            "Practitioner",
            practitioner,
            {"resourceType": "Practitioner", "id": practitioner, "name": [{"text": EXPERT_NAME}]},
        )
        ensure_account(conn, username, EXPERT_NAME, ["expert"], now, practitioner_id=practitioner, organization_id=org)
    clinic = Clinic(org, practitioner, username, "", {})
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, clinic.context())
        clinic.patient = repo.create(
            "Patient",
            {
                "resourceType": "Patient",
                "name": [{"text": PATIENT_NAME}],
                "gender": "female",
                "identifier": [{"system": "urn:telemed:mrn", "value": PATIENT_MRN}],
                "managingOrganization": {"reference": f"Organization/{org}"},
            },
        ).resource["id"]
        clinic.report = repo.create(
            "DiagnosticReport",
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}], "text": "会诊报告"},
                "subject": {"reference": f"Patient/{clinic.patient}"},
                "performer": [{"reference": f"Practitioner/{practitioner}"}],
                "conclusion": IMPRESSION,
            },
        ).resource
    return clinic


@pytest.fixture
def clinic(services) -> Clinic:
    return make_clinic(services)


def issue(services, clinic: Clinic, report: dict | None = None, **kwargs) -> SignedReport:
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, clinic.context())
        return issue_signed_report(
            repo,
            services.signer,
            report=report or clinic.report,
            document=kwargs.pop("document", document()),
            author_practitioner=clinic.practitioner,
            username=clinic.username,
            now=services.clock.now(),
            base_url=BASE_URL,
            **kwargs,
        )


def amend(services, clinic: Clinic, conclusion: str) -> dict:
    """Store a corrected version of the clinic's report and return it."""
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, clinic.context())
        current = repo.read("DiagnosticReport", clinic.report["id"]).resource
        clinic.report = repo.update(
            "DiagnosticReport", current["id"], {**current, "status": "amended", "conclusion": conclusion}
        ).resource
    return clinic.report


def pdf_text(pdf: bytes) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (Debian poppler-utils) is not installed: `make system-deps`")
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True, check=True)
    return out.stdout.decode()


def pdf_fonts(pdf: bytes, tmp_path) -> str:
    if shutil.which("pdffonts") is None:
        pytest.skip("pdffonts (Debian poppler-utils) is not installed: `make system-deps`")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, text=True).stdout
