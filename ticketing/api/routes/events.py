"""Live updates as server-sent events, resumable from the change log.

Every event's ``id`` is the change's ``seq`` in the ticket database's change log
(:mod:`ticketing.changelog`). A client that reconnects with ``Last-Event-ID: <seq>`` (or
``?last_event_id=<seq>``) first gets every change after it that it may see, then the live
stream; an id the log no longer covers gets ``event: reset`` (reload, then listen on).

Live changes arrive through the bus (Redis between replicas); the bus is only a wake-up:
a message whose ``seq`` is not the next one makes the stream read the gap from the log,
and an idle stream looks at the log every few seconds, so a lost pub/sub message delays
an event but never loses it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from ticketing.api.deps import Reader, StateDep
from ticketing.auth import Principal
from ticketing.store import SqlTicketStore

router = APIRouter(tags=["events"])

_PAGE = 500  # log rows read at a time
_POLL_S = 5.0  # an idle stream reads the log this often (a lost pub/sub message)
RETRY_MS = 2000  # how soon a browser reconnects after the stream drops


def _parse_id(value: str | None) -> int | None:
    """A Last-Event-ID as a seq; -1 for one that is not ours (reset)."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) <= 18 else -1


@router.get("/events", response_class=EventSourceResponse,
            responses={200: {"description": "``text/event-stream``: ``event: ticket.<type>``"
                                            " (data: the change), or ``event: reset``"}})
async def stream(state: StateDep, principal: Reader,
                 limit: Annotated[int | None, Query(ge=1, le=100000)] = None,
                 idle_timeout_s: Annotated[float | None, Query(gt=0, le=86400)] = None,
                 last_event_id: Annotated[int | None, Query(
                     ge=0, le=10**18, description="Resume after this event id, for "
                     "clients that cannot send the Last-Event-ID header (the header "
                     "wins)")] = None,
                 last_event_id_header: Annotated[str | None, Header(
                     alias="Last-Event-ID", max_length=64)] = None,
                 ) -> AsyncIterator[ServerSentEvent]:
    """One event per committed ticket change (``event: ticket.<type>``, ``id:`` its
    change-log number, JSON data with ticket id, department, status, escalation and
    version). A department sees only its own tickets' events.

    Resuming: send the last ``id`` seen as ``Last-Event-ID`` (browsers' EventSource does
    so on reconnect) or ``last_event_id``: every change after it comes first, then live
    ones. Changes are kept ``ticketing.change_log.retention_s`` (default one day, at most
    ``max_rows``); for an older id the stream starts with ``event: reset`` (data:
    ``reason``, ``oldest_available``), after which the client should reload
    ``/tickets`` and keep listening. A stream opened without an id starts with a
    data-less block carrying the current ``id`` (and ``retry: 2000``): no event, but a
    resume point for a client that sees no change before its connection drops.
    ``limit`` / ``idle_timeout_s`` end the stream (for scripts)."""
    header = _parse_id(last_event_id_header)
    resume = header if header is not None else last_event_id
    store = state.store
    sent = 0
    # the log's window before subscribing: a change committed in between is not in the
    # queue, but the next message (or the idle poll) shows the gap, which is read from
    # the log; read after subscribing, such a change would look already examined
    window = await run_in_threadpool(store.change_window)
    async with state.bus.subscribe() as queue:
        last = window.newest or 0  # the newest change examined (seen or not ours)
        if resume is not None:
            if resume >= 0 and window.can_resume(resume):
                last = resume
            else:
                sent += 1
                yield ServerSentEvent(event="reset", id=str(last), data={
                    "reason": f"event id {last_event_id_header or resume} is not in the "
                              "change log (older than its retention window, or from "
                              "another database): reload, then keep listening",
                    "oldest_available": window.oldest, "newest": window.newest})
        else:
            # no data: not an event, but EventSource keeps the id, so a client that has
            # seen no change yet still resumes from here after a reconnect
            yield ServerSentEvent(comment="resume point", id=str(last), retry=RETRY_MS)
        pending: deque[dict[str, Any]] = deque()  # logged or live messages, in seq order
        more = False  # the last log read was a full page
        if resume is not None and last == resume:
            pending, more = await _read(store, last)
        idle_since = polled = time.monotonic()
        while limit is None or sent < limit:
            if not pending and more:
                pending, more = await _read(store, last)  # a long backlog: next page
                continue
            if not pending:
                message = await _next(queue)
                now = time.monotonic()
                if message is None:
                    if idle_timeout_s is not None and now - idle_since > idle_timeout_s:
                        return
                    if now - polled >= _POLL_S:
                        polled = now
                        pending, more = await _read(store, last)
                    continue
                seq = message.get("seq")
                if not isinstance(seq, int) or seq > last + 1:
                    pending, more = await _read(store, last)  # a gap: read it from the log
                    continue
                if seq <= last:
                    continue  # already read from the log
                pending.append(message)
            message = pending.popleft()
            last = max(last, int(message["seq"]))
            idle_since = time.monotonic()
            if _visible(principal, message):
                sent += 1
                yield ServerSentEvent(data=message, event=str(message["type"]),
                                      id=str(message["seq"]))


async def _next(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(queue.get(), timeout=1.0)
    except TimeoutError:
        return None


async def _read(store: SqlTicketStore, after: int) -> tuple[deque[dict[str, Any]], bool]:
    """The next page of logged changes after ``after``, and whether it was full."""
    page = await run_in_threadpool(store.changes_since, after, limit=_PAGE)
    return deque(page), len(page) == _PAGE


def _visible(principal: Principal, message: dict[str, Any]) -> bool:
    return principal.can_see(str(message.get("department")))
