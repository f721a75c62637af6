"""The portal's languages: gettext catalogues (Chinese by default, English on request) and the
language switch.

Catalogues are ``.po`` files under ``portal/locale/<locale>/LC_MESSAGES/``, one per domain
(``portal.po``, ``consultation.po`` ...), English msgids. At start-up every ``.po`` file of a
language is compiled in memory and merged into one :class:`babel.support.Translations`, so no
compiled ``.mo`` file is kept in the repository and each page module owns its own file.

The language is the ``lang`` cookie (set by ``GET /portal/lang/{code}``) and nothing else: the
platform's users are in China and expect Chinese whatever their browser says.

Messages take ``%(name)s`` placeholders, in templates (``{{ _("Hello %(name)s", name=n) }}``,
Jinja's "newstyle" gettext) and in Python (``t(request, "Hello %(name)s", name=n)``).
"""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path
from typing import Protocol

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from telemed.kernel.errors import Category
from telemed.portal.exceptions import PortalError

log = logging.getLogger("telemed.portal")

SUPPORTED = ("zh-CN", "en")
DEFAULT = "zh-CN"
COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
LOCALE_DIR = Path(__file__).parent / "locale"
# Each language's own name for itself (never translated), for the switch in the header.
AUTONYMS = {"zh-CN": "中文", "en": "English"}
_BABEL_LOCALE = {"zh-CN": "zh_CN", "en": "en"}


class Gettext(Protocol):
    def __call__(self, msgid: str, /, **params: object) -> str: ...


def babel_locale(lang: str) -> str:
    """``zh-CN`` -> ``zh_CN``: the locale name for babel's dates, numbers and catalogue folders."""
    return _BABEL_LOCALE.get(lang, _BABEL_LOCALE[DEFAULT])


def babel_locale_object(lang: str) -> Locale:
    """The parsed babel ``Locale`` for a language, parsed once: ``Locale.parse`` per formatted date
    cost about a millisecond each, which a page of 50 rows with three dates each felt."""
    loc = _LOCALES.get(lang)
    if loc is None:
        loc = _LOCALES[lang] = Locale.parse(babel_locale(lang))
    return loc


_LOCALES: dict[str, Locale] = {}


def _compile(path: Path, locale: str) -> Translations:
    with path.open("rb") as f:
        catalog = read_po(f, locale=locale, domain=path.stem)
    buf = BytesIO()
    write_mo(buf, catalog)  # fuzzy entries are left out, as msgfmt does
    buf.seek(0)
    return Translations(buf, domain=path.stem)


def load_language(lang: str, folder: Path = LOCALE_DIR) -> NullTranslations:
    """Every ``*.po`` of ``lang`` in ``folder``, merged (a later domain wins on a repeated msgid)."""
    locale = babel_locale(lang)
    merged: Translations | None = None
    for path in sorted((folder / locale / "LC_MESSAGES").glob("*.po")):
        compiled = _compile(path, locale)
        if merged is None:
            merged = compiled
        else:
            merged.merge(compiled)
    return merged if merged is not None else NullTranslations()


class Catalogues:
    """All languages' merged catalogues, loaded once per app (``install``) and kept on ``app.state``."""

    def __init__(self, folder: Path = LOCALE_DIR):
        self._by_lang = {lang: load_language(lang, folder) for lang in SUPPORTED}

    def get(self, lang: str) -> NullTranslations:
        return self._by_lang.get(lang) or self._by_lang[DEFAULT]


def lang_of(request: Request) -> str:
    """The request's language: the ``lang`` cookie when it names a supported language, else zh-CN."""
    value = request.cookies.get(COOKIE, "")
    return value if value in SUPPORTED else DEFAULT


def translations_for(request: Request) -> NullTranslations:
    return request.app.state.portal.catalogues.get(lang_of(request))


def make_gettext(translations: NullTranslations) -> Gettext:
    def gettext(msgid: str, /, **params: object) -> str:
        text = translations.gettext(msgid)
        return text % params if params else text

    return gettext


def gettext_for(request: Request) -> Gettext:
    """``_ = gettext_for(request)``; then ``_("Saved")`` or ``_("%(n)s files", n=3)``."""
    return make_gettext(translations_for(request))


def t(request: Request, msgid: str, /, **params: object) -> str:
    """One message in the request's language (msgid is English; ``%(name)s`` placeholders)."""
    return gettext_for(request)(msgid, **params)


def safe_next(value: str | None, default: str = "/portal/") -> str:
    """A redirect target from a query/form parameter: a path of this portal, nothing else
    (no other host, no scheme, no ``//evil`` or ``/\\evil`` tricks)."""
    if not value or not value.startswith("/portal") or value.startswith("//") or "\\" in value:
        return default
    if any(ch in value for ch in "\r\n\t") or value.startswith("/portal/static"):
        return default
    return value


router = APIRouter()


@router.get("/portal/lang/{code}", include_in_schema=False)
def switch_language(code: str, request: Request, next_: str | None = Query(None, alias="next")) -> RedirectResponse:
    if code not in SUPPORTED:
        raise PortalError(Category.NOT_FOUND, "This language is not available")
    response = RedirectResponse(safe_next(next_), 303)
    secure = (request.app.state.services.settings.base_url or "").startswith("https")
    response.set_cookie(COOKIE, code, max_age=COOKIE_MAX_AGE, path="/", samesite="lax", secure=secure)
    return response
