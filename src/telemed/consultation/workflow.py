"""The teleconsultation workflow as a pure state machine (no I/O, no clock, no database).

The steps follow the 2018 national rules for telemedicine services (远程医疗服务管理规范): a
requesting institution sends an invitation with the patient's information, purpose and consent;
the telemedicine centre checks it (质控), routes it (分诊) to one expert, an expert pool or a
multidisciplinary team (MDT), schedules it, the experts give signed opinions, and the requester
acknowledges the report, after which it is archived::

    draft -> submitted -> (returned <-> submitted) -> accepted -> assigned -> scheduled
          -> in-session -> opinion-drafted -> concluded -> acknowledged -> archived
    cancelled: from any state before the session, with a reason

Each expert of a consultation has a state of their own (assigned, declined, drafting, signed);
a consultation is concluded when every expert who did not decline has signed. An expert who
declines leaves the team; when nobody is left, the request goes back to the triage queue.

``apply(consultation, event)`` returns the new consultation or raises :class:`IllegalTransition`
with the reason; who may send which event is part of the machine (``EVENT_ROLES``), so the rule
is tested here once and not re-checked by every caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

# Consultation states (the Task.businessStatus codes) in workflow order.
DRAFT = "draft"
SUBMITTED = "submitted"
RETURNED = "returned"
ACCEPTED = "accepted"
ASSIGNED = "assigned"
SCHEDULED = "scheduled"
IN_SESSION = "in-session"
OPINION_DRAFTED = "opinion-drafted"
CONCLUDED = "concluded"
ACKNOWLEDGED = "acknowledged"
ARCHIVED = "archived"
CANCELLED = "cancelled"

STATES = (
    DRAFT, SUBMITTED, RETURNED, ACCEPTED, ASSIGNED, SCHEDULED, IN_SESSION,
    OPINION_DRAFTED, CONCLUDED, ACKNOWLEDGED, ARCHIVED, CANCELLED,
)  # fmt: skip
TERMINAL = frozenset({ARCHIVED, CANCELLED})
# States a requester may still withdraw from, and the centre cancel from: before any expert has spoken.
CANCELLABLE = frozenset({DRAFT, SUBMITTED, RETURNED, ACCEPTED, ASSIGNED, SCHEDULED})
WITH_EXPERTS = frozenset({ASSIGNED, SCHEDULED, IN_SESSION, OPINION_DRAFTED, CONCLUDED, ACKNOWLEDGED, ARCHIVED})

# Kinds of consultation (普通会诊, 急会诊, 多学科会诊).
ROUTINE = "routine"
URGENT = "urgent"
MDT = "mdt"
KINDS = (ROUTINE, URGENT, MDT)

# Per-expert states.
EXPERT_ASSIGNED = "assigned"
EXPERT_DECLINED = "declined"
EXPERT_DRAFTING = "drafting"
EXPERT_SIGNED = "signed"

# Roles (telemed.identity.policy) allowed to send each event. "requester" and "expert" are
# relations to this consultation, checked against the actor's practitioner id.
EVENT_ROLES: dict[str, frozenset[str]] = {
    "submit": frozenset({"requester"}),
    "withdraw": frozenset({"requester"}),
    "return": frozenset({"qc-officer"}),
    "accept": frozenset({"qc-officer"}),
    "assign": frozenset({"triage-officer"}),
    "decline": frozenset({"expert"}),
    "schedule": frozenset({"triage-officer", "expert"}),
    "start-session": frozenset({"expert", "triage-officer"}),
    "draft-opinion": frozenset({"expert"}),
    "sign": frozenset({"expert"}),
    "amend": frozenset({"expert"}),
    "acknowledge": frozenset({"requester"}),
    "archive": frozenset({"triage-officer", "system"}),
    "cancel": frozenset({"triage-officer", "platform-admin"}),
}


# The states each event may be sent in (the handlers check the event's own data).
FROM_STATES: dict[str, frozenset[str]] = {
    "submit": frozenset({DRAFT, RETURNED}),
    "withdraw": CANCELLABLE,
    "cancel": CANCELLABLE,
    "return": frozenset({SUBMITTED}),
    "accept": frozenset({SUBMITTED}),
    # Re-triage is allowed until the session starts: the new team replaces the old one.
    "assign": frozenset({ACCEPTED, ASSIGNED, SCHEDULED}),
    "decline": frozenset({ASSIGNED, SCHEDULED}),
    "schedule": frozenset({ASSIGNED, SCHEDULED}),
    "start-session": frozenset({SCHEDULED}),
    # Asynchronous consultations (no video) go straight from assignment to the opinion.
    "draft-opinion": frozenset({ASSIGNED, SCHEDULED, IN_SESSION, OPINION_DRAFTED}),
    "sign": frozenset({OPINION_DRAFTED}),
    "amend": frozenset({CONCLUDED, ACKNOWLEDGED}),
    "acknowledge": frozenset({CONCLUDED}),
    "archive": frozenset({ACKNOWLEDGED}),
}


class IllegalTransition(Exception):
    """The event is not allowed in the consultation's current state, or not by this actor."""

    def __init__(self, reason: str, *, code: str = "illegal"):
        super().__init__(reason)
        self.reason = reason
        self.code = code  # "illegal" (409) or "forbidden" (403)


@dataclass(frozen=True)
class Actor:
    user: str
    roles: frozenset[str] = frozenset()
    practitioner: str | None = None


SYSTEM = Actor("system", frozenset({"system"}))


@dataclass(frozen=True)
class Expert:
    practitioner: str
    state: str = EXPERT_ASSIGNED
    external: bool = False
    reason: str | None = None  # why they declined


@dataclass(frozen=True)
class Transition:
    event: str
    actor: str
    at: datetime
    from_state: str
    to_state: str
    reason: str | None = None


@dataclass(frozen=True)
class Consultation:
    id: str
    kind: str
    requester: str  # Practitioner id of the requesting doctor
    state: str = DRAFT
    experts: tuple[Expert, ...] = ()
    scheduled_start: datetime | None = None
    room: str | None = None
    signed_versions: int = 0  # amendments after conclusion count up from 1
    history: tuple[Transition, ...] = field(default_factory=tuple)

    @property
    def active_experts(self) -> tuple[Expert, ...]:
        return tuple(e for e in self.experts if e.state != EXPERT_DECLINED)

    def expert(self, practitioner: str | None) -> Expert | None:
        return next((e for e in self.active_experts if e.practitioner == practitioner), None)


# Events -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    name: str
    actor: Actor
    at: datetime
    reason: str | None = None
    experts: tuple[str, ...] = ()  # assign: practitioner ids
    external: tuple[str, ...] = ()  # assign: those of ``experts`` invited from outside the network
    start: datetime | None = None  # schedule
    room: str | None = None  # schedule


def _relations(c: Consultation, actor: Actor) -> frozenset[str]:
    rel = set(actor.roles)
    if actor.practitioner and actor.practitioner == c.requester:
        rel.add("requester")
    if actor.practitioner and c.expert(actor.practitioner) is not None:
        rel.add("expert")
    return frozenset(rel)


def may(c: Consultation, event_name: str, actor: Actor) -> bool:
    """Whether ``actor`` may send ``event_name`` in the current state (for showing buttons); the
    event's own data (reasons, experts, times) is checked by apply()."""
    if c.state in TERMINAL or event_name not in EVENT_ROLES:
        return False
    if not (EVENT_ROLES[event_name] & _relations(c, actor)) or c.state not in FROM_STATES[event_name]:
        return False
    me = c.expert(actor.practitioner)
    if event_name == "draft-opinion":
        return me is not None and me.state != EXPERT_SIGNED
    if event_name in ("sign",):
        return me is not None and me.state == EXPERT_DRAFTING
    if event_name == "amend":
        return me is not None and me.state == EXPERT_SIGNED
    return True


def _require(cond: bool, reason: str) -> None:
    if not cond:
        raise IllegalTransition(reason)


def _move(c: Consultation, ev: Event, to: str, **changes) -> Consultation:
    t = Transition(ev.name, ev.actor.user, ev.at, c.state, to, ev.reason)
    return replace(c, state=to, history=(*c.history, t), **changes)


def _set_expert(c: Consultation, practitioner: str, **changes) -> tuple[Expert, ...]:
    return tuple(replace(e, **changes) if e.practitioner == practitioner and e.state != EXPERT_DECLINED else e
                 for e in c.experts)  # fmt: skip


def apply(c: Consultation, ev: Event) -> Consultation:
    """The consultation after ``ev``; raises IllegalTransition (nothing changes) when not allowed."""
    allowed = EVENT_ROLES.get(ev.name)
    if allowed is None:
        raise IllegalTransition(f"Unknown event {ev.name!r}")
    if not (allowed & _relations(c, ev.actor)):
        raise IllegalTransition(f"{ev.actor.user} may not {ev.name} this consultation", code="forbidden")
    if c.state in TERMINAL:
        raise IllegalTransition(f"The consultation is {c.state}; nothing more can happen to it")
    if c.state not in FROM_STATES[ev.name]:
        raise IllegalTransition(f"Cannot {ev.name} a consultation that is {c.state}")
    return _HANDLERS[ev.name](c, ev)


def _submit(c: Consultation, ev: Event) -> Consultation:
    return _move(c, ev, SUBMITTED)


def _withdraw(c: Consultation, ev: Event) -> Consultation:
    _require(bool(ev.reason), "A reason is required to withdraw a request")
    return _move(c, ev, CANCELLED)


def _cancel(c: Consultation, ev: Event) -> Consultation:
    _require(bool(ev.reason), "A reason is required to cancel a consultation")
    return _move(c, ev, CANCELLED)


def _return(c: Consultation, ev: Event) -> Consultation:
    _require(bool(ev.reason), "Say what must be corrected")
    return _move(c, ev, RETURNED)


def _accept(c: Consultation, ev: Event) -> Consultation:
    return _move(c, ev, ACCEPTED)


def _assign(c: Consultation, ev: Event) -> Consultation:
    experts = tuple(dict.fromkeys(e for e in ev.experts if e))
    _require(bool(experts), "Choose at least one expert")
    if c.kind == MDT:
        _require(len(experts) >= 2, "A multidisciplinary consultation needs at least two experts")
    else:
        _require(len(experts) == 1, f"A {c.kind} consultation has exactly one expert")
    _require(c.requester not in experts, "The requesting doctor cannot be their own consultant")
    team = tuple(Expert(p, external=p in ev.external) for p in experts)
    # A re-triage keeps the schedule only when the team is unchanged.
    same = {e.practitioner for e in c.active_experts} == set(experts)
    if c.state == SCHEDULED and same:
        return _move(c, ev, SCHEDULED, experts=team)
    return _move(c, ev, ASSIGNED, experts=team, scheduled_start=None, room=None)


def _decline(c: Consultation, ev: Event) -> Consultation:
    _require(bool(ev.reason), "A reason is required to decline")
    experts = _set_expert(c, ev.actor.practitioner, state=EXPERT_DECLINED, reason=ev.reason)
    left = [e for e in experts if e.state != EXPERT_DECLINED]
    if not left or (c.kind == MDT and len(left) < 2):
        return _move(c, ev, ACCEPTED, experts=experts, scheduled_start=None, room=None)  # back to triage
    return _move(c, ev, c.state, experts=experts)


def _schedule(c: Consultation, ev: Event) -> Consultation:
    _require(ev.start is not None and bool(ev.room), "A time and a virtual room are required")
    return _move(c, ev, SCHEDULED, scheduled_start=ev.start, room=ev.room)


def _start_session(c: Consultation, ev: Event) -> Consultation:
    return _move(c, ev, IN_SESSION)


def _draft_opinion(c: Consultation, ev: Event) -> Consultation:
    me = c.expert(ev.actor.practitioner)
    _require(me is not None and me.state != EXPERT_SIGNED, "Your opinion is already signed; amend it instead")
    return _move(c, ev, OPINION_DRAFTED, experts=_set_expert(c, me.practitioner, state=EXPERT_DRAFTING))


def _sign(c: Consultation, ev: Event) -> Consultation:
    me = c.expert(ev.actor.practitioner)
    _require(me is not None and me.state == EXPERT_DRAFTING, "Write your opinion before signing it")
    experts = _set_expert(c, me.practitioner, state=EXPERT_SIGNED)
    done = all(e.state == EXPERT_SIGNED for e in experts if e.state != EXPERT_DECLINED)
    return _move(c, ev, CONCLUDED if done else OPINION_DRAFTED, experts=experts,
                 signed_versions=1 if done else c.signed_versions)  # fmt: skip


def _amend(c: Consultation, ev: Event) -> Consultation:
    _require(bool(ev.reason), "An amendment needs a reason")
    me = c.expert(ev.actor.practitioner)
    _require(me is not None and me.state == EXPERT_SIGNED, "Only a signing expert can amend the report")
    return _move(c, ev, CONCLUDED, signed_versions=c.signed_versions + 1)


def _acknowledge(c: Consultation, ev: Event) -> Consultation:
    return _move(c, ev, ACKNOWLEDGED)


def _archive(c: Consultation, ev: Event) -> Consultation:
    return _move(c, ev, ARCHIVED)


_HANDLERS = {
    "submit": _submit,
    "withdraw": _withdraw,
    "cancel": _cancel,
    "return": _return,
    "accept": _accept,
    "assign": _assign,
    "decline": _decline,
    "schedule": _schedule,
    "start-session": _start_session,
    "draft-opinion": _draft_opinion,
    "sign": _sign,
    "amend": _amend,
    "acknowledge": _acknowledge,
    "archive": _archive,
}
assert set(_HANDLERS) == set(EVENT_ROLES) == set(FROM_STATES)
