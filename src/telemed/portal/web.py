"""Rendering portal pages: one Jinja2 environment (autoescaped, gettext via ``jinja2.ext.i18n``)
and :func:`render`, which gives every template the signed-in ``user``, ``lang``, ``csrf_token``,
the ``nav`` entries of the user's roles and the ``request``.

Templates come from ``portal/templates`` plus the folders page modules add with
:func:`add_template_folder` (searched in order: the first folder holding a name wins, so a page
module names its templates ``<module>/...``). Static files (``portal/static``) are served at
``/portal/static``; templates link them with ``static_url("portal.css")``.

Pages are sent with a strict Content-Security-Policy: no inline scripts or styles, nothing from
other origins; page scripts live in static files and read their data from ``data-`` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.support import NullTranslations
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from telemed import __version__
from telemed.portal import i18n, session
from telemed.portal.nav import nav_for

PORTAL_DIR = Path(__file__).parent
TEMPLATES_DIR = PORTAL_DIR / "templates"
STATIC_DIR = PORTAL_DIR / "static"
STATIC_PATH = "/portal/static"
# The platform serves one region in China: times are shown in China Standard Time.
DISPLAY_TZ = ZoneInfo("Asia/Shanghai")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show patient data: not kept in shared or back-button caches
}

# Shared by every environment (page modules add folders at import time).
_loaders: list[FileSystemLoader] = [FileSystemLoader(TEMPLATES_DIR)]
# The translations of the page being rendered (the gettext installed in the environment reads it).
_translations: ContextVar[NullTranslations | None] = ContextVar("portal_translations", default=None)
_lang: ContextVar[str] = ContextVar("portal_lang", default=i18n.DEFAULT)


def add_template_folder(folder: str | Path) -> None:
    """Let the portal find a page module's templates (call at import time of the module)."""
    folder = str(folder)
    if all(folder not in loader.searchpath for loader in _loaders):
        _loaders.append(FileSystemLoader(folder))


def _current() -> NullTranslations:
    current = _translations.get()
    return current if current is not None else NullTranslations()


def _gettext(message: str) -> str:
    return _current().gettext(message)


def _ngettext(singular: str, plural: str, n: int) -> str:
    return _current().ngettext(singular, plural, n)


def _pgettext(context: str, message: str) -> str:
    return _current().pgettext(context, message)


def _npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return _current().npgettext(context, singular, plural, n)


def _format_datetime(value: datetime | str | None, style: str = "medium") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return format_datetime(value, format=style, tzinfo=DISPLAY_TZ, locale=i18n.babel_locale_object(_lang.get()))


def _format_date(value: date | str | None, style: str = "medium") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return format_date(value, format=style, locale=i18n.babel_locale_object(_lang.get()))


def static_url(name: str) -> str:
    """The URL of a file in ``portal/static``, versioned so browsers refetch it after an upgrade."""
    path = STATIC_DIR / name
    stamp = int(path.stat().st_mtime) if path.exists() else 0
    return f"{STATIC_PATH}/{name}?v={__version__}.{stamp}"


def build_environment() -> Environment:
    env = Environment(
        loader=ChoiceLoader(_loaders),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # added by jinja2.ext.i18n
        _gettext, _ngettext, newstyle=True, pgettext=_pgettext, npgettext=_npgettext
    )
    env.globals.update(static_url=static_url, languages=list(i18n.AUTONYMS.items()))
    env.filters.update(datetime=_format_datetime, date=_format_date)
    return env


@dataclass
class Portal:
    """The portal's per-app state (``app.state.portal``): templates and catalogues."""

    env: Environment
    catalogues: i18n.Catalogues


def _portal(request: Request) -> Portal:
    return request.app.state.portal


def _context(request: Request, context: Mapping) -> dict:
    user = session.optional_user(request)
    base = {
        "request": request,
        "user": user,
        "lang": i18n.lang_of(request),
        "csrf_token": session.csrf_token(request),
        # A guest (an invited external expert) opens one case only: no menu of pages it cannot open.
        "nav": nav_for(user.roles) if user is not None and not user.enrollment_only and not user.guest else [],
        "current_path": request.url.path,
        "demo": request.app.state.services.settings.demo,
    }
    base.update(context)
    return base


def _render_to_string(request: Request, template_name: str, context: Mapping) -> str:
    lang = i18n.lang_of(request)
    tokens = (_translations.set(_portal(request).catalogues.get(lang)), _lang.set(lang))
    try:
        return _portal(request).env.get_template(template_name).render(_context(request, context))
    finally:
        _translations.reset(tokens[0])
        _lang.reset(tokens[1])


def render(
    request: Request,
    template_name: str,
    status_code: int = 200,
    *,
    headers: Mapping[str, str] | None = None,
    **context: object,
) -> HTMLResponse:
    """A whole page (or an HTML fragment for a partial update) in the request's language.

    ``headers`` are added to (or override) the portal's security headers, e.g. a wider
    Content-Security-Policy for a page that needs it."""
    body = _render_to_string(request, template_name, context)
    response = HTMLResponse(body, status_code, headers={**PAGE_HEADERS, **(headers or {})})
    session.set_pre_session_cookie(request, response)
    return response


def render_fragment(request: Request, template_name: str, **context: object) -> Markup:
    """A template rendered to safe markup, to embed in another page (e.g. a home-page section)."""
    return Markup(_render_to_string(request, template_name, context))  # autoescaped template output
