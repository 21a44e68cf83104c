"""ticketing/reviews.py (SQLite and a real PostgreSQL): review outcomes per source and the
sources they suspend."""

from __future__ import annotations

from tests.ticketing.builders import make_ticket, store_act
from ticketing.lifecycle import Action, ActionRequest
from ticketing.models import TicketStatus
from ticketing.store import SqlTicketStore

S = TicketStatus


def test_source_review_counts_and_suspension(store: SqlTicketStore) -> None:
    for i in range(4):
        t = make_ticket(status=S.PENDING_REVIEW, source_ids=["st1/cam-1"])
        store.save(t)
        request = (ActionRequest(Action.DISMISS, reason="glare") if i < 3
                   else ActionRequest(Action.CONFIRM))
        store_act(store, t.ticket_id, request, version=1)
    stats = {s.source_id: s for s in store.source_stats()}
    assert (stats["st1/cam-1"].dismissed, stats["st1/cam-1"].confirmed) == (3, 1)
    assert stats["st1/cam-1"].false_positive_rate == 0.75
    assert store.suspended_sources(max_false_positive_rate=0.5, min_reviewed=4) == {
        "st1/cam-1"}
    assert store.suspended_sources(max_false_positive_rate=0.5, min_reviewed=5) == set()
