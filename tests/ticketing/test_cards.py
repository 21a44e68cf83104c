"""ticketing/cards.py (SQLite and a real PostgreSQL): a card is recorded once per clock and
stage, and the escalator's candidates are the open tickets with a step due."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ticketing.builders import T0, make_ticket
from ticketing import cards
from ticketing.escalation import escalate
from ticketing.models import Escalation, TicketStatus
from ticketing.store import AlreadyEscalated, SqlTicketStore

M = timedelta(minutes=1)


def test_a_card_is_recorded_once_per_clock_and_stage(store: SqlTicketStore) -> None:
    ticket = make_ticket()  # due T0 + 30 min
    store.save(ticket)
    [entry] = escalate(ticket, [Escalation.YELLOW], at=T0 + 31 * M)
    with store.transaction() as conn:
        cards.record(conn, entry)
    with pytest.raises(AlreadyEscalated) as info, store.transaction() as conn:
        cards.record(conn, entry)
    assert str(info.value) == f"{ticket.ticket_id} already has yellow"
    with store.connection() as conn:
        [card] = cards.cards_of(conn, [ticket.ticket_id])
    assert (card.stage, card.department, card.phase, card.clock_seq, card.at) == (
        Escalation.YELLOW, "fire_rescue", "unit", 1, T0 + 31 * M)


def test_candidates_are_open_tickets_with_a_step_due(store: SqlTicketStore) -> None:
    soon = make_ticket(cell_id="C10")  # due T0 + 30 min
    later = make_ticket(cell_id="C20", opened_at=timedelta(hours=2))
    done = make_ticket(cell_id="C01", status=TicketStatus.RESOLVED)
    for t in (soon, later, done):
        store.save(t)
    at = T0 + 25 * M  # 5 min before the first deadline
    assert [t.ticket_id for t in store.escalation_candidates(
        now=at, remind_before_s=600)] == [soon.ticket_id]
    assert store.escalation_candidates(now=at, remind_before_s=60) == []
    assert [t.ticket_id for t in store.escalation_candidates(
        now=T0 + 3 * 60 * M, remind_before_s=0)] == [soon.ticket_id, later.ticket_id]
