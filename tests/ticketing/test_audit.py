"""ticketing/audit.py (SQLite and a real PostgreSQL): every step of a ticket is in its
audit log, in order, readable per ticket, per set of tickets and per time span."""

from __future__ import annotations

from datetime import timedelta

from tests.ticketing.builders import T0, make_ticket, store_act
from ticketing import audit
from ticketing.lifecycle import Action, ActionRequest
from ticketing.models import TicketStatus
from ticketing.store import SqlTicketStore

M = timedelta(minutes=1)


def test_the_log_per_ticket_per_set_and_per_span(store: SqlTicketStore) -> None:
    one = make_ticket(status=TicketStatus.PENDING_REVIEW)
    two = make_ticket(cell_id="C10")
    store.save(one)
    store.save(two)
    store_act(store, one.ticket_id, ActionRequest(Action.CONFIRM), version=1, at=T0 + M)
    store_act(store, two.ticket_id, ActionRequest(Action.ACCEPT), version=1, at=T0 + 2 * M,
              actor="chen.fs")
    assert [(e.action, e.actor) for e in store.audit(two.ticket_id)] == [
        ("create", "system:desk"), ("accept", "chen.fs")]
    with store.connection() as conn:
        both = audit.of_tickets(conn, [one.ticket_id, two.ticket_id, "none"])
    assert {k: [e.action for e in v] for k, v in both.items()} == {
        one.ticket_id: ["create", "confirm"], two.ticket_id: ["create", "accept"], "none": []}
    assert [e.action for e in store.audit_between(start=T0 + M, end=T0 + 3 * M)] == [
        "confirm", "accept"]
    assert [e.ticket_id for e in store.audit_between(start=T0, end=T0 + 3 * M,
                                                     action="accept")] == [two.ticket_id]
    [entry] = [e for e in both[two.ticket_id] if e.action == "accept"]
    public = audit.audit_public(entry)
    assert (public["at"], public["from_status"], public["to_status"]) == (
        "2026-05-04T06:02:00Z", "dispatched", "accepted")
