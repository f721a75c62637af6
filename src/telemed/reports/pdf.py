"""Printable signed reports: A4 PDF from an HTML template (WeasyPrint, CSS Paged Media).

The PDF is the human-readable rendering of a signed FHIR report. It carries a QR code (ISO/IEC
18004) and the address of the public verification page, so whoever holds a paper copy can check
it. Chinese text is set in Noto Sans/Serif CJK SC (Debian ``fonts-noto-cjk``); WeasyPrint embeds
the subset of glyphs used.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path

import segno
from jinja2 import Environment, FileSystemLoader, select_autoescape

from telemed.reports.labels import DEFAULT_TIMEZONE, labels, local_time

TEMPLATES = Path(__file__).with_name("templates")
PRINT_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class PatientInfo:
    name: str
    gender: str | None = None  # FHIR administrative-gender code (male | female | other | unknown)
    age: int | str | None = None  # years, or a text such as "3个月"
    identifier: str | None = None  # the record number printed on the report


@dataclass(frozen=True)
class RequestInfo:
    question: str
    institution: str | None = None
    doctor: str | None = None
    requested: date | datetime | str | None = None


@dataclass(frozen=True)
class Opinion:
    impression: str
    recommendations: str | None = None
    follow_up: str | None = None
    free_text: str | None = None


@dataclass(frozen=True)
class SignerInfo:
    """A signer as printed. ``key_id`` None: the signature being made (``issue_signed_report`` fills it)."""

    name: str
    title: str | None = None  # professional title, e.g. 主任医师
    institution: str | None = None
    signed_at: datetime | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class Figure:
    """A drawing printed after the report on a page of its own (an ECG at paper scale). ``svg`` is SVG
    markup made by the domain's code (never user text: it is inserted unescaped), drawn at the size
    its ``width``/``height`` give in mm, so a scale drawn in mm stays true on paper."""

    caption: str
    svg: str
    landscape: bool = True


@dataclass(frozen=True)
class ReportDocument:
    institution: str  # the issuing institution, printed in the header
    title: str
    patient: PatientInfo
    request: RequestInfo
    opinion: Opinion
    signers: tuple[SignerInfo, ...] = ()
    amendment_note: str | None = None
    verification_url: str | None = None
    document_id: str | None = None
    issued: datetime | None = None
    locale: str = "zh-CN"  # or "en": the language of the printed labels
    timezone: str = DEFAULT_TIMEZONE
    # Further (heading, text) sections after the opinion: measurements of an ECG, the gross and
    # microscopic description of a pathology report.
    extra_sections: tuple[tuple[str, str], ...] = ()
    figures: tuple[Figure, ...] = ()


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _age(value: int | str | None, words: dict[str, str]) -> str:
    if isinstance(value, int):
        return words["age_format"].format(age=value)
    return _text(value)


def _requested(value: date | datetime | str | None, timezone: str) -> str:
    if isinstance(value, datetime):
        return local_time(value, timezone)
    if isinstance(value, date):
        return value.isoformat()
    return _text(value)


def qr_svg_data_uri(url: str) -> str:
    """The QR code of ``url`` as an SVG data URI (error correction M: survives a smudged print)."""
    return segno.make(url, error="m", micro=False).svg_data_uri(scale=4, border=2)


@cache
def environment() -> Environment:
    """Jinja2 templates of reports and the verification page (autoescaped HTML)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["paragraphs"] = lambda text: [p.strip() for p in _text(text).split("\n") if p.strip()]
    return env


def render_html(doc: ReportDocument) -> str:
    """The HTML the PDF is made from (also a print preview for the portal)."""
    words = labels(doc.locale)
    lang = "en" if doc.locale.lower().startswith("en") else "zh-CN"
    return (
        environment()
        .get_template("report.html")
        .render(
            doc=doc,
            t=words,
            lang=lang,
            gender=words.get(doc.patient.gender or "", _text(doc.patient.gender)),
            age=_age(doc.patient.age, words),
            requested=_requested(doc.request.requested, doc.timezone),
            issued=local_time(doc.issued, doc.timezone),
            signers=[(s, local_time(s.signed_at, doc.timezone)) for s in doc.signers],
            qr=qr_svg_data_uri(doc.verification_url) if doc.verification_url else None,
            page_label=words["page"].replace("{page}", '" counter(page) "').replace("{pages}", '" counter(pages) "'),
        )
    )


def _write_pdf(html: str, base_url: str) -> bytes:
    # Imported here: loading Pango and the font machinery costs every process that imports
    # telemed.reports (the CLI, each worker) time it only needs when a report is printed.
    from weasyprint import HTML

    return HTML(string=html, base_url=base_url).write_pdf()


_printer: ProcessPoolExecutor | None = None
_printer_lock = threading.Lock()


def _printer_pool() -> ProcessPoolExecutor:
    global _printer
    with _printer_lock:
        if _printer is None:
            # "spawn": forking a process that runs threads (the server's) may copy a held lock.
            _printer = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return _printer


def render_pdf(doc: ReportDocument) -> bytes:
    """The report as an A4 PDF.

    WeasyPrint lays a page out in Python for about half a second, holding the GIL: in the server's
    process every other request of that worker would wait for it. So the layout runs in a printer
    process of its own (started on first use and kept, so its fonts stay loaded)."""
    global _printer
    html = render_html(doc)
    try:
        return _printer_pool().submit(_write_pdf, html, str(TEMPLATES)).result(timeout=PRINT_TIMEOUT_SECONDS)
    except BrokenProcessPool:  # the printer died (killed, out of memory): a new one next time
        with _printer_lock:
            _printer = None
        return _write_pdf(html, str(TEMPLATES))
