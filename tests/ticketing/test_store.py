"""ticketing/store.py against SQLite and a real PostgreSQL: the same tests for both."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from tests.ticketing.builders import T0, make_ticket
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.migrations import LATEST
from ticketing.models import TicketStatus
from ticketing.store import (
    SqliteTicketStore,
    SqlTicketStore,
    TicketFilter,
    TicketNotFound,
    VersionConflict,
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
    assert first.applied_migrations == list(range(1, LATEST + 1))
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
    assert store.applied_migrations == list(range(1, LATEST + 1))
    upgraded = store.get(ticket.ticket_id)
    assert upgraded is not None and upgraded.escalation.value == "none"
    _act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    assert store.get(ticket.ticket_id).status is S.ACCEPTED  # type: ignore[union-attr]
