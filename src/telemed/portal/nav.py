"""The main menu: entries registered by page modules, shown to the roles they name.

``register_nav(_("Consultations"), "/portal/consultations", roles={"requesting-doctor"}, order=20)``
at import time of a page module; the label is a msgid, translated when the menu is drawn
(the catalogue test extracts the first argument of ``register_nav``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class NavEntry:
    label: str  # an English msgid
    href: str
    roles: frozenset[str] | None  # None: every signed-in user
    order: int

    def visible_to(self, roles: frozenset[str]) -> bool:
        return self.roles is None or bool(self.roles & roles)

    def is_active(self, path: str) -> bool:
        if self.href == "/portal/":
            return path in ("/portal", "/portal/")
        return path == self.href or path.startswith(self.href.rstrip("/") + "/")


_entries: dict[str, NavEntry] = {}


def register_nav(label_msgid: str, href: str, roles: Iterable[str] | None = None, order: int = 100) -> NavEntry:
    """Add (or replace, by ``href``) a menu entry; ``roles`` None shows it to everyone signed in."""
    entry = NavEntry(label_msgid, href, frozenset(roles) if roles is not None else None, order)
    _entries[href] = entry
    return entry


def nav_for(roles: frozenset[str]) -> list[NavEntry]:
    return sorted((e for e in _entries.values() if e.visible_to(roles)), key=lambda e: (e.order, e.href))
