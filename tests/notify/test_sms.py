"""Text messages through the demo log sink."""

from __future__ import annotations

import logging

from telemed.db.engine import unit_of_work
from telemed.notify import SMS_MAX_CHARS, LogSmsGateway, Notification, Recipient
from telemed.notify.sms import mask


def test_sms_goes_to_the_log_sink_with_the_number_masked(env, caplog):
    recipient = Recipient("p-chen", "陈静", None, "13812345678")
    link = "https://telemed.example/p/7"
    with unit_of_work(env.services.engine) as conn:
        nid = env.services.outbox.enqueue(
            conn, Notification("consultation.scheduled", recipient, "会诊已安排", "您的远程会诊" * 40, link=link)
        )
    with caplog.at_level(logging.INFO, logger="telemed.sms"):
        env.services.jobs.tick()

    [sms] = env.services.sms.sent
    assert sms.phone == "13812345678"
    assert len(sms.text) == SMS_MAX_CHARS and sms.text.endswith(link)
    [record] = [r for r in caplog.records if r.name == "telemed.sms"]
    assert "138****5678" in record.getMessage() and "13812345678" not in record.getMessage()
    assert sms.provider_id in record.getMessage()
    with unit_of_work(env.services.engine, write=False) as conn:
        [delivery] = env.services.outbox.deliveries(conn, nid)
    assert delivery.channel == "sms" and delivery.status == "done" and delivery.provider_id == sms.provider_id
    assert env.inbox.messages == []


def test_the_sink_keeps_only_the_last_messages():
    sink = LogSmsGateway(keep=2)
    ids = [sink.send("13800000000", f"第{i}条") for i in range(3)]
    assert [s.provider_id for s in sink.sent] == ids[1:]
    assert len(set(ids)) == 3


def test_mask():
    assert mask("+8613812345678") == "+86****5678"
    assert mask("12345") == "****"
