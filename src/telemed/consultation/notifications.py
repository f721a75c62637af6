"""Who hears about a consultation step, and what they read: Notices become outbox notifications.

Practitioners are reached at the email and mobile number of their ``Practitioner.telecom``; a
role at an institution (the centre's QC or triage desk) at the institution's own telecom, the
duty phone and mailbox a centre staffs around the clock. The texts are Chinese, the language of
the network's staff; the link opens the case in the portal.
"""

from __future__ import annotations

from telemed.consultation.service import Notice
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import TelemedError
from telemed.notify import Notification, Outbox, Recipient

TEXTS = {
    "submit": ("新的会诊申请待质控", "会诊申请 {number} 已提交，请进行质控审核。"),
    "return": ("会诊申请被退回修改", "会诊申请 {number} 被退回修改：{reason}"),
    "accept": ("会诊申请已通过质控", "会诊申请 {number} 已通过质控，等待分诊。"),
    "assign": ("您有新的会诊任务", "您被分配为会诊 {number} 的会诊专家，请查看病历资料。"),
    "decline": ("会诊需要重新分诊", "专家拒绝了会诊 {number}：{reason}"),
    "schedule": ("会诊已排期", "会诊 {number} 已安排，请按时进入虚拟会诊室。"),
    "report-ready": ("会诊报告已签发", "会诊 {number} 的报告已签发，请查看并确认。"),
    "cancel": ("会诊已取消", "会诊 {number} 已取消：{reason}"),
    "withdraw": ("会诊申请已撤回", "会诊申请 {number} 已撤回：{reason}"),
    "overdue": ("会诊超时提醒", "会诊 {number} 已超过时限，请尽快处理。"),
}


def _telecom(resource: dict) -> tuple[str | None, str | None]:
    email = phone = None
    for t in resource.get("telecom", []):
        if t.get("system") == "email" and not email:
            email = t.get("value")
        if t.get("system") in ("phone", "sms") and not phone and (t.get("use") == "mobile" or t.get("system") == "sms"):
            phone = t.get("value")
    return email, phone


def _recipient(repo: Repository, rt: str, id_: str) -> Recipient | None:
    try:
        r = repo.read(rt, id_).resource
    except TelemedError:
        return None
    email, phone = _telecom(r)
    if not (email or phone):
        return None
    name = r.get("name")
    if isinstance(name, list):
        name = (name[0] if name else {}).get("text", id_)
    return Recipient(id_ if rt == "Practitioner" else None, name or id_, email, phone)


def enqueue(repo: Repository, outbox: Outbox, notices: list[Notice], base_url: str) -> int:
    """Queue the notices' messages in the caller's transaction; returns how many were queued."""
    queued = 0
    for n in notices:
        subject, body = TEXTS.get(n.kind, ("会诊通知", "会诊 {number} 有新的进展。"))
        number = n.consultation
        try:
            sr = repo.read("ServiceRequest", n.consultation).resource
            number = sr["identifier"][0]["value"]
        except TelemedError:
            pass
        text = body.format(number=number, reason=n.reason or "")
        link = f"{base_url.rstrip('/')}/portal/consultations/{n.consultation}"
        recipients = [_recipient(repo, "Practitioner", p) for p in n.practitioners if p]
        if n.organization:
            recipients.append(_recipient(repo, "Organization", n.organization))
        for r in recipients:
            if r is not None:
                outbox.enqueue(repo.conn, Notification(f"consultation.{n.kind}", r, subject, text, link))
                queued += 1
    return queued


def practitioner_ids(notices: list[Notice]) -> set[str]:
    return {p for n in notices for p in n.practitioners}
