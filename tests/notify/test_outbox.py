"""The outbox: jobs written in the caller's transaction, one per channel the recipient can be reached on."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from telemed.db.engine import unit_of_work
from telemed.db.schema import job as t_job
from telemed.notify import EMAIL_JOB, SMS_JOB, Notification, Outbox, Recipient, SmtpSender


def _enqueue(env, notification: Notification, outbox: Outbox | None = None) -> str:
    with unit_of_work(env.services.engine) as conn:
        return (outbox or env.services.outbox).enqueue(conn, notification)


def _channels(env, notification_id: str) -> list[str]:
    with unit_of_work(env.services.engine, write=False) as conn:
        return [d.channel for d in env.services.outbox.deliveries(conn, notification_id)]


def test_the_app_wires_both_channels_from_settings(env):
    services = env.services
    assert isinstance(services.email, SmtpSender)
    assert services.outbox.channels == ("email", "sms")
    assert {EMAIL_JOB, SMS_JOB} <= services.jobs.handlers.keys()


def test_nothing_is_sent_when_the_business_transaction_rolls_back(env):
    recipient = Recipient("p-wang", "王芳", "wangfang@example.cn", "13900001111")
    with pytest.raises(RuntimeError):
        with unit_of_work(env.services.engine) as conn:
            nid = env.services.outbox.enqueue(conn, Notification("consultation.scheduled", recipient, "会诊", "正文"))
            raise RuntimeError("the consultation could not be scheduled")

    assert env.services.jobs.run_one() is False
    assert _channels(env, nid) == []
    assert env.inbox.messages == [] and list(env.services.sms.sent) == []


def test_one_job_per_channel_the_recipient_has_an_address_for(env):
    both = Recipient("p-1", "患者甲", "a@example.cn", "13800000001")
    phone_only = Recipient("p-2", "患者乙", None, "13800000002")
    email_only = Recipient("p-3", "患者丙", "c@example.cn", "")
    nobody = Recipient(None, "无联系方式", None, None)

    assert _channels(env, _enqueue(env, Notification("x", both, "主题", "正文"))) == ["email", "sms"]
    assert _channels(env, _enqueue(env, Notification("x", phone_only, "主题", "正文"))) == ["sms"]
    assert _channels(env, _enqueue(env, Notification("x", email_only, "主题", "正文"))) == ["email"]
    assert _channels(env, _enqueue(env, Notification("x", nobody, "主题", "正文"))) == []
    assert _channels(env, _enqueue(env, Notification("x", both, "主题", "正文", channels=("sms",)))) == ["sms"]


def test_a_channel_without_a_sender_is_not_queued(env):
    outbox = Outbox(env.services.jobs, cipher=env.services.cipher, channels=("sms",))
    recipient = Recipient("p-1", "患者甲", "a@example.cn", "13800000001")
    assert _channels(env, _enqueue(env, Notification("x", recipient, "主题", "正文"), outbox)) == ["sms"]


def test_addresses_and_texts_are_not_stored_in_clear(env):
    recipient = Recipient("p-zhao", "赵敏", "zhaomin@example.cn", "13712345678")
    nid = _enqueue(env, Notification("report.published", recipient, "检查报告已发布", "您的心电图报告已发布。"))
    with unit_of_work(env.services.engine, write=False) as conn:
        params = [
            row.params for row in conn.execute(select(t_job.c.params).where(t_job.c.kind.in_([EMAIL_JOB, SMS_JOB])))
        ]
    stored = repr(params)
    assert len(params) == 2 and all(p["notification"] == nid and p["sealed"].startswith("enc:") for p in params)
    for secret in ("zhaomin@example.cn", "13712345678", "赵敏", "心电图"):
        assert secret not in stored

    env.services.jobs.tick()
    assert env.inbox.messages[0]["Subject"] == "检查报告已发布"
    assert env.services.sms.sent[-1].phone == "13712345678"


def test_a_notification_whose_key_is_gone_fails_without_retries(env):
    recipient = Recipient("p-1", "患者甲", None, "13800000001")
    nid = _enqueue(env, Notification("x", recipient, "主题", "正文"))
    env.services.outbox.cipher = None  # as after the key was removed
    try:
        env.services.jobs.run_one()
    finally:
        env.services.outbox.cipher = env.services.cipher
    with unit_of_work(env.services.engine, write=False) as conn:
        [delivery] = env.services.outbox.deliveries(conn, nid)
    assert delivery.status == "failed" and "sealed" in delivery.error
