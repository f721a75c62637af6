"""The printed report: A4 PDF with CJK text, signatures and a verification QR code."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from telemed.reports import Opinion, SignerInfo, render_html, render_pdf
from tests.reports.conftest import EXPERT_NAME, EXPERT_TITLE, IMPRESSION, PATIENT_NAME, document, pdf_fonts, pdf_text

URL = "https://telemed.example.cn/verify/5b0f8a2e-3c1d-4f7a-9e0b-2d6c1a8e4f31"
SIGNED = SignerInfo(EXPERT_NAME, EXPERT_TITLE, "河南省人民医院", datetime(2026, 3, 3, 6, 15, tzinfo=UTC), "kid-abc")


@pytest.fixture(scope="module", autouse=True)
def cjk_fonts():
    fc = shutil.which("fc-list")
    if fc is None or "Noto Sans CJK SC" not in subprocess.run([fc], capture_output=True, text=True).stdout:
        pytest.skip("Noto CJK fonts (Debian fonts-noto-cjk) are not installed: `make system-deps`")


def test_chinese_report(tmp_path):
    pdf = render_pdf(document(signers=(SIGNED,), verification_url=URL, document_id="5b0f8a2e"))
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    for expected in (PATIENT_NAME, IMPRESSION, EXPERT_NAME, EXPERT_TITLE, "患者信息", "会诊意见", "58岁", "女"):
        assert expected in text, expected
    assert "2026-03-03 14:15 (UTC+08:00)" in text  # signed at, Beijing time
    assert URL in text.replace("\n", "")
    fonts = pdf_fonts(pdf, tmp_path)
    assert "Noto-Sans-CJK-SC" in fonts  # the glyphs come from the CJK font, not tofu boxes


def test_english_labels_and_amendment_note():
    pdf = render_pdf(document(locale="en", signers=(SIGNED,), amendment_note="诊断更正：补充高血压病3级"))
    text = pdf_text(pdf)
    for expected in ("Patient", "Impression / diagnosis", "Amendment", "58 years", "Female", "补充高血压病3级"):
        assert expected in text, expected


def test_html_escapes_and_carries_the_qr_code():
    html = render_html(document(verification_url=URL, opinion=Opinion(impression="<b>x</b>")))
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'src="data:image/svg+xml' in html
    assert 'lang="zh-CN"' in html
