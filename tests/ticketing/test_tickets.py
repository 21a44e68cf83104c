"""ticketing/tickets.py (through the store, SQLite and a real PostgreSQL): ticket rows, the desk's
indexes, filters and version-checked writes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ticketing.builders import T0, bumped, make_ticket, store_act
from ticketing.lifecycle import Action, ActionRequest
from ticketing.migrations import LATEST
from ticketing.models import TicketStatus
from ticketing.store import SqlTicketStore, TicketFilter, VersionConflict

S = TicketStatus


def test_save_get_and_the_desk_indexes(store: SqlTicketStore) -> None:
    ticket = make_ticket()
    store.save(ticket, incident_id="inc-1")
    assert store.get(ticket.ticket_id) == ticket
    assert store.open_ticket_for("C00", "smoke") == ticket
    assert store.ticket_for_incident("inc-1") == ticket
    assert store.get("nope") is None
    assert store.schema_version() == LATEST
    assert [e.action for e in store.audit(ticket.ticket_id)] == ["create"]


@pytest.mark.parametrize(("flt", "expected"), [
    (TicketFilter(), [0, 1, 2]),
    (TicketFilter(status="accepted"), [1]),
    (TicketFilter(department="community_security"), [2]),
    (TicketFilter(town="TownB"), [2]),
    (TicketFilter(opened_from=T0 + timedelta(hours=1)), [1, 2]),
    (TicketFilter(opened_to=T0 + timedelta(hours=1)), [0]),
    (TicketFilter(kind="smoke", cell_id="C00"), [0, 1]),
    (TicketFilter(escalation="none", origin="detection"), [0, 1, 2]),
])
def test_filters(store: SqlTicketStore, flt: TicketFilter, expected: list[int]) -> None:
    tickets = [
        make_ticket(),
        make_ticket(status=S.ACCEPTED, opened_at=timedelta(hours=1)),
        make_ticket(opened_at=timedelta(hours=2), department="community_security",
                    town="TownB", cell_id="C20"),
    ]
    for t in tickets:
        store.save(t)
    assert [t.ticket_id for t in store.list(flt)] == [tickets[i].ticket_id for i in expected]
    assert store.count(flt) == len(expected)
    assert len(store.list(flt, limit=1, offset=1)) == min(1, max(0, len(expected) - 1))


def test_a_stale_desk_write_is_refused(store: SqlTicketStore) -> None:
    ticket = make_ticket()
    store.save(ticket)
    store_act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    ticket.version += 1  # the desk's copy is also version 2, but made from version 1
    with pytest.raises(VersionConflict):
        store.save(ticket)
    stored = store.get(ticket.ticket_id)
    assert stored is not None and stored.status is S.ACCEPTED


def test_the_update_checks_each_rows_version_itself(store: SqlTicketStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces under the row lock: were the version read wrong, the batched
    UPDATE (one statement, many rows) still matches only rows at the version read, and
    the shortfall in its row count refuses the whole write."""
    tickets = [make_ticket(cell_id=f"C{i}0") for i in range(3)]
    store.save_many([(t, []) for t in tickets])
    store_act(store, tickets[1].ticket_id, ActionRequest(Action.ACCEPT), version=1)
    table = store._tickets
    read = table.stored_versions
    calls = iter([lambda conn, ids: {i: (1, "dispatched", 1) for i in ids}])  # stale
    monkeypatch.setattr(table, "stored_versions",
                        lambda conn, ids: next(calls, read)(conn, ids))
    with pytest.raises(VersionConflict) as info:
        store.save_many([(bumped(t, "x"), []) for t in tickets],
                        read_versions={t.ticket_id: 1 for t in tickets})
    assert (info.value.ticket_id, info.value.expected, info.value.current) == (
        tickets[1].ticket_id, 1, 2)
    assert sorted((t.version, len(t.event_ids)) for t in store.all()) == [
        (1, 1), (1, 1), (2, 1)]
