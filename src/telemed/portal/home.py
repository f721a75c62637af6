"""``/portal/``: the signed-in user's home page, made of the sections page modules register for
their roles (a doctor's open consultations, an expert's worklist ...), or a friendly default
(who you are, your institution, your roles) when no section applies.

``register_home_section(roles={"consulting-expert"}, render=my_section, order=10)`` at import
time of a page module; ``render(request, user)`` returns markup, usually
``web.render_fragment(request, "mymodule/home_section.html", ...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError

from telemed.db.engine import unit_of_work
from telemed.identity.policy import ROLES
from telemed.kernel.errors import TelemedError
from telemed.portal.i18n import lang_of
from telemed.portal.nav import register_nav
from telemed.portal.session import CurrentUser, PortalUser
from telemed.portal.web import render

log = logging.getLogger("telemed.portal")

router = APIRouter()


@dataclass(frozen=True)
class HomeSection:
    roles: frozenset[str]
    render: Callable[[Request, PortalUser], str | Markup]
    order: int = 100


home_sections: list[HomeSection] = []


def register_home_section(
    roles: Iterable[str], render: Callable[[Request, PortalUser], str | Markup], order: int = 100
) -> HomeSection:
    """Show ``render``'s markup on the home page of users holding one of ``roles``."""
    section = HomeSection(frozenset(roles), render, order)
    home_sections.append(section)
    return section


def sections_for(user: PortalUser) -> list[HomeSection]:
    return sorted((s for s in home_sections if s.roles & user.roles), key=lambda s: s.order)


def role_names(roles: Iterable[str], lang: str) -> list[str]:
    """Role codes as their names in ``lang`` (the policy table holds both languages)."""
    names = []
    for code in sorted(roles):
        role = ROLES.get(code)
        names.append(code if role is None else role.name_zh if lang == "zh-CN" else role.name_en)
    return names


def institution_name(request: Request, user: PortalUser) -> str | None:
    """The name of the user's institution, read as the user (audited like any read)."""
    if not user.organization:
        return None
    services = request.app.state.services
    try:
        with unit_of_work(services.engine, write=False) as conn:
            org = services.repository(conn, user.context).read("Organization", user.organization).resource
    except (TelemedError, SQLAlchemyError):
        log.info("institution %s of %s not readable", user.organization, user.username)
        return user.organization
    return org.get("name") or user.organization


register_nav("Home", "/portal/", order=0)


@router.get("/portal", include_in_schema=False)
def portal_root() -> RedirectResponse:
    return RedirectResponse("/portal/", 307)


@router.get("/portal/", include_in_schema=False)
def home(request: Request, user: CurrentUser) -> HTMLResponse:
    sections = [Markup(s.render(request, user)) for s in sections_for(user)]
    return render(
        request,
        "home.html",
        sections=sections,
        institution=institution_name(request, user),
        role_names=role_names(user.roles, lang_of(request)),
    )
