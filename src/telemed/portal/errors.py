"""Errors under ``/portal`` as localized pages (the portal's one place for it, as ``/api`` has
problem details and ``/fhir`` OperationOutcomes).

:func:`install` wraps the app's existing handlers and dispatches on the path: requests under
``/portal`` get a page in the user's language with the status of the error's category (404 for
anything unknown or out of scope, 403, 409 with the reason, 422 with the list of problems),
scripts calling portal URLs (``Accept: application/json``) get problem details with a localized
``detail``, and every other path keeps its handler unchanged. A stack trace never reaches a user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from telemed.kernel.errors import Category, TelemedError
from telemed.portal import session
from telemed.portal.exceptions import PortalError, PortalRedirect
from telemed.portal.i18n import Gettext, gettext_for, translations_for
from telemed.portal.web import render

log = logging.getLogger("telemed.portal")

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def is_portal(request: Request) -> bool:
    path = request.url.path
    return path == "/portal" or path.startswith("/portal/")


def _titles(_: Gettext) -> dict[int, tuple[str, str]]:
    """(heading, what it means) per HTTP status; the catalogue test reads these msgids here."""
    return {
        400: (_("The request is not valid"), _("Check what was entered and try again.")),
        401: (_("Please sign in"), _("Your session has ended. Sign in again to continue.")),
        403: (_("Access denied"), _("You do not have permission to do this.")),
        404: (_("Not found"), _("The page or record does not exist, or is not available to you.")),
        405: (_("Not allowed"), _("This action is not possible here.")),
        409: (_("Conflict"), _("The record was changed or is in a state that does not allow this.")),
        410: (_("No longer available"), _("The record has been removed.")),
        412: (_("Changed by someone else"), _("The record was changed meanwhile; reload it and try again.")),
        413: (_("Too large"), _("The upload is larger than the platform accepts.")),
        415: (_("Unsupported file type"), _("This kind of file is not accepted here.")),
        422: (_("Please correct the following"), _("Some of the information cannot be accepted.")),
        500: (_("Something went wrong"), _("An unexpected error occurred. It has been logged; try again later.")),
        503: (_("Service temporarily unavailable"), _("The platform is busy or under maintenance; try again shortly.")),
    }


def _localize(request: Request, message: str) -> str | None:
    """``message`` in the user's language when a catalogue knows it, else None."""
    translated = translations_for(request).gettext(message)
    return translated if translated != message else None


def _describe(request: Request, exc: TelemedError) -> tuple[str | None, str | None, list[str]]:
    """(message in the user's language or None, untranslated technical detail or None, problems)."""
    _ = gettext_for(request)
    if isinstance(exc, PortalError):
        message, detail = _(exc.msgid, **exc.params), None
    else:
        message = _localize(request, exc.message)
        detail = None if message is not None else exc.message
    problems = []
    if exc.category is Category.UNPROCESSABLE or len(exc.issues) > 1:
        for issue in exc.issues:
            if issue.message != exc.message:
                text = _localize(request, issue.message) or issue.message
                problems.append(f"{issue.expression}: {text}" if issue.expression else text)
    return message, detail, problems


def error_page(
    request: Request,
    status: int,
    message: str | None = None,
    detail: str | None = None,
    problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The portal's error page (also for page modules that want to show one without raising)."""
    _ = gettext_for(request)
    titles = _titles(_)
    title, explanation = titles.get(status) or titles[500 if status >= 500 else 400]
    wants_json = not session.wants_html(request)
    if wants_json:
        body = {"type": "about:blank", "title": title, "status": status, "detail": message or explanation}
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status, headers=headers, media_type="application/problem+json")
    return render(
        request, "error.html", status, headers=headers, status=status, title=title, explanation=explanation,
        message=message, detail=detail, problems=problems or [],
    )  # fmt: skip


def _telemed_error(request: Request, exc: TelemedError) -> Response:
    if exc.category is Category.UNAUTHENTICATED:
        target = session.login_redirect(request)
        if isinstance(target, PortalRedirect):
            return _redirect(request, target)
    message, detail, problems = _describe(request, exc)
    headers = {k: v for k, v in exc.headers.items() if k.lower() != "www-authenticate"}
    if exc.category.status >= 500:
        log.warning("portal %s %s: %s", request.method, request.url.path, exc.message)
    return error_page(request, exc.category.status, message, detail, problems, headers)


def _redirect(_request: Request, exc: PortalRedirect) -> Response:
    return RedirectResponse(exc.location, 303, headers={"Cache-Control": "no-store"})


def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return error_page(request, exc.status_code, headers=getattr(exc, "headers", None))


def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    _ = gettext_for(request)
    problems = []
    for error in exc.errors():
        field = str(error.get("loc", ("?",))[-1])
        if error.get("type") == "missing":
            problems.append(_("%(field)s: this field is required", field=field))
        else:
            problems.append(_("%(field)s: the value is not valid", field=field))
    return error_page(request, 422, problems=problems)


def _server_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, OperationalError):
        # The database is busy (SQLite's write lock held past its timeout) or gone: nothing was
        # changed (the unit of work rolled back), so say "try again" rather than "we failed".
        log.warning("portal %s %s: database unavailable (%s)", request.method, request.url.path, exc.orig)
        return error_page(request, 503, headers={"Retry-After": "5"})
    log.error("portal %s %s failed", request.method, request.url.path, exc_info=exc)
    try:
        return error_page(request, 500)
    except Exception:  # noqa: BLE001 - the error page itself failed: fall back to plain text
        log.exception("the portal's error page failed")
        return PlainTextResponse("Internal Server Error", 500)


def _dispatch(portal: Handler, previous: Handler | None) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if is_portal(request) or previous is None:
            return await run_in_threadpool(portal, request, exc)  # pages may read the session from the database
        result = previous(request, exc)
        return await result if isinstance(result, Awaitable) else result

    return handler


def _plain_500(_request: Request, _exc: Exception) -> Response:
    return PlainTextResponse("Internal Server Error", 500)  # what Starlette answers without a handler


def install(app: FastAPI) -> None:
    """Portal pages for errors under ``/portal``; call after the app's own handlers are added."""
    previous = app.exception_handlers
    app.add_exception_handler(TelemedError, _dispatch(_telemed_error, previous.get(TelemedError)))
    app.add_exception_handler(StarletteHTTPException, _dispatch(_http_error, previous.get(StarletteHTTPException)))
    app.add_exception_handler(
        RequestValidationError, _dispatch(_validation_error, previous.get(RequestValidationError))
    )
    app.add_exception_handler(PortalRedirect, _redirect)
    app.add_exception_handler(Exception, _dispatch(_server_error, previous.get(Exception) or _plain_500))
