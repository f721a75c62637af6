"""The pages of ``/oauth/authorize`` (Chinese by default, English with ``lang=en``): the sign-in
form, the patient picker of a standalone patient launch, and the error page. Self-contained HTML
(no portal templates: identity sits below the portal), sent with headers that forbid framing.
"""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

from telemed.kernel.errors import Category, TelemedError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}

TEXT = {
    "zh": {
        "title": "登录", "intro": "应用 {app} 请求访问您的数据：", "username": "用户名", "password": "密码",
        "code": "动态验证码", "code_hint": "已启用两步验证时填写", "submit": "登录",
        "bad_request": "无效的授权请求", "expired": "页面已过期，请返回应用重新登录。",
        "failed": "用户名、密码或验证码错误", "code_required": "请输入动态验证码",
        "locked": "账户因多次登录失败已被锁定，请稍后再试",
        "enroll": "请先在平台内完成两步验证设置，再授权第三方应用",
        "throttled": "来自您所在网络的登录失败次数过多，请 {minutes} 分钟后再试。",
        "pick_title": "选择患者", "pick_intro": "应用 {app} 将只能访问您所选患者的数据。",
        "pick_search": "按姓名查找", "pick_find": "查找", "pick_submit": "授权访问该患者",
        "pick_none": "没有找到您有权查看的患者。", "pick_id": "或输入患者编号",
        "pick_unknown": "找不到该患者，或您无权查看该患者。",
    },
    "en": {
        "title": "Sign in", "intro": "The application {app} asks to access your data:", "username": "User name",
        "password": "Password", "code": "Verification code", "code_hint": "if two-factor authentication is on",
        "submit": "Sign in", "bad_request": "Invalid authorization request",
        "expired": "This page has expired; go back to the application and sign in again.",
        "failed": "Invalid user name, password or code", "code_required": "A verification code is required",
        "locked": "The account is locked after repeated failed logins; try again later",
        "enroll": "Set up two-factor authentication in the platform before authorizing applications",
        "throttled": "Too many failed sign-ins from your network. Try again in {minutes} minutes.",
        "pick_title": "Choose a patient",
        "pick_intro": "The application {app} will see only the chosen patient's data.",
        "pick_search": "Find by name", "pick_find": "Find", "pick_submit": "Allow access to this patient",
        "pick_none": "No patient you may see was found.", "pick_id": "or enter a patient id",
        "pick_unknown": "The patient is unknown or you may not see them.",
    },
}  # fmt: skip


def lang(params: dict[str, str]) -> str:
    return "en" if params.get("lang") == "en" else "zh"


def page(lang: str, body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    t = TEXT[lang]
    doc = (
        f'<!DOCTYPE html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{t["title"]}</title>'
        "<style>body{font-family:sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}"
        "label{display:block;margin-top:1rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
        "input[type=radio]{width:auto}"
        "button{margin-top:1.5rem;padding:.5rem 2rem}.error{color:#b00020}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(doc, status, headers={**PAGE_HEADERS, **(headers or {})})


def error_page(lang: str, message: str, status: int) -> HTMLResponse:
    t = TEXT[lang]
    return page(lang, f'<h1>{t["bad_request"]}</h1><p class="error">{html.escape(message)}</p>', status)


def _hidden(params: dict[str, str], csrf: str) -> str:
    e = html.escape
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in params.items())
    return fields + f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'


def login_page(
    lang: str, app: str, scopes: list[str], params: dict[str, str], csrf: str, error: str | None = None,
    status: int = 200, headers: dict[str, str] | None = None,
) -> HTMLResponse:  # fmt: skip
    t = TEXT[lang]
    e = html.escape
    listed = "".join(f"<li><code>{e(s)}</code></li>" for s in scopes)
    problem = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = (
        f"<h1>{t['title']}</h1><p>{e(t['intro'].format(app=app))}</p><ul>{listed}</ul>{problem}"
        f'<form method="post" action="/oauth/authorize">{_hidden(params, csrf)}'
        f'<label for="username">{t["username"]}</label>'
        '<input id="username" name="username" autocomplete="username" maxlength="64" required autofocus>'
        f'<label for="password">{t["password"]}</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" maxlength="256" required>'
        f'<label for="code">{t["code"]} <small>({t["code_hint"]})</small></label>'
        '<input id="code" name="code" autocomplete="one-time-code" inputmode="numeric" maxlength="32">'
        f'<button type="submit">{t["submit"]}</button></form>'
    )
    return page(lang, body, status, headers)


def picker_page(
    lang: str, app: str, params: dict[str, str], csrf: str, proof: str, patients: list[tuple[str, str]],
    name: str = "", error: str | None = None, status: int = 200,
) -> HTMLResponse:  # fmt: skip
    """The patient picker: a search by name (posts back with the proof) and the choice."""
    t = TEXT[lang]
    e = html.escape
    hidden = _hidden(params, csrf) + f'<input type="hidden" name="launch_proof" value="{e(proof)}">'
    problem = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    radios = [
        f'<label><input type="radio" name="patient" value="{e(pid)}"{" checked" if i == 0 else ""}> {e(label)}</label>'
        for i, (pid, label) in enumerate(patients)
    ]
    options = "".join(radios) or f"<p>{t['pick_none']}</p>"
    body = (
        f"<h1>{t['pick_title']}</h1><p>{e(t['pick_intro'].format(app=app))}</p>{problem}"
        f'<form method="post" action="/oauth/authorize">{hidden}'
        f'<label for="patient_name">{t["pick_search"]}</label>'
        f'<input id="patient_name" name="patient_name" value="{e(name)}" maxlength="64">'
        f'<button type="submit" name="action" value="find">{t["pick_find"]}</button></form>'
        f'<form method="post" action="/oauth/authorize">{hidden}{options}'
        f'<label for="patient_id">{t["pick_id"]}</label>'
        '<input id="patient_id" name="patient_id" maxlength="64">'
        f'<button type="submit" name="action" value="choose">{t["pick_submit"]}</button></form>'
    )
    return page(lang, body, status)


def login_message(lang: str, exc: TelemedError) -> str:
    """A refused sign-in as the page says it."""
    t = TEXT[lang]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return t["throttled"].format(minutes=max(1, -(-retry_after // 60)))
    if exc.message.startswith("Two-factor enrollment"):
        return t["enroll"]
    if exc.category is Category.FORBIDDEN:
        return t["locked"]
    return t["code_required"] if "two-factor code" in exc.message else t["failed"]
