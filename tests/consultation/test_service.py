"""Consultation use cases on the real store (SQLite and PostgreSQL): FHIR underneath, access,
conflicts, idempotency, completeness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telemed.consultation import availability, model, service
from telemed.consultation import workflow as wf
from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import Category, TelemedError
from tests.consultation.network import build, env

CONSENT = {"contentType": "application/pdf", "data": "JVBERi0xLjQK", "title": "知情同意书.pdf"}


def details(net, **kw) -> model.RequestDetails:
    base = dict(
        patient=net.patient, kind=wf.ROUTINE, purpose="明确胸痛原因", summary="男，68岁，反复胸痛3天",
        question="是否需要冠脉造影？", specialty="394579002",
        requested_time=datetime(2026, 11, 26, 9, 0, tzinfo=UTC), consent_attachment=CONSENT,
    )  # fmt: skip
    base.update(kw)
    return model.RequestDetails(**base)


def run(services, ctx, fn, *args, **kw):
    with unit_of_work(services.engine) as conn:
        return fn(services.repository(conn, ctx), env(services), ctx, *args, **kw)


def read(services, ctx, rt, id_):
    with unit_of_work(services.engine, write=False) as conn:
        return services.repository(conn, ctx).read(rt, id_).resource


@pytest.fixture
def net(services):
    return build(services)


def test_mdt_consultation_end_to_end_in_fhir(services, net):
    r, qc, tr = net.ctx("requester"), net.ctx("qc"), net.ctx("triage")
    e1, e2 = net.ctx("e1"), net.ctx("e2")
    c = run(services, r, service.create, details(net, kind=wf.MDT))
    cid = c.consultation.id
    assert c.consultation.state == wf.DRAFT and c.centre == net.centre
    run(services, r, service.act, cid, "submit")
    run(services, qc, service.act, cid, "return", reason="请补充心电图")
    run(services, r, service.act, cid, "submit")
    loaded = run(services, qc, service.act, cid, "accept")
    assert loaded.deadline is not None and loaded.submitted_at is not None
    run(services, tr, service.act, cid, "assign", experts=(net.experts[0], net.experts[1]))
    start = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    loaded = run(services, tr, service.act, cid, "schedule", start=start)
    assert loaded.consultation.room and loaded.consultation.state == wf.SCHEDULED
    run(services, e1, service.act, cid, "start-session")
    run(
        services, e1, service.save_opinion, cid, {"impression": "考虑不稳定型心绞痛", "recommendations": "建议冠脉造影"}
    )
    run(services, e1, service.act, cid, "sign")
    run(services, e2, service.save_opinion, cid, {"impression": "同意", "follow-up": "一周后复诊"})
    done = run(services, e2, service.act, cid, "sign")
    assert done.consultation.state == wf.CONCLUDED
    assert [n.kind for n in done.notices] == ["report-ready"]
    ack = run(services, r, service.acknowledge, cid, 5, "非常满意")
    assert ack.consultation.state == wf.ACKNOWLEDGED

    # FHIR underneath: another client can follow the consultation through the API alone.
    sr = read(services, r, "ServiceRequest", cid)
    assert sr["status"] == "completed" and sr["priority"] == "routine"
    assert {p["reference"] for p in sr["performer"]} == {f"Organization/{net.centre}",
                                                         *(f"Practitioner/{e}" for e in net.experts[:2])}  # fmt: skip
    task = read(services, r, "Task", cid)
    assert task["status"] == "completed" and task["businessStatus"]["coding"][0]["code"] == "acknowledged"
    assert read(services, r, "Appointment", cid)["start"].startswith("2026-11-26T10:00")
    enc = read(services, r, "Encounter", cid)
    assert enc["class"]["code"] == "VR" and enc["status"] == "finished"
    assert read(services, r, "Consent", cid)["status"] == "active"
    comp = read(services, r, "Composition", model.expert_task_id(cid, net.experts[0]))
    assert "不稳定型心绞痛" in comp["section"][0]["text"]["div"]
    with unit_of_work(services.engine, write=False) as conn:
        steps = service.timeline(services.repository(conn, r), cid)
    events = [s["event"] for s in steps]
    assert events[:4] == ["create", "submit", "return", "submit"] and events[-1] == "acknowledge"
    assert steps[2]["reason"] == "请补充心电图" and steps[2]["actor"] == qc.user


def test_unassigned_expert_and_other_institutions_cannot_open_it(services, net):
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net)).consultation.id
    run(services, r, service.act, cid, "submit")
    run(services, net.ctx("qc"), service.act, cid, "accept")
    run(services, net.ctx("triage"), service.act, cid, "assign", experts=(net.experts[0],))
    for who in ("e2", "outsider"):
        with pytest.raises(TelemedError) as exc:
            read(services, net.ctx(who), "ServiceRequest", cid)
        assert exc.value.category is Category.NOT_FOUND
        with pytest.raises(TelemedError) as exc:
            read(services, net.ctx(who), "Patient", net.patient)
        assert exc.value.category is Category.NOT_FOUND
    assert read(services, net.ctx("e1"), "Patient", net.patient)["id"] == net.patient
    # The assigned expert declines: the record closes to them again.
    run(services, net.ctx("e1"), service.act, cid, "decline", reason="出差")
    with pytest.raises(TelemedError):
        read(services, net.ctx("e1"), "Patient", net.patient)


def test_incomplete_request_lists_what_is_missing(services, net):
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net, purpose="", consent_attachment=None)).consultation.id
    with pytest.raises(TelemedError) as exc:
        run(services, r, service.act, cid, "submit")
    assert exc.value.category is Category.UNPROCESSABLE
    assert {i.expression for i in exc.value.issues} == {"purpose", "consent"}


def test_illegal_transition_is_a_conflict_with_the_reason(services, net):
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net)).consultation.id
    with pytest.raises(TelemedError) as exc:
        run(services, net.ctx("qc"), service.act, cid, "accept")
    assert exc.value.category is Category.NOT_FOUND  # a draft is the requester's own until submitted
    with pytest.raises(TelemedError) as exc:
        run(services, r, service.act, cid, "acknowledge")
    assert exc.value.category is Category.CONFLICT and "draft" in exc.value.message
    run(services, r, service.act, cid, "submit")
    with pytest.raises(TelemedError) as exc:
        run(services, net.ctx("triage"), service.act, cid, "accept")
    assert exc.value.category is Category.FORBIDDEN
    with pytest.raises(TelemedError) as exc:
        run(services, net.ctx("e1"), service.act, cid, "submit")
    assert exc.value.category is Category.NOT_FOUND  # an expert not on it does not even see it


def test_two_dispatchers_assigning_at_once_one_wins(services, net):
    r, tr = net.ctx("requester"), net.ctx("triage")
    cid = run(services, r, service.create, details(net)).consultation.id
    run(services, r, service.act, cid, "submit")
    version = run(services, net.ctx("qc"), service.act, cid, "accept").version
    run(services, tr, service.act, cid, "assign", experts=(net.experts[0],), expected_version=version)
    with pytest.raises(TelemedError) as exc:
        run(services, tr, service.act, cid, "assign", experts=(net.experts[1],), expected_version=version)
    assert exc.value.category is Category.CONFLICT and "someone else" in exc.value.message


def test_double_submit_with_the_same_idempotency_key_makes_one_request(services, net):
    r = net.ctx("requester")
    a = run(services, r, service.create, details(net), idempotency_key="form-123")
    b = run(services, r, service.create, details(net), idempotency_key="form-123")
    assert a.consultation.id == b.consultation.id and b.request.version_id == 1
    other = run(services, r, service.create, details(net), idempotency_key="form-124")
    assert other.consultation.id != a.consultation.id


def test_urgent_deadlines_follow_the_sla(services, net):
    r = net.ctx("requester")
    loaded = run(services, r, service.create, details(net, kind=wf.URGENT))
    loaded = run(services, r, service.act, loaded.consultation.id, "submit")
    assert loaded.deadline - loaded.submitted_at == timedelta(minutes=10)
    loaded = run(services, net.ctx("qc"), service.act, loaded.consultation.id, "accept")
    assert loaded.deadline - loaded.submitted_at == timedelta(minutes=60)
    assert read(services, r, "ServiceRequest", loaded.consultation.id)["priority"] == "urgent"


def test_messages_reach_the_participants(services, net):
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net)).consultation.id
    run(services, r, service.post_message, cid, "已上传心电图")
    with unit_of_work(services.engine, write=False) as conn:
        msgs = service.messages(services.repository(conn, r), cid)
    assert [m.resource["payload"][0]["contentString"] for m in msgs] == ["已上传心电图"]


def test_system_context_sees_everything(services, net):
    cid = run(services, net.ctx("requester"), service.create, details(net)).consultation.id
    assert read(services, AccessContext.system(), "Task", cid)["status"] == "draft"


def test_booking_an_experts_slot_and_refusing_a_double_booking(services, net):
    from telemed.consultation import availability

    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        day = services.clock.now() + timedelta(days=1)
        for res in availability.publish_week(net.experts[0], day, days=1):
            repo.update(res["resourceType"], res["id"], res)
    r, tr = net.ctx("requester"), net.ctx("triage")
    ids = []
    for _ in range(2):
        cid = run(services, r, service.create, details(net)).consultation.id
        run(services, r, service.act, cid, "submit")
        run(services, net.ctx("qc"), service.act, cid, "accept")
        run(services, tr, service.act, cid, "assign", experts=(net.experts[0],))
        ids.append(cid)
    with unit_of_work(services.engine, write=False) as conn:
        free = availability.free_slots(services.repository(conn, tr), [net.experts[0]], services.clock.now())
    slot = free[net.experts[0]][0]
    loaded = run(services, tr, service.act, ids[0], "schedule", slot=slot.id)
    assert loaded.consultation.scheduled_start == slot.start
    assert loaded.appointment.resource["slot"] == [{"reference": f"Slot/{slot.id}"}]
    with pytest.raises(TelemedError) as exc:
        run(services, tr, service.act, ids[1], "schedule", slot=slot.id)
    assert exc.value.category is Category.CONFLICT and "taken" in exc.value.message
    with unit_of_work(services.engine, write=False) as conn:
        after = availability.free_slots(services.repository(conn, tr), [net.experts[0]], services.clock.now())
    assert slot.id not in {f.id for f in after[net.experts[0]]}


def test_a_patients_schedule_stays_private_while_an_experts_is_directory_data(services, net):
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        mine = repo.create("Schedule", {"resourceType": "Schedule", "actor": [{"reference": f"Patient/{net.patient}"}]})
        expert = repo.create("Schedule", {"resourceType": "Schedule",
                                          "actor": [{"reference": f"Practitioner/{net.experts[0]}"}]})  # fmt: skip
    assert read(services, net.ctx("outsider"), "Schedule", expert.resource["id"])["id"]
    with pytest.raises(TelemedError) as exc:
        read(services, net.ctx("outsider"), "Schedule", mine.resource["id"])
    assert exc.value.category is Category.NOT_FOUND


def test_a_doctor_with_under_three_years_of_practice_cannot_be_the_consultant(services, net):
    junior = f"{net.experts[2]}-jr"
    licensed = (services.clock.now() - timedelta(days=400)).date().isoformat()
    with unit_of_work(services.engine) as conn:
        services.repository(conn, AccessContext.system()).update("Practitioner", junior, {
            "resourceType": "Practitioner", "id": junior, "name": [{"text": "刘医生"}],
            "qualification": [{"code": {"text": "住院医师"}, "period": {"start": licensed}}]})  # fmt: skip
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net)).consultation.id
    run(services, r, service.act, cid, "submit")
    run(services, net.ctx("qc"), service.act, cid, "accept")
    with pytest.raises(TelemedError) as exc:
        run(services, net.ctx("triage"), service.act, cid, "assign", experts=(junior,))
    assert exc.value.category is Category.UNPROCESSABLE and "3 years" in exc.value.message


def test_the_next_free_time_of_each_expert_is_found_today_or_later_in_the_week(services, net):
    now = services.clock.now()
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        for expert, offset in ((net.experts[0], 0), (net.experts[1], 3)):  # the second has no hours today
            for res in availability.publish_week(expert, now + timedelta(days=offset), days=4, hours=(0, 23)):
                repo.update(res["resourceType"], res["id"], res)
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("triage"))
        week = availability.free_slots(repo, net.experts[:2], now)
        first = availability.first_free_slots(repo, net.experts[:2], now)
    for expert in net.experts[:2]:
        assert week[expert] and first[expert][0] == week[expert][0]
    assert first[net.experts[1]][0].start > now + timedelta(days=2)
