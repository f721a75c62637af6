"""Inviting an external expert from the case page, and the invitation link's sign-in page.

- ``POST /portal/consultations/{cid}/invite`` (the triage officer): records the expert, puts them
  on the team, queues the link (email) and the code (SMS) and shows both once on the answer
  page, so they can also be passed on by phone. They are not kept anywhere in clear.
- ``GET /portal/invite/{token}`` (no sign-in): asks for the code; ``POST`` with the code signs the
  expert in with a guest session bound to that consultation (portal.session) and opens the case.

The anonymous form carries the pre-session CSRF token, like the login page.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from telemed.consultation import invitation
from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import Category, TelemedError
from telemed.portal import session
from telemed.portal.consultation.common import env, labels, repository, services
from telemed.portal.consultation.pages import publish
from telemed.portal.exceptions import PortalError
from telemed.portal.i18n import gettext_for
from telemed.portal.session import CurrentUser
from telemed.portal.web import render

router = APIRouter()
VALIDITY_HOURS = (24, 72, 168)  # what the form offers; 72 h is the default


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/portal/consultations/{cid}/invite", response_class=HTMLResponse)
def invite(
    request: Request,
    user: CurrentUser,
    cid: str,
    name: Annotated[str, Form(max_length=100)] = "",
    institution: Annotated[str, Form(max_length=200)] = "",
    title: Annotated[str, Form(max_length=100)] = "",
    email: Annotated[str, Form(max_length=200)] = "",
    phone: Annotated[str, Form(max_length=32)] = "",
    hours: Annotated[int, Form()] = 72,
) -> Response:
    if hours not in VALIDITY_HOURS:
        raise PortalError(Category.INCORRECT, "Choose how long the invitation is valid")
    svc = services(request)
    with repository(request, user, write=True) as repo:
        inv, token, code = invitation.invite(
            repo, env(request), user.context, cid, name=name, institution=institution, title=title, email=email,
            phone=phone, expires_in=timedelta(hours=hours), secret=svc.secret_key,
        )  # fmt: skip
        link = invitation.link_for(svc.site_url, token)
        sent = invitation.send(repo, svc.outbox, inv, link, code)
        number = repo.read("ServiceRequest", cid).resource["identifier"][0]["value"]
    publish(request, cid)
    return render(request, "consultation/invited.html", inv=inv, link=link, code=code, sent=sent, name=name,
                  institution=institution, number=number, cid=cid, **labels(request))  # fmt: skip


def _invitee(request: Request, conn, inv: invitation.Invitation) -> str:
    """The invited expert's name (directory data: read with a context that sees no patient)."""
    repo = services(request).repository(conn, AccessContext(user="anonymous", clinical="none"))
    try:
        return (repo.read("Practitioner", inv.practitioner).resource.get("name") or [{}])[0].get("text", "")
    except TelemedError:
        return ""


def _code_page(request: Request, token: str, status: int = 200, error: str | None = None) -> Response:
    svc = services(request)
    with unit_of_work(svc.engine, write=False) as conn:
        inv = invitation.pending(conn, token, svc.clock.now())  # 404 / 410 / 403 pages
        name = _invitee(request, conn, inv)
    return render(request, "consultation/invite.html", status, inv=inv, name=name, token=token, error=error,
                  digits=invitation.CODE_DIGITS)  # fmt: skip


@router.get("/portal/invite/{token}", response_class=HTMLResponse)
def code_page(request: Request, token: str) -> Response:
    return _code_page(request, token)


@router.post("/portal/invite/{token}")
def redeem(request: Request, token: str, code: Annotated[str, Form(max_length=32)] = "") -> Response:
    _ = gettext_for(request)
    if not code.strip():
        return _code_page(request, token, 400, _("Enter the %(n)s-digit code", n=invitation.CODE_DIGITS))
    svc = services(request)
    now = svc.clock.now()
    try:
        redeemed = invitation.redeem(svc.engine, token, code, now, secret=svc.secret_key, address=_address(request))
    except invitation.WrongCode as exc:
        if exc.attempts_left <= 0:
            raise PortalError(Category.FORBIDDEN, invitation.LOCKED) from None
        # 200, as the login form: a 401 would need a WWW-Authenticate challenge.
        error = _("The code is not valid. %(n)s tries left.", n=exc.attempts_left)
        return _code_page(request, token, 200, error)
    guest, ttl = invitation.session_token(svc.token_keys, redeemed, now, svc.settings.token_ttl_seconds)
    response = RedirectResponse(f"/portal/consultations/{redeemed.consultation}", 303)
    session.set_session_cookie(request, response, guest, max_age=ttl)
    return response
