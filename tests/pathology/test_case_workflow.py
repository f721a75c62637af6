"""The pathology case state machine and its deadlines (pure)."""

from datetime import UTC, datetime, timedelta

import pytest

from telemed.pathology import workflow as wf

REQ = wf.Actor("req", frozenset({"requesting-doctor"}), "r")
P1 = wf.Actor("p1", frozenset({"pathologist"}), "p1")
P2 = wf.Actor("p2", frozenset({"pathologist"}), "p2")
TRIAGE = wf.Actor("t", frozenset({"triage-officer"}), "t")


def ev(name, actor, **kw):
    return wf.Event(name, actor, **kw)


def test_happy_path_and_amendment():
    c = wf.Case("x", wf.ROUTINE, "r")
    c = wf.apply(c, ev("claim", P1))
    assert (c.state, c.pathologist) == (wf.ASSIGNED, "p1")
    with pytest.raises(wf.IllegalTransition) as err:
        wf.apply(c, ev("draft", P2))
    assert err.value.code == "forbidden"
    c = wf.apply(wf.apply(c, ev("draft", P1)), ev("sign", P1))
    assert (c.state, c.versions) == (wf.REPORTED, 1)
    c = wf.apply(c, ev("acknowledge", REQ))
    with pytest.raises(wf.IllegalTransition):
        wf.apply(c, ev("amend", P1))
    c = wf.apply(c, ev("amend", P1, reason="复片"))
    assert (c.state, c.versions) == (wf.REPORTED, 2)


def test_pool_assignment_release_cancel():
    c = wf.Case("x", wf.FROZEN, "r")
    with pytest.raises(wf.IllegalTransition):
        wf.apply(c, ev("assign", TRIAGE, pathologist="r"))
    c = wf.apply(c, ev("assign", TRIAGE, pathologist="p2"))
    assert wf.may(c, "preliminary", P2) and not wf.may(c, "preliminary", P1)
    with pytest.raises(wf.IllegalTransition):
        wf.apply(c, ev("claim", P1))  # not in the pool any more
    c = wf.apply(c, ev("release", P2))
    assert (c.state, c.pathologist) == (wf.REQUESTED, None)
    with pytest.raises(wf.IllegalTransition):
        wf.apply(c, ev("cancel", REQ))
    assert wf.apply(c, ev("cancel", REQ, reason="手术取消")).state == wf.CANCELLED
    assert not wf.may(wf.Case("y", wf.ROUTINE, "r", state=wf.ASSIGNED, pathologist="p1"), "preliminary", P1)


def test_frozen_deadline_and_escalation_levels():
    p = wf.Policy(frozen=timedelta(minutes=30), warn_before=timedelta(minutes=10), repeat=timedelta(minutes=10))
    t0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    c = wf.Case("x", wf.FROZEN, "r")
    assert p.deadline(wf.FROZEN, t0) == t0 + timedelta(minutes=30)
    levels = [p.escalation_level(c, t0, t0 + timedelta(minutes=m)) for m in (0, 19, 20, 29, 30, 39, 40, 55)]
    assert levels == [0, 0, 1, 1, 2, 2, 3, 4]
    answered = wf.apply(wf.apply(c, ev("claim", P1)), ev("preliminary", P1, reason="良性"))
    assert p.escalation_level(answered, t0, t0 + timedelta(hours=2)) == 0
    assert p.escalation_level(wf.Case("y", wf.ROUTINE, "r"), t0, t0 + timedelta(days=9)) == 0


def test_policy_from_env():
    p = wf.Policy.from_env({"TELEMED_PATHOLOGY_FROZEN_MINUTES": "45"})
    assert p.frozen == timedelta(minutes=45) and p.routine == timedelta(hours=72)
    with pytest.raises(ValueError, match="TELEMED_PATHOLOGY_FROZEN_MINUTES"):
        wf.Policy.from_env({"TELEMED_PATHOLOGY_FROZEN_MINUTES": "soon"})
