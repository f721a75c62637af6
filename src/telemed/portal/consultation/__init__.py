"""Consultation pages of the portal: worklists, the request form, the case page, the live board.

Registers its menu entries and home-page sections at import; ``router`` holds its routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from markupsafe import Markup

from telemed.portal.consultation import board, invite, pages
from telemed.portal.consultation.common import labels, minutes_left, repository, services
from telemed.portal.home import register_home_section
from telemed.portal.nav import register_nav
from telemed.portal.session import PortalUser
from telemed.portal.web import render_fragment

router = APIRouter()
router.include_router(board.router)
router.include_router(pages.router)
router.include_router(invite.router)

WORKING_ROLES = ("requesting-doctor", "qc-officer", "triage-officer", "consulting-expert")
register_nav("Consultations", "/portal/consultations", roles=WORKING_ROLES, order=20)
register_nav("New request", "/portal/consultations/new", roles=("requesting-doctor",), order=21)
register_nav("Board", "/portal/board", roles=board.BOARD_ROLES, order=30)
register_nav(
    "Statistics", "/portal/statistics", roles=("triage-officer", "qc-officer", "platform-admin", "supervisor"), order=40
)


def _home(request: Request, user: PortalUser) -> Markup:
    from telemed.consultation.directory import Directory

    lists = pages.worklists(request, user)
    with repository(request, user) as repo:
        directory = Directory.cached(repo)
    return render_fragment(request, "consultation/home_section.html", lists=lists, now=services(request).clock.now(),
                           minutes_left=minutes_left, **labels(request, directory))  # fmt: skip


register_home_section(WORKING_ROLES, _home, order=10)
