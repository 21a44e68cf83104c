"""Operator review: the queue of pending tickets with their evidence, and the
false-positive rate of every source (a source above the threshold stops auto-dispatching).
Confirm / dismiss / merge are ``POST /tickets/{id}/actions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ticketing.api.deps import StateDep, Supervisor
from ticketing.api.models import ReviewItem, ReviewQueue, SourcePublic, TicketPublic
from ticketing.store import SourceStats, TicketFilter

router = APIRouter(tags=["review"])


def _public(stats: SourceStats, suspended: frozenset[str]) -> SourcePublic:
    rate = stats.false_positive_rate
    return SourcePublic(source_id=stats.source_id, confirmed=stats.confirmed,
                        dismissed=stats.dismissed, reviewed=stats.reviewed,
                        false_positive_rate=None if rate is None else round(rate, 4),
                        auto_dispatch_suspended=stats.source_id in suspended)


def _suspended(state: StateDep) -> frozenset[str]:
    review = state.settings.review
    return state.store.suspended_sources(
        max_false_positive_rate=review.max_false_positive_rate,
        min_reviewed=review.min_reviewed)


@router.get("/sources", response_model=list[SourcePublic])
def sources(state: StateDep, _principal: Supervisor) -> list[SourcePublic]:
    """Every reviewed source: confirmed / dismissed counts, false-positive rate, and
    whether its auto-dispatch is suspended."""
    suspended = _suspended(state)
    return [_public(s, suspended) for s in state.store.source_stats()]


@router.get("/review/queue", response_model=ReviewQueue)
def queue(state: StateDep, _principal: Supervisor,
          kind: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
          town: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
          limit: Annotated[int, Query(ge=1, le=500)] = 50,
          offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> ReviewQueue:
    """Pending tickets, oldest first, each with its evidence (snapshots, sources,
    detections, hot-spot statistics) and its sources' review record."""
    flt = TicketFilter(status="pending_review", kind=kind, town=town)
    tickets = state.store.list(flt, limit=limit, offset=offset)
    stats = {s.source_id: s for s in state.store.source_stats()}
    suspended = _suspended(state)
    items = [ReviewItem(ticket=TicketPublic.of(t), sources=[
        _public(stats.get(s, SourceStats(s, 0, 0)), suspended) for s in t.source_ids])
        for t in tickets]
    return ReviewQueue(items=items, total=state.store.count(flt))
