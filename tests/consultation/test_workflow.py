"""The consultation state machine: the happy paths, the refusals, and (hypothesis) random event
sequences that never reach an illegal state."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemed.consultation import workflow as wf
from telemed.consultation.workflow import Actor, Consultation, Event, IllegalTransition, apply, may

T0 = datetime(2026, 11, 25, 8, 0)
REQUESTER = Actor("dr-wang", frozenset({"requesting-doctor"}), "prac-req")
QC = Actor("qc", frozenset({"qc-officer"}))
TRIAGE = Actor("triage", frozenset({"triage-officer"}))
E1 = Actor("dr-li", frozenset({"consulting-expert"}), "prac-e1")
E2 = Actor("dr-zhao", frozenset({"consulting-expert"}), "prac-e2")
E3 = Actor("dr-sun", frozenset({"consulting-expert"}), "prac-e3")
ACTORS = [REQUESTER, QC, TRIAGE, E1, E2, E3, wf.SYSTEM]


def ev(name, actor, **kw) -> Event:
    return Event(name, actor, T0, **kw)


def run(c: Consultation, *events: Event) -> Consultation:
    for e in events:
        c = apply(c, e)
    return c


def test_mdt_happy_path_records_every_transition():
    c = Consultation("c1", wf.MDT, "prac-req")
    c = run(
        c,
        ev("submit", REQUESTER),
        ev("return", QC, reason="影像资料缺失"),
        ev("submit", REQUESTER),
        ev("accept", QC),
        ev("assign", TRIAGE, experts=("prac-e1", "prac-e2")),
        ev("schedule", TRIAGE, start=T0 + timedelta(hours=2), room="room-1"),
        ev("start-session", E1),
        ev("draft-opinion", E1),
        ev("sign", E1),
    )
    assert c.state == wf.OPINION_DRAFTED  # the second expert has not signed yet
    c = run(c, ev("draft-opinion", E2), ev("sign", E2))
    assert c.state == wf.CONCLUDED and c.signed_versions == 1
    c = run(c, ev("amend", E2, reason="补充随访建议"), ev("acknowledge", REQUESTER), ev("archive", wf.SYSTEM))
    assert c.state == wf.ARCHIVED and c.signed_versions == 2
    assert [t.event for t in c.history][:3] == ["submit", "return", "submit"]
    assert c.history[1].reason == "影像资料缺失" and c.history[1].actor == "qc"
    with pytest.raises(IllegalTransition, match="archived"):
        apply(c, ev("cancel", TRIAGE, reason="x"))


def test_refusals_say_why():
    c = Consultation("c1", wf.ROUTINE, "prac-req")
    with pytest.raises(IllegalTransition) as exc:
        apply(c, ev("accept", QC))
    assert exc.value.code == "illegal" and "draft" in exc.value.reason
    with pytest.raises(IllegalTransition) as exc:
        apply(c, ev("submit", E1))
    assert exc.value.code == "forbidden"
    c = run(c, ev("submit", REQUESTER), ev("accept", QC))
    with pytest.raises(IllegalTransition, match="exactly one expert"):
        apply(c, ev("assign", TRIAGE, experts=("prac-e1", "prac-e2")))
    with pytest.raises(IllegalTransition, match="their own consultant"):
        apply(c, ev("assign", TRIAGE, experts=("prac-req",)))
    with pytest.raises(IllegalTransition, match="corrected"):
        apply(Consultation("c2", wf.ROUTINE, "prac-req", state=wf.SUBMITTED), ev("return", QC))


def test_an_expert_who_declines_sends_the_request_back_to_triage():
    c = run(
        Consultation("c1", wf.ROUTINE, "prac-req"),
        ev("submit", REQUESTER), ev("accept", QC), ev("assign", TRIAGE, experts=("prac-e1",)),
    )  # fmt: skip
    assert may(c, "decline", E1) and not may(c, "decline", E2)
    c = apply(c, ev("decline", E1, reason="出差"))
    assert c.state == wf.ACCEPTED and c.experts[0].state == wf.EXPERT_DECLINED
    with pytest.raises(IllegalTransition):
        apply(c, ev("draft-opinion", E1))  # no longer on the team
    c = apply(c, ev("assign", TRIAGE, experts=("prac-e3",)))
    assert c.state == wf.ASSIGNED and [e.practitioner for e in c.active_experts] == ["prac-e3"]


def test_mdt_needs_two_experts_and_falls_back_when_one_declines():
    c = run(Consultation("c1", wf.MDT, "prac-req"), ev("submit", REQUESTER), ev("accept", QC))
    with pytest.raises(IllegalTransition, match="two experts"):
        apply(c, ev("assign", TRIAGE, experts=("prac-e1",)))
    c = apply(c, ev("assign", TRIAGE, experts=("prac-e1", "prac-e2", "prac-e3")))
    c = apply(c, ev("decline", E3, reason="非本专业"))
    assert c.state == wf.ASSIGNED and len(c.active_experts) == 2
    c = apply(c, ev("decline", E2, reason="休假"))
    assert c.state == wf.ACCEPTED


def test_may_matches_apply_for_buttons():
    c = run(Consultation("c1", wf.ROUTINE, "prac-req"), ev("submit", REQUESTER))
    assert may(c, "accept", QC) and may(c, "return", QC) and not may(c, "accept", TRIAGE)
    assert may(c, "withdraw", REQUESTER) and not may(c, "acknowledge", REQUESTER)


# Property: random event sequences never reach an illegal state -------------------------------------

EVENT_NAMES = sorted(wf.EVENT_ROLES)
events = st.builds(
    lambda name, actor, reason, experts, scheduled: Event(
        name,
        actor,
        T0,
        reason=reason,
        experts=experts,
        start=T0 + timedelta(hours=1) if scheduled else None,
        room="room" if scheduled else None,
    ),
    st.sampled_from(EVENT_NAMES),
    st.sampled_from(ACTORS),
    st.one_of(st.none(), st.just("原因")),
    st.lists(st.sampled_from(["prac-e1", "prac-e2", "prac-e3", "prac-req"]), max_size=3).map(tuple),
    st.booleans(),
)


def check_invariants(c: Consultation) -> None:
    assert c.state in wf.STATES
    active = c.active_experts
    if c.state in wf.WITH_EXPERTS:
        assert active, c
        assert c.requester not in [e.practitioner for e in active]
        if c.kind == wf.MDT:
            assert len(active) >= 2
        else:
            assert len(active) == 1
    if c.state in (wf.DRAFT, wf.SUBMITTED, wf.RETURNED):
        assert not c.experts
    if c.state == wf.SCHEDULED:
        assert c.scheduled_start is not None and c.room
    if c.state in (wf.CONCLUDED, wf.ACKNOWLEDGED, wf.ARCHIVED):
        assert all(e.state == wf.EXPERT_SIGNED for e in active) and c.signed_versions >= 1
    else:
        assert c.signed_versions == 0 or c.state == wf.CANCELLED
    for before, after in zip(c.history, c.history[1:], strict=False):
        assert before.to_state == after.from_state
    if c.history:
        assert c.history[-1].to_state == c.state


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(wf.KINDS), st.lists(events, max_size=40))
def test_random_event_sequences_never_reach_an_illegal_state(kind, sequence):
    c = Consultation("c", kind, "prac-req")
    for e in sequence:
        try:
            after = apply(c, e)
        except IllegalTransition as exc:
            assert exc.code in ("illegal", "forbidden") and exc.reason
            continue
        assert len(after.history) == len(c.history) + 1
        assert may(c, e.name, e.actor)  # whatever apply accepted, the buttons offered
        assert c.state not in wf.TERMINAL
        c = after
        check_invariants(c)
