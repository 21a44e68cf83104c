"""Versioned schema migrations for the SQL ticket store (SQLite and PostgreSQL).

Each migration is applied once, in order, inside one transaction, and recorded in
``schema_migrations``. Two processes starting together do not race: PostgreSQL takes a
transaction-scoped advisory lock, SQLite a ``BEGIN IMMEDIATE`` write lock. Version 1 is
the foundation schema (``IF NOT EXISTS``, so a database written by the first
``SqliteTicketStore`` upgrades in place); version 2 adds the lifecycle; version 3 moves
each ticket's ``event_ids`` out of the JSON ``body`` into the append-only
``ticket_event_ids`` table (a Python step, :func:`_move_event_ids`, runs after its DDL);
version 7 adds the change log (``ticket_changes``, see :mod:`ticketing.changelog`).
Versions need not be contiguous (each change is assigned its number up front).

To change the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    # ``{serial}`` becomes the dialect's auto-increment key; ``{without_rowid}`` is SQLite's
    # WITHOUT ROWID (the table is its primary key's B-tree) and nothing on PostgreSQL
    statements: tuple[str, ...]
    # a data step after the statements, in the same transaction: ``run(conn, dialect)``
    run: Callable[[Connection, str], None] | None = None


def _move_event_ids(conn: Connection, dialect: str) -> None:
    """Version 3: copy every body's ``event_ids`` into ``ticket_event_ids`` (order kept as
    ``seq``; a repeated id keeps its first position) and drop them from the body."""
    rows = conn.execute(text("SELECT ticket_id, updated_at, body FROM tickets")).fetchall()
    for row in rows:
        body = json.loads(row.body)
        event_ids = body.pop("event_ids", None) or []
        first: dict[str, int] = {}
        for seq, event_id in enumerate(event_ids):
            first.setdefault(event_id, seq)
        if first:
            conn.execute(text(
                "INSERT INTO ticket_event_ids (ticket_id, event_id, seq, added_at)"
                " VALUES (:t, :e, :s, :at)"),
                [{"t": row.ticket_id, "e": e, "s": s, "at": row.updated_at}
                 for e, s in first.items()])
        conn.execute(text("UPDATE tickets SET body = :body, event_count = :n"
                          " WHERE ticket_id = :t"),
                     {"body": json.dumps(body, sort_keys=True, ensure_ascii=False),
                      "n": len(event_ids), "t": row.ticket_id})


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "foundation: tickets and incident links", (
        """CREATE TABLE IF NOT EXISTS tickets (
            ticket_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            cell_id TEXT NOT NULL,
            district TEXT, town TEXT, village TEXT,
            department TEXT NOT NULL,
            status TEXT NOT NULL,
            review TEXT NOT NULL,
            priority TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            due_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            body TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS tickets_open ON tickets (cell_id, kind, status)",
        "CREATE INDEX IF NOT EXISTS tickets_opened ON tickets (opened_at, ticket_id)",
        """CREATE TABLE IF NOT EXISTS incident_tickets (
            incident_id TEXT PRIMARY KEY,
            ticket_id TEXT NOT NULL REFERENCES tickets (ticket_id))""",
    )),
    Migration(2, "lifecycle: versions, escalation, audit log, source reviews, outbox", (
        "ALTER TABLE tickets ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE tickets ADD COLUMN escalation TEXT NOT NULL DEFAULT 'none'",
        "ALTER TABLE tickets ADD COLUMN origin TEXT NOT NULL DEFAULT 'detection'",
        "ALTER TABLE tickets ADD COLUMN level TEXT",
        "ALTER TABLE tickets ADD COLUMN red_at TEXT",
        "CREATE INDEX tickets_due ON tickets (status, due_at)",
        "CREATE INDEX tickets_department ON tickets (department, opened_at)",
        """CREATE TABLE ticket_events (
            id {serial},
            ticket_id TEXT NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            note TEXT,
            data TEXT NOT NULL)""",
        "CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id, id)",
        "CREATE INDEX ticket_events_at ON ticket_events (at)",
        """CREATE TABLE escalations (
            ticket_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            PRIMARY KEY (ticket_id, stage))""",
        """CREATE TABLE source_reviews (
            source_id TEXT PRIMARY KEY,
            confirmed INTEGER NOT NULL DEFAULT 0,
            dismissed INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE outbox (
            id {serial},
            event_key TEXT NOT NULL UNIQUE,
            event_type TEXT NOT NULL,
            ticket_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_until TEXT,
            claimed_by TEXT,
            delivered_at TEXT,
            failed_at TEXT,
            last_error TEXT)""",
        "CREATE INDEX outbox_due ON outbox (delivered_at, failed_at, next_attempt_at)",
    )),
    # A long-open ticket gathers thousands of event ids; kept in the body, every desk
    # write re-serialised them all. Here a write appends only the new ones. The key is
    # (ticket_id, event_id), not event_id alone: a merge copies the absorbed ticket's ids
    # to the target while the merged ticket keeps its own list.
    Migration(3, "ticket_event_ids: event ids out of the ticket body, append-only", (
        """CREATE TABLE ticket_event_ids (
            ticket_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            added_at TEXT NOT NULL,
            PRIMARY KEY (ticket_id, event_id)){without_rowid}""",
        "CREATE UNIQUE INDEX ticket_event_ids_seq ON ticket_event_ids (ticket_id, seq)",
        "CREATE INDEX ticket_event_ids_added ON ticket_event_ids (added_at)",
        "ALTER TABLE tickets ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0",
    ), run=_move_event_ids),
    # Versions 4-6 are other changes' (numbers are assigned per change, so a database may
    # have a gap until every one is merged; migrate() applies what it has, in order).
    # The change log behind resumable live updates (ticketing.changelog): seq is given
    # by the writer under a lock, in commit order, so it is not an auto-increment key.
    Migration(7, "ticket_changes: change log for resumable live updates; sort indexes", (
        """CREATE TABLE ticket_changes (
            seq BIGINT PRIMARY KEY,
            at TEXT NOT NULL,
            ticket_id TEXT NOT NULL,
            department TEXT NOT NULL,
            message TEXT NOT NULL){without_rowid}""",
        "CREATE INDEX ticket_changes_at ON ticket_changes (at)",
        "CREATE INDEX tickets_due_at ON tickets (due_at, ticket_id)",
        "CREATE INDEX tickets_updated_at ON tickets (updated_at, ticket_id)",
    )),
)

LATEST = MIGRATIONS[-1].version
VERSIONS = tuple(m.version for m in MIGRATIONS)  # in order; gaps allowed


def migrate(conn: Connection, *, dialect: str, lock_name: str = "gridwatch") -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied.

    ``conn`` must be inside a write transaction (the caller commits).
    """
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": zlib.crc32(lock_name.encode())})
    serial = ("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if dialect == "postgresql"
              else "INTEGER PRIMARY KEY AUTOINCREMENT")
    conn.execute(text("CREATE TABLE IF NOT EXISTS schema_migrations ("
                      "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                      "applied_at TEXT NOT NULL)"))
    done = {int(r[0]) for r in conn.execute(text("SELECT version FROM schema_migrations"))}
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements:
            conn.execute(text(statement.replace("{serial}", serial).replace(
                "{without_rowid}", " WITHOUT ROWID" if dialect == "sqlite" else "")))
        if migration.run is not None:
            migration.run(conn, dialect)
        conn.execute(text("INSERT INTO schema_migrations (version, name, applied_at) "
                          "VALUES (:v, :n, :at)"),
                     {"v": migration.version, "n": migration.name,
                      "at": datetime.now(UTC).isoformat()})
        log.info("applied ticket-store migration %d: %s", migration.version, migration.name)
        applied.append(migration.version)
    return applied
