"""ticketing/store.py against SQLite and a real PostgreSQL: the same tests for both."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.ticketing.builders import T0, make_ticket
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.migrations import LATEST, VERSIONS
from ticketing.models import Ticket, TicketStatus
from ticketing.store import (
    OpenTicketMoved,
    SqliteTicketStore,
    SqlTicketStore,
    TicketFilter,
    TicketNotFound,
    VersionConflict,
    sortable,
)

S = TicketStatus


def _act(store: SqlTicketStore, ticket_id: str, request: ActionRequest, *,
         version: int | None) -> None:
    store.modify(ticket_id, lambda t, load: apply_action(t, request, actor="x", at=T0,
                                                         load=load),
                 expected_version=version)


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


def test_modify_checks_the_version_and_writes_nothing_on_conflict(
        store: SqlTicketStore) -> None:
    ticket = make_ticket()
    store.save(ticket)
    with pytest.raises(VersionConflict) as info:
        _act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=7)
    assert info.value.current == 1
    _act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    stored = store.get(ticket.ticket_id)
    assert stored is not None and (stored.status, stored.version) == (S.ACCEPTED, 2)
    assert [e.action for e in store.audit(ticket.ticket_id)] == ["create", "accept"]
    with pytest.raises(TicketNotFound):
        _act(store, "missing", ActionRequest(Action.ACCEPT), version=None)


def test_a_stale_desk_write_is_refused(store: SqlTicketStore) -> None:
    ticket = make_ticket()
    store.save(ticket)
    _act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    ticket.version += 1  # the desk's copy is also version 2, but made from version 1
    with pytest.raises(VersionConflict):
        store.save(ticket)
    stored = store.get(ticket.ticket_id)
    assert stored is not None and stored.status is S.ACCEPTED


def test_merge_relinks_incidents_and_writes_both_audits(store: SqlTicketStore) -> None:
    source = make_ticket(status=S.PENDING_REVIEW)
    target = make_ticket()
    store.save(source, incident_id="inc-s")
    store.save(target)
    _act(store, source.ticket_id, ActionRequest(Action.MERGE, into=target.ticket_id),
         version=1)
    assert store.ticket_for_incident("inc-s").ticket_id == target.ticket_id  # type: ignore[union-attr]
    merged = store.get(target.ticket_id)
    assert merged is not None and merged.version == 2 and source.event_ids[0] in merged.event_ids
    assert [e.action for e in store.audit(target.ticket_id)] == ["create", "absorb"]


def test_source_review_counts_and_suspension(store: SqlTicketStore) -> None:
    for i in range(4):
        t = make_ticket(status=S.PENDING_REVIEW, source_ids=["st1/cam-1"])
        store.save(t)
        request = (ActionRequest(Action.DISMISS, reason="glare") if i < 3
                   else ActionRequest(Action.CONFIRM))
        _act(store, t.ticket_id, request, version=1)
    stats = {s.source_id: s for s in store.source_stats()}
    assert (stats["st1/cam-1"].dismissed, stats["st1/cam-1"].confirmed) == (3, 1)
    assert stats["st1/cam-1"].false_positive_rate == 0.75
    assert store.suspended_sources(max_false_positive_rate=0.5, min_reviewed=4) == {
        "st1/cam-1"}
    assert store.suspended_sources(max_false_positive_rate=0.5, min_reviewed=5) == set()


def test_reopening_a_store_does_not_migrate_again(store_factory) -> None:  # type: ignore[no-untyped-def]
    first = store_factory()
    second = store_factory()
    assert first.applied_migrations == list(VERSIONS)
    assert second.applied_migrations == []


def test_a_foundation_sqlite_file_is_upgraded_in_place(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "old.db"
    legacy = sqlite3.connect(path)
    ticket = make_ticket()
    body = ticket.to_public()
    for key in ("escalation", "returned_count", "accepted_at", "resolved_at", "closed_at",
                "dismiss_reason", "merged_into", "origin", "description"):
        body.pop(key)
    import json
    legacy.executescript(
        "CREATE TABLE tickets (ticket_id TEXT PRIMARY KEY, kind TEXT NOT NULL, cell_id TEXT"
        " NOT NULL, district TEXT, town TEXT, village TEXT, department TEXT NOT NULL,"
        " status TEXT NOT NULL, review TEXT NOT NULL, priority TEXT NOT NULL, opened_at"
        " TEXT NOT NULL, due_at TEXT NOT NULL, updated_at TEXT NOT NULL, body TEXT NOT"
        " NULL);")
    legacy.execute("INSERT INTO tickets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
        ticket.ticket_id, "smoke", "C00", "D1", "TownA", "V0", "fire_rescue", "dispatched",
        "auto_dispatched", "P1", body["opened_at"], body["due_at"], body["updated_at"],
        json.dumps(body)))
    legacy.commit()
    legacy.close()
    store = SqliteTicketStore(path)
    assert store.applied_migrations == list(VERSIONS)
    upgraded = store.get(ticket.ticket_id)
    assert upgraded is not None and upgraded.escalation.value == "none"
    _act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    assert store.get(ticket.ticket_id).status is S.ACCEPTED  # type: ignore[union-attr]


# -- the desk's batched write (save_many) ---------------------------------------------------

def _bumped(ticket: Ticket, *new_ids: str) -> Ticket:
    """The desk's next version of ``ticket`` with ``new_ids`` absorbed."""
    return replace(ticket, version=ticket.version + 1, event_ids=ticket.event_ids + list(new_ids),
                   detection_count=ticket.detection_count + len(new_ids),
                   updated_at=ticket.updated_at + timedelta(seconds=len(new_ids)))


def test_save_many_writes_all_or_none_of_several_tickets(store: SqlTicketStore) -> None:
    tickets = [make_ticket(cell_id=f"C{i}0") for i in range(3)]
    store.save_many([(t, [f"inc-{i}"]) for i, t in enumerate(tickets)],
                    read_versions={})
    _act(store, tickets[1].ticket_id, ActionRequest(Action.ACCEPT), version=1)
    batch = [(_bumped(t, f"x{i}"), []) for i, t in enumerate(tickets)]
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
    second = _bumped(first, "later")
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
    written = _bumped(named[expected], "x")
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


@pytest.mark.parametrize("value", [
    T0, T0 + timedelta(microseconds=7), T0.astimezone(timezone(timedelta(hours=8))),
    datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
])
def test_sortable_is_fixed_width_utc(value: datetime) -> None:
    assert sortable(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_sortable_keeps_apart_times_that_differ_only_in_fold() -> None:
    """Equal as datetimes, an hour apart as instants (the night the clocks go back)."""
    first = datetime(2025, 11, 2, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    second = first.replace(fold=1)
    for _ in range(2):  # the second answers come from the cache
        assert sortable(first) == "2025-11-02T05:30:00.000000Z"
        assert sortable(second) == "2025-11-02T06:30:00.000000Z"


def test_the_update_checks_each_rows_version_itself(store: SqlTicketStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces under the row lock: were the version read wrong, the batched
    UPDATE (one statement, many rows) still matches only rows at the version read, and
    the shortfall in its row count refuses the whole write."""
    tickets = [make_ticket(cell_id=f"C{i}0") for i in range(3)]
    store.save_many([(t, []) for t in tickets])
    _act(store, tickets[1].ticket_id, ActionRequest(Action.ACCEPT), version=1)
    read = store._stored_versions
    calls = iter([lambda conn, ids: {i: (1, "dispatched", 1) for i in ids}])  # stale
    monkeypatch.setattr(store, "_stored_versions",
                        lambda conn, ids: next(calls, read)(conn, ids))
    with pytest.raises(VersionConflict) as info:
        store.save_many([(_bumped(t, "x"), []) for t in tickets],
                        read_versions={t.ticket_id: 1 for t in tickets})
    assert (info.value.ticket_id, info.value.expected, info.value.current) == (
        tickets[1].ticket_id, 1, 2)
    assert sorted((t.version, len(t.event_ids)) for t in store.all()) == [
        (1, 1), (1, 1), (2, 1)]
