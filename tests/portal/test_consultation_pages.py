"""Consultation pages over HTTP: what a user sees on bad input and conflicts, in their language."""

from __future__ import annotations

from sqlalchemy import update

from telemed.consultation import service
from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity import ensure_account
from telemed.identity.passwords import hash_password
from tests.consultation.network import build
from tests.consultation.test_service import details, run
from tests.identity.test_authentication import PASSWORD
from tests.portal.conftest import browser_client, csrf_of, sign_in


def _session(services, server, username, roles=None, org=None, lang=None):
    with unit_of_work(services.engine) as conn:
        if roles:
            ensure_account(conn, username, username, roles, services.clock.now(), None, org)
        conn.execute(
            update(account).where(account.c.username == username).values(password_hash=hash_password(PASSWORD))
        )
    client = browser_client(server.url)
    if lang:
        client.get(f"/portal/lang/{lang}")
    sign_in(client, username)
    return client, csrf_of(client.get("/portal/consultations"))


FORM = {"kind": "routine", "specialty": "394579002", "requested_time": "2026-12-01T09:30", "summary": "胸痛3天",
        "question": "是否需要造影？"}  # fmt: skip


def test_an_incomplete_request_lists_what_is_missing_in_the_users_language(services, server):
    net = build(services)
    for lang, expected in (("zh-CN", ["请填写会诊目的", "请记录患者知情同意"]),
                           ("en", ["State the purpose of the consultation", "Record the patient"])):  # fmt: skip
        client, token = _session(services, server, net.requester, lang=lang)
        form = {**FORM, "patient": net.patient, "csrf_token": token, "then_submit": "1", "idempotency_key": lang}
        created = client.post("/portal/consultations", data=form)
        assert created.status_code == 303 and created.headers["location"].endswith("?incomplete=1")
        page = client.get(created.headers["location"])
        for text in expected:
            assert text in page.text, (lang, text)


def test_double_submit_makes_one_request(services, server):
    net = build(services)
    client, token = _session(services, server, net.requester)
    form = {**FORM, "patient": net.patient, "purpose": "明确诊断", "consent": "1", "consent_witness": "护士",
            "csrf_token": token, "idempotency_key": "click-1"}  # fmt: skip
    first = client.post("/portal/consultations", data=form)
    second = client.post("/portal/consultations", data=form)
    assert first.headers["location"] == second.headers["location"]


def test_illegal_steps_and_stale_pages_are_refused_with_the_reason(services, server):
    net = build(services)
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net)).consultation.id
    run(services, r, service.act, cid, "submit")
    version = run(services, net.ctx("qc"), service.act, cid, "accept").version
    triage, token = _session(services, server, f"tr-{net.centre}", ["triage-officer"], net.centre)
    step = {"event": "assign", "experts": net.experts[0], "version": str(version), "csrf_token": token}
    assert triage.post(f"/portal/consultations/{cid}/act", data=step).status_code == 303
    stale = triage.post(f"/portal/consultations/{cid}/act", data={**step, "experts": net.experts[1]})
    assert stale.status_code == 409 and "该会诊已被他人修改" in stale.text
    doctor, token = _session(services, server, net.requester)
    wrong = doctor.post(f"/portal/consultations/{cid}/act", data={"event": "accept", "csrf_token": token})
    assert wrong.status_code == 403
    again = doctor.post(f"/portal/consultations/{cid}/act", data={"event": "submit", "csrf_token": token})
    assert again.status_code == 409


def test_a_bad_file_is_refused_with_a_message_and_nothing_is_stored(services, server):
    net = build(services)
    cid = run(services, net.ctx("requester"), service.create, details(net)).consultation.id
    client, token = _session(services, server, net.requester)
    bad = client.post(f"/portal/consultations/{cid}/attachments", data={"csrf_token": token},
                      files={"file": ("virus.exe", b"MZ\x90\x00", "application/x-msdownload")})  # fmt: skip
    assert bad.status_code == 415 and "不支持该文件类型" in bad.text
    fake = client.post(f"/portal/consultations/{cid}/attachments", data={"csrf_token": token},
                       files={"file": ("report.pdf", b"not a pdf", "application/pdf")})  # fmt: skip
    assert fake.status_code == 415 and "不是有效的 PDF" in fake.text
    with unit_of_work(services.engine, write=False) as conn:
        assert service.load(services.repository(conn, net.ctx("requester")), cid).request.resource.get(
            "supportingInfo", []) == [{"reference": f"Consent/{cid}"}]  # fmt: skip


def test_a_supervisor_sees_the_numbers_but_no_patient(services, server):
    net = build(services)
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net)).consultation.id
    run(services, r, service.act, cid, "submit")
    sup, _ = _session(services, server, f"sup-{net.centre}", ["supervisor"], net.province)
    stats = sup.get("/portal/statistics")
    assert stats.status_code == 200 and "待质控" in stats.text
    assert "张伟" not in stats.text
    assert sup.get(f"/portal/consultations/{cid}").status_code == 404
    assert sup.get("/portal/board").status_code == 403


def test_opening_a_case_and_acting_on_it_are_in_the_audit_trail(services, server):
    from sqlalchemy import select

    from telemed.db.schema import audit_event

    net = build(services)
    r = net.ctx("requester")
    loaded = run(services, r, service.create, details(net))
    cid = loaded.consultation.id
    run(services, r, service.act, cid, "submit")
    qc, token = _session(services, server, f"qc-{net.centre}", ["qc-officer"], net.centre)
    assert qc.get(f"/portal/consultations/{cid}").status_code == 200
    assert qc.post(f"/portal/consultations/{cid}/act", data={"event": "accept", "csrf_token": token}).status_code == 303
    with unit_of_work(services.engine, write=False) as conn:
        rows = conn.execute(
            select(audit_event.c.interaction, audit_event.c.patient, audit_event.c.content)
            .where(audit_event.c.username == f"qc-{net.centre}")
            .order_by(audit_event.c.seq)
        ).all()
    page = [x for x in rows if x.interaction == "read" and x.content.get("outcomeDesc", "").endswith(cid)]
    step = [x for x in rows if x.interaction == "update" and x.content.get("outcomeDesc", "").endswith(f"{cid}/act")]
    assert page and page[0].patient == loaded.patient  # the auditor finds the view by patient
    assert step and step[0].patient == loaded.patient
    assert step[0].content["agent"][0]["network"]["address"]


def test_the_board_shows_the_top_of_each_column_and_counts_all(services, server, monkeypatch):
    from telemed.portal.consultation import board

    monkeypatch.setattr(board, "BOARD_TILES", 2)
    net = build(services)
    r = net.ctx("requester")
    cids = []
    for _ in range(3):
        cid = run(services, r, service.create, details(net)).consultation.id
        run(services, r, service.act, cid, "submit")
        cids.append(cid)
    triage, _ = _session(services, server, f"tb-{net.centre}", ["triage-officer"], net.centre)
    rows = triage.get("/portal/board/rows")
    assert rows.status_code == 200
    waiting = rows.text.split('id="col-waiting"')[1].split("</section>")[0]
    count = int(waiting.split('class="count">')[1].split("<")[0])
    assert count >= 3 and waiting.count('class="tile ') == 2  # the count is of all, two tiles shown
    assert f"还有 {count - 2} 条" in waiting
