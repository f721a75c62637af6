"""What portal pages raise besides TelemedError: a localizable error and a redirect.

Any :class:`~telemed.kernel.errors.TelemedError` raised under ``/portal`` becomes a localized
error page (``portal.errors``); its message is looked up in the catalogues, so a service's
English message shows translated when a catalogue has it. :class:`PortalError` is the explicit
form: its message is a msgid with ``%(name)s`` placeholders, filled after translation, and the
catalogue test finds it (``PortalError(Category.CONFLICT, "...", name=...)``).
"""

from __future__ import annotations

from telemed.kernel.errors import Category, Issue, TelemedError


class PortalError(TelemedError):
    def __init__(self, category: Category, msgid: str, /, issues: list[Issue] | None = None, **params: object):
        super().__init__(category, msgid % params if params else msgid, issues or [])
        self.msgid = msgid
        self.params = params


class PortalRedirect(Exception):
    """Leave this page for another one (303 See Other); ``errors.install`` makes the response."""

    def __init__(self, location: str):
        super().__init__(location)
        self.location = location
