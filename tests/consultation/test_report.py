"""Signing opinions and the signed consultation report (PDF, Provenance, verification), SLA
escalation and notifications, on both databases."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import timedelta

import pytest

from telemed.consultation import escalation, notifications, report, service
from telemed.consultation import workflow as wf
from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import TelemedError
from telemed.reports import check_file, verify_document
from tests.consultation.network import build, env
from tests.consultation.test_service import details, read, run


@pytest.fixture
def net(services):
    return build(services)


def _sign(services, ctx, cid):
    with unit_of_work(services.engine) as conn:
        return services.sign_opinion(services.repository(conn, ctx), env(services), ctx, cid)


def _to_opinions(services, net, kind=wf.MDT, experts=2):
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net, kind=kind)).consultation.id
    run(services, r, service.act, cid, "submit")
    run(services, net.ctx("qc"), service.act, cid, "accept")
    run(services, net.ctx("triage"), service.act, cid, "assign", experts=tuple(net.experts[:experts]))
    return cid


def pdf_text(pdf: bytes, tmp_path) -> str:
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (poppler-utils) is not installed")
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_mdt_report_is_signed_by_both_experts_and_verifiable(services, net, tmp_path):
    cid = _to_opinions(services, net)
    e1, e2 = net.ctx("e1"), net.ctx("e2")
    run(
        services, e1, service.save_opinion, cid, {"impression": "考虑不稳定型心绞痛", "recommendations": "建议冠脉造影"}
    )
    run(services, e2, service.save_opinion, cid, {"impression": "同意上述意见", "follow-up": "两周后复诊"})
    assert _sign(services, e1, cid).consultation.state == wf.OPINION_DRAFTED
    done = _sign(services, e2, cid)
    assert done.consultation.state == wf.CONCLUDED
    with unit_of_work(services.engine, write=False) as conn:
        docs = report.report_documents(services.repository(conn, net.ctx("requester")), cid)
    assert len(docs) == 1 and docs[0]["status"] == "current"
    pdf = base64.b64decode(docs[0]["content"][0]["attachment"]["data"])
    text = pdf_text(pdf, tmp_path)
    for expected in (
        "远程会诊报告",
        "张伟",
        "不稳定型心绞痛",
        "两周后复诊",
        "李主任",
        "赵主任",
        "主任医师",
        "/verify/",
    ):
        assert expected in text, expected
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, AccessContext.system())
        v = verify_document(repo, services.signer, docs[0]["id"])
        assert v.authentic, v.problems
        assert check_file(repo, docs[0]["id"], pdf).matches
        assert not check_file(repo, docs[0]["id"], pdf + b"x").matches
    # Each opinion has its own signature too.
    comp = read(services, e1, "Composition", f"{cid}-{net.experts[0]}")
    assert comp["status"] == "final"


def test_amendment_supersedes_the_report(services, net):
    cid = _to_opinions(services, net, kind=wf.ROUTINE, experts=1)
    e1 = net.ctx("e1")
    run(services, e1, service.save_opinion, cid, {"impression": "良性结节"})
    _sign(services, e1, cid)
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, e1)
        report.amend_opinion(repo, env(services), e1, cid, {"impression": "良性结节，建议半年复查"}, "补充复查建议",
                             signer=services.signer, base_url="http://x")  # fmt: skip
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        docs = report.report_documents(repo, cid)
        loaded = service.load(repo, cid)
    assert len(docs) == 1 and docs[0]["docStatus"] == "amended"
    assert loaded.consultation.signed_versions == 2


def test_signing_someone_elses_consultation_is_refused(services, net):
    cid = _to_opinions(services, net, kind=wf.ROUTINE, experts=1)
    with pytest.raises(TelemedError):
        _sign(services, net.ctx("e2"), cid)


def test_overdue_consultations_are_escalated_once(services, net):
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net, kind=wf.URGENT)).consultation.id
    run(services, r, service.act, cid, "submit")
    heard = []
    later = services.clock.now() + timedelta(minutes=11)
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        assert cid in escalation.escalate_overdue(repo, later, lambda _r, notices: heard.extend(notices))
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        assert cid not in escalation.escalate_overdue(repo, later, lambda _r, notices: heard.extend(notices))
    assert [(n.kind, n.role, n.organization) for n in heard if n.consultation == cid] == [
        ("overdue", "triage-officer", net.centre)
    ]


def test_notices_become_outbox_notifications(services, net):
    cid = _to_opinions(services, net, kind=wf.ROUTINE, experts=1)
    loaded = run(services, net.ctx("triage"), service.act, cid, "schedule", start=services.clock.now())
    assert {p for n in loaded.notices for p in n.practitioners} == {net.experts[0], net.requester}
    with unit_of_work(services.engine) as conn:
        queued = notifications.enqueue(services.repository(conn, AccessContext.system()), services.outbox,
                                       loaded.notices, "https://telemed.example.cn")  # fmt: skip
    assert queued == 2  # both have an email address; the centre desk has none in this network
