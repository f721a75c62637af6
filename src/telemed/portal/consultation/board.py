"""The live board of today's consultations (今日会诊 / 待诊 / 已诊) and the statistics page.

The board page holds no data of its own: it loads its rows as an HTML fragment and reloads the
fragment whenever a consultation changes. Changes arrive as Server-Sent Events fed by the hub
(which fans out across instances through Redis when a broker is configured), so a wall screen
updates within a second of a step anywhere in the network, without reloading the page.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import datetime, time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from telemed.consultation import queries
from telemed.consultation.directory import Directory
from telemed.portal.consultation.common import labels, minutes_left, repository, services
from telemed.portal.consultation.pages import BOARD_TOPIC
from telemed.portal.session import CurrentUser, require_roles
from telemed.portal.web import DISPLAY_TZ, render

router = APIRouter(prefix="/portal")
BOARD_ROLES = ("triage-officer", "qc-officer", "platform-admin", "consulting-expert")
KEEPALIVE_SECONDS = 15.0
BOARD_TILES = 24  # tiles per column: what a wall screen can show (the column's count is of all)


def _day_start(now: datetime) -> datetime:
    local = now.astimezone(DISPLAY_TZ)
    return datetime.combine(local.date(), time.min, tzinfo=DISPLAY_TZ)


def _board_context(request: Request, user) -> dict:
    require_roles(*BOARD_ROLES)(user)
    now = services(request).clock.now()
    with repository(request, user) as repo:
        b = queries.board(repo, now, _day_start(now))
        directory = Directory.cached(repo)
    return dict(board=b, now=now, minutes_left=minutes_left, tiles_max=BOARD_TILES, **labels(request, directory))


@router.get("/board", response_class=HTMLResponse)
def board_page(request: Request, user: CurrentUser) -> HTMLResponse:
    return render(request, "consultation/board.html", **_board_context(request, user))


@router.get("/board/rows", response_class=HTMLResponse)
def board_rows(request: Request, user: CurrentUser) -> HTMLResponse:
    return render(request, "consultation/board_rows.html", **_board_context(request, user))


def _change_stream(request: Request, retry_ms: int, show=None) -> StreamingResponse:
    """``text/event-stream`` of consultation steps from the hub: a ``change`` event (data: the
    consultation id) per step ``show(id)`` lets through (every step when None), keep-alives between."""
    hub = services(request).hub
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)

    def listener(text: str) -> None:
        loop.call_soon_threadsafe(_offer, queue, text)

    async def stream():
        hub.add_listener(BOARD_TOPIC, listener)
        try:
            yield f"retry: {retry_ms}\n\n"
            while not await request.is_disconnected():
                try:
                    cid = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if show is None or await run_in_threadpool(show, cid):
                    yield f"event: change\ndata: {cid}\n\n"
        finally:
            hub.remove_listener(BOARD_TOPIC, listener)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/board/events")
async def board_events(request: Request, user: CurrentUser) -> StreamingResponse:
    """Every consultation step, for the board (its viewers see all of today's consultations)."""
    require_roles(*BOARD_ROLES)(user)
    return _change_stream(request, 2000)


@router.get("/events")
async def my_events(request: Request, user: CurrentUser) -> StreamingResponse:
    """The steps of consultations this user can see (case pages and worklists show a notice)."""

    def visible(cid: str) -> bool:
        with repository(request, user, audited=False) as repo:  # shows nothing but a notice
            return repo.exists("Task", cid) and repo._visible("Task", cid)

    return _change_stream(request, 3000, visible)


def _offer(queue: asyncio.Queue, text: str) -> None:
    if not queue.full():
        queue.put_nowait(text)


@router.get("/statistics", response_class=HTMLResponse)
def statistics(request: Request, user: CurrentUser) -> HTMLResponse:
    """Counts per state, kind, requesting institution and expert (no patient identities)."""
    require_roles("triage-officer", "qc-officer", "platform-admin", "supervisor")(user)
    now = services(request).clock.now()
    reader = user
    if not user.has_role("triage-officer", "qc-officer", "platform-admin"):
        # A supervisor (卫健委) sees the network's numbers, never a patient: the counts are read with a
        # wider context (audited under their name) and only aggregates leave this function.
        reader = replace(user, context=replace(user.context, clinical="all"))
    with repository(request, reader) as repo:
        directory = Directory.cached(repo)
        counts = queries.counts(repo)
        rows = queries.rows_for(
            repo, queries.find_tasks(repo, [queries.states_param(queries.OPEN_STATES + queries.DONE_STATES)], 1000), now
        )
    by_institution: Counter = Counter(directory.org_of(r.requester) for r in rows)
    by_specialty: Counter = Counter(r.specialty for r in rows)
    ratings = [r.rating for r in rows if r.rating]
    return render(request, "consultation/statistics.html", counts=counts, by_institution=by_institution,
                  by_specialty=by_specialty, mean_rating=sum(ratings) / len(ratings) if ratings else None,
                  total=len(rows), ident=lambda x: x, **labels(request, directory))  # fmt: skip
