"""Notification: channels, the one-line subject, SMS text cut to a sane length."""

from __future__ import annotations

import pytest

from telemed.notify import SMS_MAX_CHARS, Notification, Recipient

PATIENT = Recipient("p-zhang", "张伟", "zhangwei@example.cn", "13812345678")


def test_unknown_channel_is_refused_when_the_notification_is_made():
    with pytest.raises(ValueError, match="fax"):
        Notification("consultation.scheduled", PATIENT, "会诊", "正文", channels=("email", "fax"))


def test_subject_is_folded_to_one_line():
    n = Notification("x", PATIENT, "会诊已安排\r\nBcc: victim@example.com", "正文")
    assert n.subject == "会诊已安排 Bcc: victim@example.com"


def test_short_sms_is_body_and_link():
    n = Notification("x", PATIENT, "主题", "您的会诊已安排在\n明天上午九点。", link="https://t.example/c/1")
    assert n.sms_text() == "您的会诊已安排在 明天上午九点。 https://t.example/c/1"


def test_long_sms_is_cut_and_keeps_the_link_whole():
    link = "https://telemed.example/portal/consultations/0123456789abcdef"
    n = Notification("x", PATIENT, "主题", "远程会诊" * 100, link=link)
    text = n.sms_text()
    assert len(text) == SMS_MAX_CHARS
    assert text.endswith("… " + link)


def test_a_link_too_long_for_an_sms_is_left_out():
    n = Notification("x", PATIENT, "主题", "会诊" * 100, link="https://t.example/" + "a" * 200)
    text = n.sms_text()
    assert len(text) == SMS_MAX_CHARS and "https://" not in text and text.endswith("…")
