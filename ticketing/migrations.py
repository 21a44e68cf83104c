"""Versioned schema migrations for the SQL ticket store (SQLite and PostgreSQL).

Each migration is applied once, in order, inside one transaction, and recorded in
``schema_migrations``. Two processes starting together do not race: PostgreSQL takes a
transaction-scoped advisory lock, SQLite a ``BEGIN IMMEDIATE`` write lock. Version 1 is
the foundation schema (``IF NOT EXISTS``, so a database written by the first
``SqliteTicketStore`` upgrades in place); version 2 adds the lifecycle; version 3 moves
each ticket's ``event_ids`` out of the JSON ``body`` into the append-only
``ticket_event_ids`` table (a Python step, :func:`_move_event_ids`, runs after its DDL);
version 4 records each card against the unit that held the ticket and per deadline clock
(:func:`_cards_per_unit`); version 5 adds named user accounts, their API tokens, login
sessions and the failed-login counters (:mod:`ticketing.users`, :mod:`ticketing.login`);
version 6 adds the centre's evidence metadata (``ticketing/evidence.py``); version 7 adds
the change log (``ticket_changes``, see :mod:`ticketing.changelog`); version 8 adds
the stream stage's checkpoints (``ticketing/checkpoints.py``); version 9 gives each
webhook outbox row its receiver (``destination``: the centre or one department's own
webhook, :mod:`ticketing.deliveries`); version 10 keys ``ticket_event_ids`` by
``(ticket_id, seq)`` with one unique ``(event_id, ticket_id)`` index, three B-trees a row
where there were four (:func:`_event_ids_by_seq`).

To change the schema, append a migration; never edit one that has shipped. Versions need
not be contiguous (parallel branches take numbers ahead of time): every version not yet
recorded is applied, in ascending order.
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
    # WITHOUT ROWID (the table is its primary key's B-tree) and nothing on PostgreSQL;
    # ``{blob}`` is BLOB (SQLite) or BYTEA (PostgreSQL)
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


# Version 10, per dialect. SQLite cannot change a primary key in place: the table is
# rebuilt (WITHOUT ROWID: the table is its key's B-tree) and its rows copied in key order.
_EVENT_IDS_BY_SEQ = {
    "sqlite": (
        """CREATE TABLE ticket_event_ids_v10 (
            ticket_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            added_at TEXT NOT NULL,
            PRIMARY KEY (ticket_id, seq)) WITHOUT ROWID""",
        "INSERT INTO ticket_event_ids_v10 (ticket_id, seq, event_id, added_at)"
        " SELECT ticket_id, seq, event_id, added_at FROM ticket_event_ids"
        " ORDER BY ticket_id, seq",
        "DROP TABLE ticket_event_ids",
        "ALTER TABLE ticket_event_ids_v10 RENAME TO ticket_event_ids",
        "CREATE UNIQUE INDEX ticket_event_ids_event ON ticket_event_ids (event_id, ticket_id)",
        "CREATE INDEX ticket_event_ids_added ON ticket_event_ids (added_at)",
    ),
    "postgresql": (
        "ALTER TABLE ticket_event_ids DROP CONSTRAINT ticket_event_ids_pkey",
        "DROP INDEX ticket_event_ids_seq",
        "DROP INDEX ticket_event_ids_event",
        "ALTER TABLE ticket_event_ids ADD PRIMARY KEY (ticket_id, seq)",
        "CREATE UNIQUE INDEX ticket_event_ids_event ON ticket_event_ids (event_id, ticket_id)",
    ),
}


def _event_ids_by_seq(conn: Connection, dialect: str) -> None:
    """Version 10: ``ticket_event_ids`` keyed by ``(ticket_id, seq)`` (each ticket's ids
    in order, as they are read), unique on ``(event_id, ticket_id)`` (an id once per
    ticket, as before; and the look-up by event id the separate index of version 6 was
    for), and ``added_at`` indexed for the restart's seeding. Each appended id updated
    four B-trees (key, the ``(ticket_id, seq)`` and ``event_id`` indexes, ``added_at``);
    now three. Rows and their order are unchanged."""
    for statement in _EVENT_IDS_BY_SEQ[dialect]:
        conn.execute(text(statement))


def _cards_per_unit(conn: Connection, dialect: str) -> None:
    """Version 4: copy the cards into ``escalations_v4`` with the unit that held the
    ticket (from the escalator's audit entry, else the ticket's department), all on the
    first clock, then put the new table in the old one's place."""
    rows = conn.execute(text(
        "SELECT e.ticket_id, e.stage, e.at, e.actor, t.department, t.level, t.due_at"
        " FROM escalations e LEFT JOIN tickets t ON t.ticket_id = e.ticket_id")).fetchall()
    for row in rows:
        audit = conn.execute(text(
            "SELECT data FROM ticket_events WHERE ticket_id = :t AND action = 'escalate'"
            " ORDER BY id"), {"t": row.ticket_id}).fetchall()
        data: dict[str, object] = {}
        for entry in audit:
            candidate = json.loads(entry.data)
            if candidate.get("stage") == row.stage:
                data = candidate
                break
        conn.execute(text(
            "INSERT INTO escalations_v4 (ticket_id, clock_seq, stage, at, actor, department,"
            " phase, level, unit, due_at) VALUES (:t, 1, :stage, :at, :actor, :department,"
            " 'unit', :level, :unit, :due_at)"),
            {"t": row.ticket_id, "stage": row.stage, "at": row.at, "actor": row.actor,
             "department": data.get("department") or row.department or "",
             "level": data.get("level") or row.level, "unit": data.get("unit"),
             "due_at": row.due_at})
    conn.execute(text("DROP TABLE escalations"))
    conn.execute(text("ALTER TABLE escalations_v4 RENAME TO escalations"))
    conn.execute(text("CREATE INDEX escalations_department ON escalations (department, at)"))


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
    # Cards belong to the unit that held the ticket when its deadline passed, and each
    # clock (a dispatch, a recall) has its own: the key gains ``clock_seq`` and the row
    # names the department, phase (review | unit), level, unit and the deadline missed.
    Migration(4, "escalations per unit and clock: cards stay with the unit that held it", (
        """CREATE TABLE escalations_v4 (
            ticket_id TEXT NOT NULL,
            clock_seq INTEGER NOT NULL,
            stage TEXT NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            department TEXT NOT NULL,
            phase TEXT NOT NULL,
            level TEXT,
            unit TEXT,
            due_at TEXT,
            PRIMARY KEY (ticket_id, clock_seq, stage))""",
    ), run=_cards_per_unit),
    # Named people instead of shared role tokens. A password is stored only as its argon2
    # hash; an API token and a session cookie only as their SHA-256 (both are random, so a
    # fast digest suffices and a lookup stays one indexed read). ``auth_epoch`` goes up
    # when a password is reset: sessions made before it stop working.
    Migration(5, "users: named accounts, API tokens, login sessions, login throttle", (
        """CREATE TABLE users (
            id {serial},
            username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            role TEXT NOT NULL,
            department TEXT,
            password_hash TEXT NOT NULL,
            auth_epoch INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            disabled_at TEXT)""",
        """CREATE TABLE user_tokens (
            id {serial},
            user_id BIGINT NOT NULL REFERENCES users (id),
            token_sha256 TEXT NOT NULL UNIQUE,
            label TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT)""",
        "CREATE INDEX user_tokens_user ON user_tokens (user_id)",
        """CREATE TABLE user_sessions (
            session_sha256 TEXT PRIMARY KEY,
            user_id BIGINT NOT NULL REFERENCES users (id),
            auth_epoch INTEGER NOT NULL,
            csrf_token TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL)""",
        "CREATE INDEX user_sessions_expires ON user_sessions (expires_at)",
        """CREATE TABLE login_throttle (
            throttle_key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            window_start TEXT NOT NULL,
            locked_until TEXT,
            updated_at TEXT NOT NULL)""",
        "CREATE INDEX login_throttle_updated ON login_throttle (updated_at)",
    )),
    # Evidence images kept by the centre (ticketing/evidence.py): metadata here, bytes in
    # the evidence folder or object store. Reading one is authorized by the tickets that
    # hold its detection, found by event id alone: hence the second index.
    Migration(6, "evidence: camera snapshots kept by the centre", (
        """CREATE TABLE evidence (
            event_id TEXT PRIMARY KEY,
            station_id TEXT NOT NULL,
            source_id TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            sha256 TEXT NOT NULL,
            stored_at TEXT NOT NULL)""",
        "CREATE INDEX evidence_stored ON evidence (stored_at, event_id)",
        "CREATE INDEX ticket_event_ids_event ON ticket_event_ids (event_id)",
    )),
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
    # The stream stage's durable state (hot-spot baselines, windows, open tracks): the
    # latest checkpoint per runtime instance, and the detections committed since it, one
    # row per batch, written in the batch's transaction (ticketing/checkpoints.py).
    Migration(8, "stream_checkpoints and stream_journal: durable hot-spot state", (
        """CREATE TABLE stream_checkpoints (
            name TEXT PRIMARY KEY,
            format INTEGER NOT NULL,
            saved_at TEXT NOT NULL,
            body {blob} NOT NULL)""",
        """CREATE TABLE stream_journal (
            id {serial},
            name TEXT NOT NULL,
            lines TEXT NOT NULL)""",
        "CREATE INDEX stream_journal_name ON stream_journal (name, id)",
    )),
    # Department webhooks (ticketing/deliveries.py): each row is for one receiver, claimed
    # and retried by that receiver's dispatcher alone; rows written before are the
    # upstream centre's.
    Migration(9, "outbox.destination: a department's own webhook beside the centre's", (
        "ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'centre'",
        "CREATE INDEX outbox_destination_due ON outbox"
        " (destination, delivered_at, failed_at, next_attempt_at)",
    )),
    # The desk appends every detection's id: four B-trees a row made the id rows the
    # largest part of a batch's transaction after the ticket rows (docs/runtime.md
    # "Speed"). The statements differ per dialect, so all of them are in the step.
    Migration(10, "ticket_event_ids keyed by (ticket_id, seq); one unique event-id index",
              (), run=_event_ids_by_seq),
)

MIGRATIONS = tuple(sorted(MIGRATIONS, key=lambda m: m.version))
VERSIONS = tuple(m.version for m in MIGRATIONS)
LATEST = VERSIONS[-1]


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
    for migration in sorted(MIGRATIONS, key=lambda m: m.version):
        if migration.version in done:
            continue
        for statement in migration.statements:
            conn.execute(text(statement.replace("{serial}", serial).replace(
                "{without_rowid}", " WITHOUT ROWID" if dialect == "sqlite" else "").replace(
                "{blob}", "BYTEA" if dialect == "postgresql" else "BLOB")))
        if migration.run is not None:
            migration.run(conn, dialect)
        conn.execute(text("INSERT INTO schema_migrations (version, name, applied_at) "
                          "VALUES (:v, :n, :at)"),
                     {"v": migration.version, "n": migration.name,
                      "at": datetime.now(UTC).isoformat()})
        log.info("applied ticket-store migration %d: %s", migration.version, migration.name)
        applied.append(migration.version)
    return applied
