"""ticketing/store.py against SQLite and a real PostgreSQL: the writes that span the concern
modules in one transaction (lifecycle changes, merges, the desk's batched upsert)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ticketing.builders import bumped, make_ticket, store_act
from ticketing.batch import BatchingStore
from ticketing.changelog import Change
from ticketing.lifecycle import Action, ActionRequest
from ticketing.models import TicketStatus
from ticketing.store import (
    MemoryTicketStore,
    OpenTicketMoved,
    SqlTicketStore,
    TicketFilter,
    TicketNotFound,
    TicketStore,
    VersionConflict,
)

S = TicketStatus


def test_modify_checks_the_version_and_writes_nothing_on_conflict(
        store: SqlTicketStore) -> None:
    ticket = make_ticket()
    store.save(ticket)
    with pytest.raises(VersionConflict) as info:
        store_act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=7)
    assert info.value.current == 1
    store_act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    stored = store.get(ticket.ticket_id)
    assert stored is not None and (stored.status, stored.version) == (S.ACCEPTED, 2)
    assert [e.action for e in store.audit(ticket.ticket_id)] == ["create", "accept"]
    with pytest.raises(TicketNotFound):
        store_act(store, "missing", ActionRequest(Action.ACCEPT), version=None)


def test_merge_relinks_incidents_and_writes_both_audits(store: SqlTicketStore) -> None:
    source = make_ticket(status=S.PENDING_REVIEW)
    target = make_ticket()
    store.save(source, incident_id="inc-s")
    store.save(target)
    store_act(store, source.ticket_id, ActionRequest(Action.MERGE, into=target.ticket_id),
         version=1)
    assert store.ticket_for_incident("inc-s").ticket_id == target.ticket_id  # type: ignore[union-attr]
    merged = store.get(target.ticket_id)
    assert merged is not None and merged.version == 2 and source.event_ids[0] in merged.event_ids
    assert [e.action for e in store.audit(target.ticket_id)] == ["create", "absorb"]


# -- the desk's batched write (save_many) ---------------------------------------------------


def test_save_many_writes_all_or_none_of_several_tickets(store: SqlTicketStore) -> None:
    tickets = [make_ticket(cell_id=f"C{i}0") for i in range(3)]
    store.save_many([(t, [f"inc-{i}"]) for i, t in enumerate(tickets)],
                    read_versions={})
    store_act(store, tickets[1].ticket_id, ActionRequest(Action.ACCEPT), version=1)
    batch = [(bumped(t, f"x{i}"), []) for i, t in enumerate(tickets)]
    with pytest.raises(VersionConflict) as info:
        store.save_many(batch, read_versions={t.ticket_id: 1 for t in tickets})
    assert (info.value.ticket_id, info.value.expected, info.value.current) == (
        tickets[1].ticket_id, 1, 2)
    assert [len(t.event_ids) for t in store.all()] == [1, 1, 1]  # none written
    del batch[1]
    store.save_many(batch, read_versions={t.ticket_id: 1 for t in tickets})
    assert sorted((t.cell_id, t.version, len(t.event_ids)) for t in store.all()) == [
        ("C00", 2, 2), ("C10", 2, 1), ("C20", 2, 2)]


def test_save_many_takes_one_ticket_twice_in_order(store: SqlTicketStore) -> None:
    first = make_ticket()
    second = bumped(first, "later")
    store.save_many([(first, ["inc-1"]), (second, ["inc-2"])])
    stored = store.get(first.ticket_id)
    assert stored is not None and stored == second
    assert [e.action for e in store.audit(first.ticket_id)] == ["create"]


def test_save_many_counts_the_incident_links_it_made(store: SqlTicketStore) -> None:
    ours, theirs = make_ticket(), make_ticket(cell_id="C10")
    store.save(theirs, incident_id="inc-shared")
    assert store.save_many([(ours, ["inc-new", "inc-shared"])]) == 1
    assert store.ticket_for_incident("inc-shared").ticket_id == theirs.ticket_id  # type: ignore[union-attr]
    assert store.ticket_for_incident("inc-new").ticket_id == ours.ticket_id  # type: ignore[union-attr]


@pytest.mark.parametrize(("expected", "raises"), [
    ("latest", None),
    ("earlier", OpenTicketMoved),  # another open ticket was opened after it
    ("closed", OpenTicketMoved),  # it is not open any more
    ("elsewhere", OpenTicketMoved),  # no open ticket at all in that cell
])
def test_save_many_checks_the_open_tickets_its_caller_relied_on(
        store: SqlTicketStore, expected: str, raises: type[Exception] | None) -> None:
    earlier = make_ticket()
    latest = make_ticket(opened_at=timedelta(minutes=5))
    closed = make_ticket(opened_at=timedelta(minutes=10), status=S.CLOSED)
    for t in (earlier, latest, closed):
        store.save(t)
    assert store.open_ticket_for("C00", "smoke") == latest
    named = {"latest": latest, "earlier": earlier, "closed": closed, "elsewhere": latest}
    key = ("C20", "smoke") if expected == "elsewhere" else ("C00", "smoke")
    written = bumped(named[expected], "x")
    save = lambda: store.save_many(  # noqa: E731
        [(written, [])], read_versions={written.ticket_id: 1},
        open_tickets={key: named[expected].ticket_id})
    if raises is None:
        save()
        assert store.get(written.ticket_id) == written
    else:
        with pytest.raises(raises) as info:
            save()
        assert isinstance(info.value, VersionConflict)  # what the pipeline handles
        assert store.get(written.ticket_id).version == 1  # type: ignore[union-attr]


# -- the TicketStore Protocol ---------------------------------------------------------------

def test_every_store_answers_what_the_desk_asks(store: SqlTicketStore) -> None:
    """The desk calls the Protocol's methods on whichever store it has, without probing:
    the replay's memory store keeps no review records and suspends no source."""
    memory = MemoryTicketStore()
    batching = BatchingStore(store)
    names = [n for n in vars(TicketStore) if not n.startswith("_")]
    assert sorted(names) == ["all", "count", "get", "list", "open_ticket_for", "save",
                             "suspended_sources", "ticket_for_incident"]
    # the batching store writes through to ``store`` (outside a batch): 1, 1, then 2
    for each, expected in ((memory, 1), (store, 1), (batching, 2)):
        assert all(callable(getattr(type(each), n, None)) for n in names), type(each)
        assert each.suspended_sources(max_false_positive_rate=0.5, min_reviewed=1) == set()
        each.save(make_ticket(cell_id="C10"))
        assert each.count(TicketFilter(cell_id="C10")) == expected
        assert [t.cell_id for t in each.list(TicketFilter(cell_id="C10"))] == \
            [t.cell_id for t in each.all()] == ["C10"] * expected


def test_a_listener_that_raises_does_not_undo_the_write(store: SqlTicketStore) -> None:
    heard: list[tuple[str, int | None]] = []

    def broken(change: Change) -> None:
        raise RuntimeError("listener bug")

    store.add_listener(broken)
    store.add_listener(lambda c: heard.append((c.type, c.seq)))
    ticket = make_ticket()
    store.save(ticket)
    store.remove_listener(broken)
    store_act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    assert heard == [("created", 1), ("accept", 2)]
    assert store.get(ticket.ticket_id).version == 2  # type: ignore[union-attr]
