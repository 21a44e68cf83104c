"""ticketing/engine.py: opening and migrating the database, and how it spells a time."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.ticketing.builders import T0, make_ticket, store_act
from ticketing.engine import sortable
from ticketing.lifecycle import Action, ActionRequest
from ticketing.migrations import VERSIONS
from ticketing.models import TicketStatus
from ticketing.store import SqliteTicketStore

S = TicketStatus


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
    store_act(store, ticket.ticket_id, ActionRequest(Action.ACCEPT), version=1)
    assert store.get(ticket.ticket_id).status is S.ACCEPTED  # type: ignore[union-attr]


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


@pytest.mark.parametrize(("url", "schema", "error"), [
    ("mysql://u@h/db", None, "expected a sqlite:// or postgresql:// URL, got 'mysql://u@h/db'"),
    ("sqlite://", "gw", "expected schema=None for SQLite, got 'gw'"),
])
def test_a_database_it_cannot_open_is_named(url: str, schema: str | None, error: str) -> None:
    from ticketing.engine import Database

    with pytest.raises(ValueError) as info:
        Database(url, schema=schema)
    assert str(info.value) == error


def test_a_failed_write_is_rolled_back_and_reads_see_commits() -> None:
    from sqlalchemy import text

    from ticketing.engine import Database

    db = Database("sqlite://")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("stop")
    with db.write() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with db.read() as conn:
        assert [r[0] for r in conn.execute(text("SELECT n FROM t"))] == [2]
    assert db.schema_version() == VERSIONS[-1] and db.ping()


def test_stores_opened_at_once_on_a_new_postgresql_schema_all_start(pg_schema) -> None:  # type: ignore[no-untyped-def]
    """Two workers starting together on a fresh schema: PostgreSQL's CREATE SCHEMA IF NOT
    EXISTS failed one of them on pg_namespace's unique index (the scale-out test's
    second worker died at start-up)."""
    import threading

    from sqlalchemy import create_engine, text

    from ticketing.store import SqlTicketStore, _normalise_url

    url, schema = pg_schema
    names = [f"{schema}_{attempt}" for attempt in range(3)]  # the race is at creation
    errors: list[BaseException] = []
    stores: list[SqlTicketStore] = []

    def open_one(name: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            stores.append(SqlTicketStore(url, schema=name, pool_size=1))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    try:
        for name in names:
            start = threading.Barrier(4)
            threads = [threading.Thread(target=open_one, args=(name, start))
                       for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert errors == [] and len(stores) == 4 * len(names)
    finally:
        for store in stores:
            store.close()
        engine = create_engine(_normalise_url(url))
        with engine.begin() as conn:
            for name in names:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()
