"""The reading workflow's notices as telemed.notify messages (portal notice, e-mail, SMS), queued in
the caller's unit of work (the transactional outbox)."""

from __future__ import annotations

from telemed.fhir.store.repository import Repository
from telemed.imaging.reading import service as s
from telemed.notify import Notification, Outbox, Recipient

TEXTS = {
    "new-routine": ("新的远程影像阅片申请", "远程影像 {number} 已提交，请认领阅片。"),
    "new-urgent": ("【加急】新的远程影像阅片申请", "加急远程影像 {number} 已提交，请尽快认领阅片。"),
    "new-stat": ("【急诊】新的远程影像阅片申请", "急诊远程影像 {number} 已提交，请立即认领阅片。"),
    "released": ("远程影像退回待认领", "远程影像 {number} 已退回工作列表，请重新认领。"),
    "report-ready": ("影像诊断报告已签发", "远程影像 {number} 的诊断报告已签发，请查看。"),
    "amended": ("影像诊断报告已修订", "远程影像 {number} 的诊断报告已修订：{text}"),
    "cancel": ("远程影像阅片已取消", "远程影像 {number} 已取消：{text}"),
    "critical": ("【危急值】影像危急值通知", "远程影像 {number} 发现危急值：{text}。请立即登录确认并处理。"),
    "critical-overdue": ("【危急值】尚未确认", "远程影像 {number} 的危急值已 {text} 分钟未确认，请立即确认并处理。"),
}


def _contact(resource: dict) -> tuple[str | None, str | None]:
    email = phone = None
    for t in resource.get("telecom", []):
        if t.get("system") == "email" and not email:
            email = t.get("value")
        if t.get("system") in ("phone", "sms") and not phone:
            phone = t.get("value")
    return email, phone


def enqueue(repo: Repository, outbox: Outbox, notices: list[s.Notice], base_url: str) -> int:
    """Queue the notices' portal notices, e-mails and text messages in the caller's transaction."""
    queued = 0
    for n in notices:
        subject, body = TEXTS.get(n.kind, ("远程影像通知", "远程影像 {number} 有新的进展。"))
        sr = s.read(repo, "ServiceRequest", n.reading)
        number = sr.resource["identifier"][0]["value"] if sr is not None else n.reading
        text = body.format(number=number, text=n.text or "")
        link = f"{base_url.rstrip('/')}/portal/reading/{n.reading}"
        recipients: list[Recipient] = []
        for p in n.practitioners:
            res = s.read(repo, "Practitioner", p)
            email, phone = _contact(res.resource) if res else (None, None)
            recipients.append(Recipient(p, s.name_of(res.resource) if res else p, email, phone))
        if n.organization:
            org = s.read(repo, "Organization", n.organization)
            email, phone = _contact(org.resource) if org else (None, None)
            if email or phone:
                recipients.append(Recipient(None, s.name_of(org.resource), email, phone))
        for r in recipients:
            outbox.enqueue(repo.conn, Notification(f"imaging.{n.kind}", r, subject, text, link))
            queued += 1
    return queued
