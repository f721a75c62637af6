"""Every message of the portal (templates and Python, the consultation pages' too) has a Chinese
translation, the translations keep their placeholders, and templates hold no text outside gettext."""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from jinja2.ext import babel_extract

import telemed.portal
from telemed.portal.i18n import LOCALE_DIR, load_language

PORTAL = Path(telemed.portal.__file__).parent
# gettext callables plus the portal's own helpers whose argument is a msgid:
# t(request, msgid), PortalError(category, msgid), register_nav(msgid, ...).
PY_KEYWORDS = {
    "_": None, "gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2), "N_": None,
    "t": (2,), "PortalError": (2,), "register_nav": (1,),
}  # fmt: skip
TEMPLATE_KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2)}


def template_files() -> list[Path]:
    return sorted(p for p in PORTAL.rglob("*.html") if "static" not in p.parts)


def python_files() -> list[Path]:
    return sorted(PORTAL.rglob("*.py"))


def _msgids(message) -> list[str]:
    """The literal msgids of one call (none when the argument is a variable: ``_(entry.label)``)."""
    if isinstance(message, str):
        return [message]
    return [m for m in message or () if isinstance(m, str) and m]  # (singular, plural)


def extracted() -> dict[str, list[str]]:
    """msgid -> where it is used."""
    found: dict[str, list[str]] = {}
    for path in python_files():
        for lineno, message, _comments, _context in extract_from_file("python", path, keywords=PY_KEYWORDS):
            for msgid in _msgids(message):
                found.setdefault(msgid, []).append(f"{path.relative_to(PORTAL)}:{lineno}")
    for path in template_files():
        options = {"extensions": "jinja2.ext.i18n", "trimmed": "false", "newstyle_gettext": "true"}
        with path.open("rb") as f:
            for lineno, _func, message, _comments in babel_extract(f, TEMPLATE_KEYWORDS, [], options):
                for msgid in _msgids(message):
                    found.setdefault(msgid, []).append(f"{path.relative_to(PORTAL)}:{lineno}")
    return found


def zh_catalogue():
    catalogues = sorted((LOCALE_DIR / "zh_CN" / "LC_MESSAGES").glob("*.po"))
    assert catalogues, "no zh_CN catalogue"
    merged = {}
    for path in catalogues:
        with path.open("rb") as f:
            catalog = read_po(f, locale="zh_CN")
        for message in catalog:
            if message.id:
                for msgid in [message.id] if isinstance(message.id, str) else message.id:  # with the plural
                    merged[msgid] = (path.name, catalog, message)
    return merged


def test_the_extraction_finds_messages():
    found = extracted()
    assert "Sign in" in found and "Home" in found  # a template's and register_nav's
    assert "The form has expired or did not come from this site; reload the page" in found  # PortalError's


def test_every_message_has_a_chinese_translation():
    catalogue = zh_catalogue()
    missing = []
    for msgid, places in sorted(extracted().items()):
        entry = catalogue.get(msgid)
        if entry is None:
            missing.append(f"{msgid!r} (used in {', '.join(places)})")
            continue
        message = entry[2]
        strings = message.string if isinstance(message.string, tuple | list) else [message.string]
        if message.fuzzy or not all(strings):
            missing.append(f"{msgid!r}: empty or fuzzy in {entry[0]}")
    assert not missing, "untranslated portal messages:\n" + "\n".join(missing)


def test_translations_keep_their_placeholders():
    problems = []
    for path in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/*.po")):
        with path.open("rb") as f:
            catalog = read_po(f, locale=path.parts[-3])
        for message, errors in catalog.check():
            problems += [f"{path.name}: {message.id!r}: {e}" for e in errors]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_catalogues_compile_and_merge(lang, tmp_path):
    """Each domain's .po is merged at start-up: a second file adds its messages."""
    folder = tmp_path / ("zh_CN" if lang == "zh-CN" else "en") / "LC_MESSAGES"
    folder.mkdir(parents=True)
    for name, msgid, text in (("a", "Alpha", "甲"), ("b", "Beta", "乙")):
        po = f'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\nmsgid "{msgid}"\nmsgstr "{text}"\n'
        (folder / f"{name}.po").write_text(po, encoding="utf-8")
    merged = load_language(lang, tmp_path)
    assert merged.gettext("Alpha") == "甲" and merged.gettext("Beta") == "乙"
    assert load_language(lang).gettext("Sign in") == ("登录" if lang == "zh-CN" else "Sign in")


# Blocks that fill an attribute from a child template ({% block body_class %}app{% endblock %}) hold names.
_CLASS_BLOCK = re.compile(r"{%-?\s*block\s+\w*class\w*\s*-?%}.*?{%-?\s*endblock.*?%}", re.S)
_JINJA = re.compile(r"{#.*?#}|{%.*?%}|{{.*?}}", re.S)
_TAG = re.compile(r"<[^>]*>", re.S)
_ENTITY = re.compile(r"&#?\w+;")
_NEUTRAL = re.compile(r"\b(?:[kKMG]B)\b")  # units read the same in both languages
_WORDS = re.compile(r"[A-Za-z\u3400-\u9fff]")


@pytest.mark.parametrize("path", template_files(), ids=lambda p: str(p.relative_to(PORTAL)))
def test_templates_hold_no_text_outside_gettext(path):
    """Text between tags must come from gettext (or data): a literal word would not be translated."""
    source = _CLASS_BLOCK.sub(" ", path.read_text(encoding="utf-8"))
    text = _ENTITY.sub(" ", _TAG.sub(" ", _JINJA.sub(" ", source)))
    stray = [line.strip() for line in _NEUTRAL.sub(" ", text).splitlines() if _WORDS.search(line)]
    assert not stray, f"untranslated text in {path.name}: {stray}"


def test_no_compiled_catalogues_are_kept():
    assert not list(LOCALE_DIR.rglob("*.mo"))


def test_po_files_parse(tmp_path):
    for path in LOCALE_DIR.glob("*/LC_MESSAGES/*.po"):
        with path.open("rb") as f:
            read_po(BytesIO(f.read()))
