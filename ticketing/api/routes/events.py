"""Live updates as server-sent events (fanned out through Redis between replicas)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ticketing.api.deps import Reader, StateDep

router = APIRouter(tags=["events"])


@router.get("/events", response_class=EventSourceResponse)
async def stream(state: StateDep, principal: Reader,
                 limit: Annotated[int | None, Query(ge=1, le=100000)] = None,
                 idle_timeout_s: Annotated[float | None, Query(gt=0, le=86400)] = None,
                 ) -> AsyncIterator[ServerSentEvent]:
    """One event per committed ticket change (``event: ticket.<type>``, JSON data with
    ticket id, department, status, escalation and version). A department sees only its
    own tickets' events. ``limit`` / ``idle_timeout_s`` end the stream (for scripts)."""
    sent = 0
    async with state.bus.subscribe() as queue:
        last = time.monotonic()
        while limit is None or sent < limit:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    return
                continue
            last = time.monotonic()
            if not principal.can_see(str(message.get("department"))):
                continue
            sent += 1
            yield ServerSentEvent(data=message, event=str(message["type"]),
                                  id=str(message["id"]))
