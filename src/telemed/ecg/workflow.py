"""The reading of one ECG as a pure state machine (no I/O, no clock, no database).

Remote ECG has no triage step (实时会诊，不分诊): a new ECG waits in the pool of the reading centre
the sending institution is attached to, every on-duty reader sees it at once, and one of them
claims it::

    waiting -> claimed -> reported -> acknowledged      (acknowledged: the sender confirmed a critical report)
    claimed -> waiting   (released by the reader, or abandoned)
    claimed -> claimed   (passed to a colleague of the pool)
    waiting -> cancelled (withdrawn by the sender)

Escalation is not a state: an ECG that stays unclaimed past the pool's limit is escalated (its
level goes up and a wider circle is alerted) and stays claimable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

WAITING, CLAIMED, REPORTED, ACKNOWLEDGED, CANCELLED = "waiting", "claimed", "reported", "acknowledged", "cancelled"
STATES = (WAITING, CLAIMED, REPORTED, ACKNOWLEDGED, CANCELLED)
OPEN = frozenset({WAITING, CLAIMED})
ROUTINE, URGENT = "routine", "urgent"
PRIORITIES = (ROUTINE, URGENT)


class IllegalTransition(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reading:
    state: str = WAITING
    reader: str | None = None  # Practitioner id of the reader who holds it
    priority: str = ROUTINE
    escalation: int = 0
    critical: bool = False  # the signed report holds a critical value


def claim(r: Reading, reader: str) -> Reading:
    if r.state == CLAIMED and r.reader == reader:
        return r
    if r.state == CLAIMED:
        raise IllegalTransition("already-claimed")
    if r.state != WAITING:
        raise IllegalTransition(f"not-claimable:{r.state}")
    return replace(r, state=CLAIMED, reader=reader)


def release(r: Reading, reader: str) -> Reading:
    if r.state != CLAIMED or r.reader != reader:
        raise IllegalTransition("not-yours")
    return replace(r, state=WAITING, reader=None)


def pass_to(r: Reading, reader: str, colleague: str, pool_members: set[str]) -> Reading:
    if r.state != CLAIMED or r.reader != reader:
        raise IllegalTransition("not-yours")
    if colleague == reader or colleague not in pool_members:
        raise IllegalTransition("not-a-colleague")
    return replace(r, reader=colleague)


def report(r: Reading, reader: str, critical: bool) -> Reading:
    if r.state != CLAIMED or r.reader != reader:
        raise IllegalTransition("not-yours")
    return replace(r, state=REPORTED, critical=critical)


def acknowledge(r: Reading) -> Reading:
    if r.state == ACKNOWLEDGED:
        return r
    if r.state != REPORTED:
        raise IllegalTransition(f"not-reported:{r.state}")
    return replace(r, state=ACKNOWLEDGED)


def cancel(r: Reading) -> Reading:
    if r.state != WAITING:
        raise IllegalTransition(f"not-cancellable:{r.state}")
    return replace(r, state=CANCELLED)


def escalate(r: Reading) -> Reading:
    if r.state != WAITING:
        raise IllegalTransition(f"not-waiting:{r.state}")
    return replace(r, escalation=r.escalation + 1)
