"""Email over a real SMTP server (aiosmtpd on a free port): MIME, UTF-8, Message-ID, TLS and AUTH."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import job as t_job
from telemed.notify import DeliveryRefused, Notification, Recipient, SmtpSender
from telemed.notify.email import compose, message_id, parse_smtp_url
from tests.conftest import free_port
from tests.notify.conftest import MAIL_FROM, SmtpServer

DOCTOR = Recipient("d-li", "李医生", "li.doctor@hospital.example", None)


def _enqueue(env, notification: Notification) -> str:
    with unit_of_work(env.services.engine) as conn:
        return env.services.outbox.enqueue(conn, notification)


def _deliveries(env, notification_id: str):
    with unit_of_work(env.services.engine, write=False) as conn:
        return env.services.outbox.deliveries(conn, notification_id)


def test_delivered_once_with_chinese_subject_body_and_a_stable_message_id(env):
    nid = _enqueue(
        env,
        Notification(
            "consultation.requested",
            DOCTOR,
            "新的会诊申请：张伟（心内科）",
            "您好，李医生：\n县医院申请心内科远程会诊，请及时处理。",
            link="https://telemed.example/portal/consultations/42",
        ),
    )
    env.services.jobs.tick()
    env.services.jobs.tick()  # nothing left to do: still one message

    assert len(env.inbox.messages) == 1
    msg = env.inbox.messages[0]
    [delivery] = _deliveries(env, nid)
    assert delivery.channel == "email" and delivery.status == "done" and delivery.attempts == 1
    assert msg["Message-ID"] == f"<{delivery.job_id}@telemed.example>" == delivery.provider_id
    assert delivery.sent_at == env.clock.now().isoformat()
    assert msg["Subject"] == "新的会诊申请：张伟（心内科）"
    assert msg["To"].addresses[0].display_name == "李医生"
    assert msg["To"].addresses[0].addr_spec == "li.doctor@hospital.example"
    assert msg["From"].addresses[0].display_name == "Telemed 远程医疗"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    # (text lines end in CRLF on the wire, RFC 5322 2.3; base64 keeps them)
    assert msg.get_content().replace("\r\n", "\n") == (
        "您好，李医生：\n县医院申请心内科远程会诊，请及时处理。\n\nhttps://telemed.example/portal/consultations/42\n"
    )
    assert env.inbox.envelopes == [("noreply@telemed.example", ["li.doctor@hospital.example"])]


def test_refused_mailbox_fails_at_once(env):
    env.inbox.refuse = True
    nid = _enqueue(env, Notification("x", DOCTOR, "主题", "正文"))
    env.services.jobs.run_one()

    [delivery] = _deliveries(env, nid)
    assert delivery.status == "failed" and delivery.attempts == 1
    assert "550" in delivery.error and "No such mailbox" in delivery.error


def test_invalid_address_fails_at_once(env):
    nid = _enqueue(env, Notification("x", Recipient(None, "某人", "not an address", None), "主题", "正文"))
    env.services.jobs.run_one()
    [delivery] = _deliveries(env, nid)
    assert delivery.status == "failed" and "invalid email address" in delivery.error


def test_a_crash_after_the_sent_record_does_not_send_again(env):
    nid = _enqueue(env, Notification("x", DOCTOR, "报告已发布", "正文"))
    env.services.jobs.run_one()
    [delivery] = _deliveries(env, nid)
    # As if the worker died after recording sent_at but before marking the job done:
    with unit_of_work(env.services.engine) as conn:
        conn.execute(
            update(t_job)
            .where(t_job.c.id == delivery.job_id)
            .values(status="running", worker="dead-host:1", heartbeat=datetime(2026, 1, 1, tzinfo=UTC))
        )
    env.services.jobs.tick()  # requeues the stale job and runs it again

    [again] = _deliveries(env, nid)
    assert again.status == "done" and again.attempts == 2 and again.sent_at == delivery.sent_at
    assert len(env.inbox.messages) == 1


def test_parse_smtp_urls():
    assert parse_smtp_url("smtp://mail.example") == parse_smtp_url("smtp://mail.example:25")
    s = parse_smtp_url("smtp+starttls://user%40corp:p%3Ass@mail.example")
    assert (s.host, s.port, s.security, s.username, s.password) == (
        "mail.example",
        587,
        "starttls",
        "user@corp",
        "p:ss",
    )
    s = parse_smtp_url("smtps://u:p@[::1]:2465")
    assert (s.host, s.port, s.security) == ("::1", 2465, "tls")
    with pytest.raises(ValueError, match="scheme"):
        parse_smtp_url("http://mail.example")
    with pytest.raises(ValueError, match="host"):
        parse_smtp_url("smtp://")


def test_message_id_uses_the_from_domain():
    assert message_id("abc", MAIL_FROM) == "<abc@telemed.example>"
    assert message_id("abc", "nobody") == "<abc@telemed>"


def test_compose_refuses_an_invalid_address():
    with pytest.raises(DeliveryRefused):
        compose(
            mail_from=MAIL_FROM,
            to="a@b@c",
            display_name="x",
            subject="s",
            body="b",
            link=None,
            message_id="<1@x>",
            date=datetime.now(UTC),
        )


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1, and a client context that trusts only it."""
    import ipaddress
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def _authenticator(logins):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"telemed", b"p@ss:w")
        logins.append(ok)
        return AuthResult(success=ok)

    return authenticate


def _mail(msg_id: str):
    return compose(
        mail_from=MAIL_FROM,
        to="ops@hospital.example",
        display_name="运维",
        subject="测试",
        body="正文",
        link=None,
        message_id=msg_id,
        date=datetime.now(UTC),
    )


def test_starttls_with_login(tmp_path):
    server_tls, client_tls = _self_signed(tmp_path)
    logins: list[bool] = []
    smtp = SmtpServer(
        free_port(),
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator(logins),
    )
    smtp.start()
    try:
        url = f"smtp+starttls://telemed:p%40ss%3Aw@127.0.0.1:{smtp.port}"
        assert SmtpSender(url, MAIL_FROM, tls_context=client_tls).send(_mail("<1@t>")) == "<1@t>"
        with pytest.raises(ssl.SSLCertVerificationError):  # the system trust store does not know this server
            SmtpSender(url, MAIL_FROM).send(_mail("<2@t>"))
    finally:
        smtp.stop()
    assert logins == [True]
    assert [m["Message-ID"] for m in smtp.inbox.messages] == ["<1@t>"]


def test_implicit_tls(tmp_path):
    server_tls, client_tls = _self_signed(tmp_path)
    smtp = SmtpServer(free_port(), ssl_context=server_tls)
    smtp.start()
    try:
        SmtpSender(f"smtps://127.0.0.1:{smtp.port}", MAIL_FROM, tls_context=client_tls).send(_mail("<3@t>"))
    finally:
        smtp.stop()
    assert smtp.inbox.messages[0]["Subject"] == "测试"
