"""Printed and displayed words of reports and the verification page, in zh-CN and en.

Reports are printed documents: their words are fixed per locale here rather than translated at
request time, so a PDF issued today reads the same when re-rendered for a check next year.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

LOCALES = ("zh-CN", "en")

LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "patient": "患者信息",
        "name": "姓名",
        "gender": "性别",
        "age": "年龄",
        "identifier": "病历号",
        "request": "申请信息",
        "question": "会诊目的",
        "requester_institution": "申请机构",
        "requester_doctor": "申请医生",
        "requested": "申请日期",
        "opinion": "会诊意见",
        "impression": "诊断意见",
        "recommendations": "处理建议",
        "follow_up": "随访建议",
        "free_text": "补充说明",
        "amendment": "更正说明",
        "signatures": "电子签名",
        "signer": "签名医师",
        "title": "职称",
        "institution": "机构",
        "signed_at": "签名时间",
        "key_id": "密钥标识",
        "verify": "报告核验",
        "verify_hint": "扫描二维码或访问以下网址，核验本报告的真实性与完整性：",
        "document_no": "报告编号",
        "colon": "：",
        "issued": "签发时间",
        "page": "第 {page} 页 / 共 {pages} 页",
        "signed_electronically": "本报告经电子签名，签名有效性可在线核验。",
        "age_format": "{age}岁",
        "male": "男",
        "female": "女",
        "other": "其他",
        "unknown": "未知",
        # verification page
        "verify_title": "医疗报告真伪核验",
        "authentic": "真实有效：报告由下列医师电子签名，签名验证通过，内容未被篡改。",
        "superseded": "该报告已被更正后的新版本取代，请以新版本为准。",
        "superseded_by": "新版本核验地址",
        "withdrawn": "该报告已被签发机构撤回，不再有效。",
        "not_authentic": "核验失败：签名无法验证，请勿采信此报告，并联系签发机构。",
        "not_found": "未找到该报告。请核对网址或二维码；如有疑问，请联系签发机构。",
        "report_title": "报告名称",
        "issuer": "签发机构",
        "sha256": "文件 SHA-256",
        "size": "文件大小",
        "bytes": "字节",
        "check_file": "核对纸质件对应的 PDF 文件",
        "check_file_hint": "上传您收到的 PDF 文件，检查它是否与签发的文件完全一致。",
        "upload": "上传核对",
        "file_matches": "文件一致：上传的文件与签发的报告文件逐字节相同。",
        "file_differs": "文件不一致：上传的文件与签发的报告文件不同，可能已被修改。",
        "uploaded_sha256": "上传文件 SHA-256",
        "privacy": "为保护患者隐私，本页面不显示任何患者身份信息。",
        "status": "状态",
    },
    "en": {
        "patient": "Patient",
        "name": "Name",
        "gender": "Gender",
        "age": "Age",
        "identifier": "Record no.",
        "request": "Request",
        "question": "Question",
        "requester_institution": "Requesting institution",
        "requester_doctor": "Requesting doctor",
        "requested": "Requested on",
        "opinion": "Opinion",
        "impression": "Impression / diagnosis",
        "recommendations": "Recommendations",
        "follow_up": "Follow-up",
        "free_text": "Comments",
        "amendment": "Amendment",
        "signatures": "Electronic signatures",
        "signer": "Signed by",
        "title": "Title",
        "institution": "Institution",
        "signed_at": "Signed at",
        "key_id": "Key id",
        "verify": "Verification",
        "verify_hint": "Scan the QR code or open this address to check that this report is authentic and unaltered:",
        "document_no": "Document no.",
        "colon": ": ",
        "issued": "Issued",
        "page": "Page {page} of {pages}",
        "signed_electronically": "This report is signed electronically; the signature can be verified online.",
        "age_format": "{age} years",
        "male": "Male",
        "female": "Female",
        "other": "Other",
        "unknown": "Unknown",
        "verify_title": "Medical report verification",
        "authentic": "Authentic: the report was signed electronically by the doctors below, "
        "the signature is valid and the content is unaltered.",
        "superseded": "This report was replaced by an amended version; rely on the new version.",
        "superseded_by": "Verify the new version at",
        "withdrawn": "The issuing institution withdrew this report; it is no longer valid.",
        "not_authentic": "Verification failed: the signature cannot be verified. Do not rely on this report; "
        "contact the issuing institution.",
        "not_found": "No such report. Check the address or QR code, or contact the issuing institution.",
        "report_title": "Report",
        "issuer": "Issued by",
        "sha256": "File SHA-256",
        "size": "File size",
        "bytes": "bytes",
        "check_file": "Check the PDF file of a paper copy",
        "check_file_hint": "Upload the PDF you received to check that it is exactly the file that was issued.",
        "upload": "Check file",
        "file_matches": "The file matches: it is byte for byte the issued report file.",
        "file_differs": "The file does not match the issued report file; it may have been altered.",
        "uploaded_sha256": "Uploaded file SHA-256",
        "privacy": "To protect patient privacy this page shows no patient identity.",
        "status": "Status",
    },
}

DEFAULT_TIMEZONE = "Asia/Shanghai"


def labels(locale: str) -> dict[str, str]:
    return LABELS["en" if locale.lower().startswith("en") else "zh-CN"]


def local_time(dt: datetime | None, timezone: str = DEFAULT_TIMEZONE) -> str:
    """A timestamp as a reader of a printed report expects it: local time with its UTC offset."""
    if dt is None:
        return ""
    local = dt.astimezone(ZoneInfo(timezone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:]})"
