"""What every consultation page needs: the use-case environment, units of work, labels."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi import Request

from telemed.consultation import Env, SlaPolicy
from telemed.consultation import workflow as wf
from telemed.consultation.directory import Directory, specialty_name
from telemed.portal import audit, web
from telemed.portal.i18n import gettext_for, lang_of

TEMPLATES = Path(__file__).parent / "templates"
web.add_template_folder(TEMPLATES)


def services(request: Request):
    return request.app.state.services


def env(request: Request) -> Env:
    svc = services(request)
    sla = getattr(svc, "consultation_sla", None) or SlaPolicy()
    return Env(clock=svc.clock, ids=svc.ids, sla=sla)


repository = audit.repository  # every consultation page's unit of work, audited


def state_label(request: Request, state: str) -> str:
    _ = gettext_for(request)
    return {
        wf.DRAFT: _("Draft"), wf.SUBMITTED: _("Awaiting quality check"), wf.RETURNED: _("Returned for correction"),
        wf.ACCEPTED: _("Awaiting triage"), wf.ASSIGNED: _("Assigned"), wf.SCHEDULED: _("Scheduled"),
        wf.IN_SESSION: _("In session"), wf.OPINION_DRAFTED: _("Opinion being written"),
        wf.CONCLUDED: _("Report signed"), wf.ACKNOWLEDGED: _("Acknowledged"), wf.ARCHIVED: _("Archived"),
        wf.CANCELLED: _("Cancelled"),
    }.get(state, state)  # fmt: skip


def kind_label(request: Request, kind: str) -> str:
    _ = gettext_for(request)
    return {wf.ROUTINE: _("Routine"), wf.URGENT: _("Urgent"), wf.MDT: _("MDT")}.get(kind, kind)


def event_label(request: Request, event: str) -> str:
    _ = gettext_for(request)
    return {
        "create": _("Request created"), "submit": _("Submitted"), "withdraw": _("Withdrawn"),
        "cancel": _("Cancelled"), "return": _("Returned for correction"), "accept": _("Passed quality check"),
        "assign": _("Experts assigned"), "decline": _("Declined by expert"), "schedule": _("Scheduled"),
        "start-session": _("Session started"), "draft-opinion": _("Opinion drafted"), "sign": _("Opinion signed"),
        "amend": _("Report amended"), "acknowledge": _("Acknowledged by requester"), "archive": _("Archived"),
    }.get(event, event)  # fmt: skip


def labels(request: Request, directory: Directory | None = None) -> dict:
    """Functions templates use to show codes as words in the page's language."""
    lang = lang_of(request)
    out = {
        "state_label": lambda s: state_label(request, s),
        "kind_label": lambda k: kind_label(request, k),
        "event_label": lambda e: event_label(request, e),
        "specialty_label": lambda c: specialty_name(c, lang),
        "localinput": localinput,
        "duration": lambda m: duration(request, m),
    }
    if directory is not None:
        out["person"] = directory.name
        out["org_of"] = directory.org_of
    return out


def localinput(value: datetime | None) -> str:
    """A datetime as an <input type=datetime-local> value, in the display time zone."""
    return value.astimezone(web.DISPLAY_TZ).strftime("%Y-%m-%dT%H:%M") if value else ""


def duration(request: Request, minutes: int) -> str:
    """A time span as people say it: 45 min, 3 h 05 min, 2 d 4 h."""
    _ = gettext_for(request)
    minutes = abs(minutes)
    if minutes < 60:
        return _("%(m)s min", m=minutes)
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return _("%(h)s h %(m)s min", h=hours, m=f"{mins:02d}")
    days, hours = divmod(hours, 24)
    return _("%(d)s d %(h)s h", d=days, h=hours)


def minutes_left(deadline: datetime | None, now: datetime) -> int | None:
    if deadline is None:
        return None
    return int((deadline - now).total_seconds() // 60)
