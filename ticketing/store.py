"""Ticket stores: in memory (replay) and SQLite (the embedded service).

Both keep the two indexes the desk needs: the open ticket of a (cell, kind), and the
ticket an incident already belongs to. Writes are upserts keyed by ``ticket_id``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ticketing.models import OPEN_STATUSES, Ticket, rfc3339


@dataclass(frozen=True, slots=True)
class TicketFilter:
    status: str | None = None
    kind: str | None = None
    cell_id: str | None = None
    district: str | None = None
    town: str | None = None
    village: str | None = None
    department: str | None = None
    review: str | None = None
    opened_from: datetime | None = None
    opened_to: datetime | None = None


class TicketStore(Protocol):
    def get(self, ticket_id: str) -> Ticket | None: ...
    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None: ...
    def ticket_for_incident(self, incident_id: str) -> Ticket | None: ...
    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None: ...
    def list(self, flt: TicketFilter = ..., *, limit: int = 100,
             offset: int = 0) -> list[Ticket]: ...
    def count(self, flt: TicketFilter = ...) -> int: ...
    def all(self) -> Iterator[Ticket]: ...


def _matches(t: Ticket, f: TicketFilter) -> bool:
    return ((f.status is None or t.status.value == f.status)
            and (f.kind is None or t.kind == f.kind)
            and (f.cell_id is None or t.cell_id == f.cell_id)
            and (f.district is None or t.district == f.district)
            and (f.town is None or t.town == f.town)
            and (f.village is None or t.village == f.village)
            and (f.department is None or t.department == f.department)
            and (f.review is None or t.review.value == f.review)
            and (f.opened_from is None or t.opened_at >= f.opened_from)
            and (f.opened_to is None or t.opened_at < f.opened_to))


class MemoryTicketStore:
    """Dict-backed; what replay uses (no I/O until the end)."""

    def __init__(self) -> None:
        self._tickets: dict[str, Ticket] = {}
        self._open: dict[tuple[str, str], str] = {}
        self._by_incident: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._tickets)

    def get(self, ticket_id: str) -> Ticket | None:
        return self._tickets.get(ticket_id)

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        ticket_id = self._open.get((cell_id, kind))
        return None if ticket_id is None else self._tickets[ticket_id]

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        ticket_id = self._by_incident.get(incident_id)
        return None if ticket_id is None else self._tickets[ticket_id]

    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        self._tickets[ticket.ticket_id] = ticket
        key = (ticket.cell_id, ticket.kind)
        if ticket.status in OPEN_STATUSES:
            self._open[key] = ticket.ticket_id
        elif self._open.get(key) == ticket.ticket_id:
            del self._open[key]
        if incident_id is not None:
            self._by_incident[incident_id] = ticket.ticket_id

    def list(self, flt: TicketFilter = TicketFilter(), *, limit: int = 100,
             offset: int = 0) -> list[Ticket]:
        rows = sorted((t for t in self._tickets.values() if _matches(t, flt)),
                      key=lambda t: (t.opened_at, t.ticket_id))
        return rows[offset:offset + limit]

    def count(self, flt: TicketFilter = TicketFilter()) -> int:
        return sum(1 for t in self._tickets.values() if _matches(t, flt))

    def all(self) -> Iterator[Ticket]:
        return iter(sorted(self._tickets.values(), key=lambda t: (t.opened_at, t.ticket_id)))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
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
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_open ON tickets (cell_id, kind, status);
CREATE INDEX IF NOT EXISTS tickets_opened ON tickets (opened_at, ticket_id);
CREATE TABLE IF NOT EXISTS incident_tickets (
    incident_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL REFERENCES tickets (ticket_id)
);
"""

_OPEN_VALUES = tuple(s.value for s in OPEN_STATUSES)


class SqliteTicketStore:
    """SQLite-backed (WAL); the embedded single-box default. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _one(self, sql: str, params: tuple[object, ...]) -> Ticket | None:
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return None if row is None else Ticket.from_public(json.loads(row[0]))

    def get(self, ticket_id: str) -> Ticket | None:
        return self._one("SELECT body FROM tickets WHERE ticket_id = ?", (ticket_id,))

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        marks = ",".join("?" * len(_OPEN_VALUES))
        return self._one(
            f"SELECT body FROM tickets WHERE cell_id = ? AND kind = ? AND status IN ({marks})"
            " ORDER BY opened_at DESC, ticket_id LIMIT 1",
            (cell_id, kind, *_OPEN_VALUES),
        )

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        return self._one(
            "SELECT t.body FROM incident_tickets i JOIN tickets t USING (ticket_id)"
            " WHERE i.incident_id = ?", (incident_id,))

    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        body = ticket.to_public()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO tickets (ticket_id, kind, cell_id, district, town, village,"
                    " department, status, review, priority, opened_at, due_at, updated_at,"
                    " body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (ticket_id) DO UPDATE SET status = excluded.status,"
                    " review = excluded.review, department = excluded.department,"
                    " priority = excluded.priority, due_at = excluded.due_at,"
                    " opened_at = excluded.opened_at,"
                    " updated_at = excluded.updated_at, body = excluded.body",
                    (ticket.ticket_id, ticket.kind, ticket.cell_id, ticket.district,
                     ticket.town, ticket.village, ticket.department, body["status"],
                     body["review"], ticket.priority, body["opened_at"], body["due_at"],
                     body["updated_at"], json.dumps(body, sort_keys=True)),
                )
                if incident_id is not None:
                    self._conn.execute(
                        "INSERT OR IGNORE INTO incident_tickets VALUES (?, ?)",
                        (incident_id, ticket.ticket_id))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _where(self, f: TicketFilter) -> tuple[str, list[object]]:
        clauses, params = [], []
        for column in ("status", "kind", "cell_id", "district", "town", "village",
                       "department", "review"):
            value = getattr(f, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if f.opened_from is not None:
            clauses.append("opened_at >= ?")
            params.append(rfc3339(f.opened_from))
        if f.opened_to is not None:
            clauses.append("opened_at < ?")
            params.append(rfc3339(f.opened_to))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list(self, flt: TicketFilter = TicketFilter(), *, limit: int = 100,
             offset: int = 0) -> list[Ticket]:
        where, params = self._where(flt)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT body FROM tickets{where} ORDER BY opened_at, ticket_id"
                " LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
        return [Ticket.from_public(json.loads(r[0])) for r in rows]

    def count(self, flt: TicketFilter = TicketFilter()) -> int:
        where, params = self._where(flt)
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM tickets{where}",
                                          params).fetchone()[0])

    def all(self) -> Iterator[Ticket]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT body FROM tickets ORDER BY opened_at, ticket_id").fetchall()
        return (Ticket.from_public(json.loads(r[0])) for r in rows)
