"""The web portal: server-rendered pages (Jinja2) in Chinese by default, English on request.

Public API for page modules (import these from their submodules: a page module is imported
while this package is still initialising):

- ``telemed.portal.web``: ``render(request, "x.html", status, **context)``,
  ``render_fragment(...)``, ``add_template_folder(path)``;
- ``telemed.portal.session``: ``CurrentUser`` / ``current_user``, ``PortalUser``,
  ``require_roles(...)``, ``require_csrf`` (already applied to every page router);
- ``telemed.portal.i18n``: ``gettext_for(request)``, ``t(request, msgid, **params)``;
  catalogues are ``portal/locale/<locale>/LC_MESSAGES/<module>.po``;
- ``telemed.portal.nav.register_nav(msgid, href, roles, order)``;
- ``telemed.portal.home.register_home_section(roles, render, order)``;
- ``telemed.portal.exceptions.PortalError`` (a localized TelemedError), ``PortalRedirect``.

A page module has an ``APIRouter`` named ``router`` and is listed in ``PAGE_MODULES`` below.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from starlette.staticfiles import StaticFiles

from telemed.portal import (
    auth_pages,
    consultation,
    ecg,
    errors,
    home,
    i18n,
    imaging,
    pathology,
    reading,
    uploads,
    video,
    web,
)
from telemed.portal.session import require_csrf

# Each has a ``router``; every one of its routes gets the CSRF check.
PAGE_MODULES = (i18n, auth_pages, home, uploads, consultation, ecg, video, pathology, imaging, reading)

router = APIRouter(dependencies=[Depends(require_csrf)])
for _module in PAGE_MODULES:
    router.include_router(_module.router)


def install(app: FastAPI, services: object | None = None) -> None:
    """Mount the portal on ``app``: static files, page routes, catalogues, templates, error pages.

    Call after the app's own exception handlers are registered (errors under ``/portal`` get
    pages, other paths keep their handlers). ``services`` is read from ``app.state.services``
    when the pages run; it is accepted here for symmetry with the other installers."""
    if services is not None:
        app.state.services = services
    app.state.portal = web.Portal(env=web.build_environment(), catalogues=i18n.Catalogues())
    app.mount(web.STATIC_PATH, StaticFiles(directory=web.STATIC_DIR), name="portal-static")
    app.include_router(router)
    app.include_router(video.socket_router)  # the call's signalling socket: a join token instead of a CSRF form token
    errors.install(app)
