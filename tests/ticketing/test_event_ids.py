"""Event ids in ``ticket_event_ids`` (schema 3), on SQLite and a real PostgreSQL: appended,
never rewritten; read back whole and in order; moved out of old bodies on upgrade."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import text

import ticketing.migrations as migrations
from gridwatch.config import load_config
from gridwatch.embedded import EmbeddedPipeline
from tests.builders import line, make_grid
from tests.ticketing.builders import RULES, T0, make_ticket
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.migrations import LATEST, VERSIONS
from ticketing.models import Ticket, TicketStatus
from ticketing.store import SqlTicketStore

S = TicketStatus


def _rows(store: SqlTicketStore, ticket_id: str) -> list[tuple[str, int]]:
    with store.engine.connect() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(text(
            "SELECT event_id, seq FROM ticket_event_ids WHERE ticket_id = :t ORDER BY seq"),
            {"t": ticket_id})]


def _body(store: SqlTicketStore, ticket_id: str) -> dict[str, object]:
    with store.engine.connect() as conn:
        return json.loads(conn.execute(text("SELECT body FROM tickets WHERE ticket_id = :t"),
                                       {"t": ticket_id}).scalar_one())  # type: ignore[no-any-return]


def _append(store: SqlTicketStore, ticket_id: str, new: list[str]) -> None:
    """What the desk does per batch: read, append, bump the version, save."""
    ticket = store.get(ticket_id)
    assert ticket is not None
    read = ticket.version
    ticket.event_ids.extend(new)
    ticket.detection_count = len(ticket.event_ids)
    ticket.updated_at += timedelta(minutes=1)
    ticket.version += 1
    store.save_many([(ticket, [])], read_versions={ticket_id: read})


def test_ids_written_in_many_batches_are_kept_once_and_in_order(
        store: SqlTicketStore) -> None:
    ticket = make_ticket(event_ids=[f"b0-{i}" for i in range(50)])
    store.save(ticket)
    expected = list(ticket.event_ids)
    for batch in range(1, 8):
        new = [f"b{batch}-{i}" for i in range(50 + batch)]
        _append(store, ticket.ticket_id, new)
        expected += new
    stored = store.get(ticket.ticket_id)
    assert stored is not None and stored.event_ids == expected
    assert [t.event_ids for t in store.list()] == [expected]
    assert [t.event_ids for t in store.all()] == [expected]
    assert _rows(store, ticket.ticket_id) == [(e, i) for i, e in enumerate(expected)]
    assert "event_ids" not in _body(store, ticket.ticket_id)
    assert store.get(ticket.ticket_id).to_public()["event_ids"] == expected  # type: ignore[union-attr]


def test_a_stale_write_appends_nothing(store: SqlTicketStore) -> None:
    ticket = make_ticket(event_ids=["a"])
    store.save(ticket)
    stale = store.get(ticket.ticket_id)
    _append(store, ticket.ticket_id, ["b"])
    assert stale is not None
    stale.event_ids.append("c")
    stale.version += 1
    with pytest.raises(Exception, match="version"):
        store.save_many([(stale, [])], read_versions={ticket.ticket_id: 1})
    assert store.get(ticket.ticket_id).event_ids == ["a", "b"]  # type: ignore[union-attr]


def test_merge_copies_the_absorbed_ids_after_the_targets_own(store: SqlTicketStore) -> None:
    source = make_ticket(status=S.PENDING_REVIEW, event_ids=["s1", "shared", "s2"])
    target = make_ticket(event_ids=["t1", "shared"])
    store.save(source)
    store.save(target)
    store.modify(source.ticket_id, lambda t, load: apply_action(
        t, ActionRequest(Action.MERGE, into=target.ticket_id), actor="op", at=T0,
        load=load, rules=RULES), expected_version=1)
    merged = store.get(target.ticket_id)
    assert merged is not None and merged.event_ids == ["t1", "shared", "s1", "s2"]
    assert store.get(source.ticket_id).event_ids == ["s1", "shared", "s2"]  # type: ignore[union-attr]
    _append(store, target.ticket_id, ["t2"])  # later detections join the target
    assert store.get(target.ticket_id).event_ids == [  # type: ignore[union-attr]
        "t1", "shared", "s1", "s2", "t2"]


def test_a_schema_2_database_is_upgraded_in_place_with_its_ids(
        store_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
    old = store_factory()
    assert old.applied_migrations == [1, 2]
    tickets = [make_ticket(event_ids=[f"x{i}" for i in range(n)]) for n in (0, 1, 300)]
    tickets[1].event_ids.append("x0")  # a repeat in an old body keeps its first place
    columns = ("ticket_id, kind, cell_id, district, town, village, department, status,"
               " review, priority, opened_at, due_at, red_at, updated_at, version,"
               " escalation, origin, level, body")
    with old.engine.begin() as conn:
        for t in tickets:  # written the schema-2 way: event ids inside the body
            row = {"ticket_id": t.ticket_id, "kind": t.kind, "cell_id": t.cell_id,
                   "district": t.district, "town": t.town, "village": t.village,
                   "department": t.department, "status": t.status.value,
                   "review": t.review.value, "priority": t.priority,
                   "opened_at": "2026-05-04T06:00:00.000000Z",
                   "due_at": "2026-05-04T06:30:00.000000Z",
                   "red_at": "2026-05-04T07:00:00.000000Z",
                   "updated_at": "2026-05-04T06:00:00.000000Z", "version": 1,
                   "escalation": "none", "origin": "detection", "level": t.level,
                   "body": json.dumps(t.to_public(), sort_keys=True)}
            conn.execute(text(f"INSERT INTO tickets ({columns}) VALUES ("
                              + ", ".join(f":{c.strip()}" for c in columns.split(","))
                              + ")"), row)
    old.close()
    monkeypatch.undo()

    upgraded = store_factory()
    assert upgraded.applied_migrations == [v for v in VERSIONS if v > 2]
    assert upgraded.schema_version() == LATEST
    assert upgraded.get(tickets[0].ticket_id).event_ids == []  # type: ignore[union-attr]
    assert upgraded.get(tickets[1].ticket_id).event_ids == ["x0"]  # type: ignore[union-attr]
    big = upgraded.get(tickets[2].ticket_id)
    assert big is not None and big.event_ids == [f"x{i}" for i in range(300)]
    assert all("event_ids" not in _body(upgraded, t.ticket_id) for t in tickets)
    _append(upgraded, big.ticket_id, ["after-upgrade"])
    assert upgraded.get(big.ticket_id).event_ids[-2:] == [  # type: ignore[union-attr]
        "x299", "after-upgrade"]


def test_recent_event_ids_are_the_last_horizon_of_ids(store: SqlTicketStore) -> None:
    old = make_ticket(event_ids=["old"], updated_at=T0)
    new = make_ticket(event_ids=["new-1", "new-2"], updated_at=T0 + timedelta(days=3))
    store.save(old)
    store.save(new)
    ts = (T0 + timedelta(days=3)).timestamp()
    assert store.recent_event_ids(horizon_s=86400) == [("new-1", ts), ("new-2", ts)]
    assert [e for e, _ in store.recent_event_ids(horizon_s=4 * 86400)] == [
        "old", "new-1", "new-2"]


def test_a_restarted_pipeline_recognises_a_stored_detection(
        store_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    first_store = store_factory()
    first = EmbeddedPipeline(load_config(), make_grid(), first_store)
    for i in range(3):
        assert not first.submit_raw(line(event_id=f"before-{i}"), origin="a").duplicate
    first.close()

    second_store = store_factory()  # same database, a new process
    monkeypatch.setattr(second_store, "all", _no_full_scan)
    again = EmbeddedPipeline(load_config(), make_grid(), second_store)
    assert again.submit_raw(line(event_id="before-1"), origin="a").duplicate
    assert not again.submit_raw(line(event_id="after"), origin="a").duplicate
    again.close()
    monkeypatch.undo()
    [ticket] = list(second_store.all())
    assert sorted(ticket.event_ids) == ["after", "before-0", "before-1", "before-2"]


def _no_full_scan() -> list[Ticket]:
    raise AssertionError("start-up seeding must not load every ticket")


def _event_id_indexes(store: SqlTicketStore) -> dict[str, list[str]]:
    """Each B-tree of ``ticket_event_ids`` beside the table's own: name -> columns."""
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            names = [r[1] for r in conn.execute(text("PRAGMA index_list(ticket_event_ids)"))]
            return {n: [r[2] for r in conn.execute(text(f"PRAGMA index_info({n})"))]
                    for n in names if not n.startswith("sqlite_autoindex")}
        return {r[0]: r[1].split("(", 1)[1].rstrip(")").split(", ") for r in conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename ="
                 " 'ticket_event_ids' AND schemaname = current_schema()"))}


def test_a_schema_9_store_is_rekeyed_by_seq_with_its_ids(
        store_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(migrations, "MIGRATIONS",
                        tuple(m for m in migrations.MIGRATIONS if m.version < 10))
    old = store_factory()
    assert 10 not in old.applied_migrations
    assert set(_event_id_indexes(old)) - {"ticket_event_ids_pkey"} == {
        "ticket_event_ids_seq", "ticket_event_ids_added", "ticket_event_ids_event"}
    source = make_ticket(status=S.PENDING_REVIEW, event_ids=["s1", "shared", "s2"])
    target = make_ticket(event_ids=[f"t{i}" for i in range(300)] + ["shared"])
    old.save(source)
    old.save(target)
    old.close()
    monkeypatch.undo()

    upgraded = store_factory()
    assert upgraded.applied_migrations == [10]
    assert upgraded.schema_version() == LATEST
    # the key is the table (SQLite) or its own index (PostgreSQL); one unique index
    # answers "which tickets hold this id", the other the restart's seeding
    indexes = _event_id_indexes(upgraded)
    assert indexes.pop("ticket_event_ids_event") == ["event_id", "ticket_id"]
    assert indexes.pop("ticket_event_ids_added") == ["added_at"]
    # SQLite: nothing else (the table is its key); PostgreSQL: the key's own index
    assert indexes == ({} if upgraded.dialect == "sqlite"
                       else {"ticket_event_ids_pkey": ["ticket_id", "seq"]})
    assert upgraded.get(source.ticket_id).event_ids == ["s1", "shared", "s2"]  # type: ignore[union-attr]
    assert upgraded.get(target.ticket_id).event_ids == [  # type: ignore[union-attr]
        *(f"t{i}" for i in range(300)), "shared"]
    assert _rows(upgraded, source.ticket_id) == [("s1", 0), ("shared", 1), ("s2", 2)]
    assert upgraded.event_ids_held(["shared", "s2", "nowhere"]) == {"shared", "s2"}
    # appends still skip an id the ticket holds, and keep the rest in order
    _append(upgraded, source.ticket_id, ["s3"])
    assert upgraded.get(source.ticket_id).event_ids == [  # type: ignore[union-attr]
        "s1", "shared", "s2", "s3"]
    with upgraded.transaction() as conn:
        upgraded._event_ids.append(conn, [(source.ticket_id, "s1", 9, "2026-05-04T07:00:00Z")])
    assert _rows(upgraded, source.ticket_id)[-1] == ("s3", 3)
