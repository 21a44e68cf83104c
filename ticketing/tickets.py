"""The ``tickets`` table: a row per ticket (the columns lists filter and sort on, and the
ticket's JSON ``body``), the incident links (``incident_tickets``), and the errors of a
stale write.

:class:`TicketTable` reads tickets (with their ``event_ids``, :mod:`ticketing.event_ids`)
and writes rows in the caller's connection; :class:`~ticketing.store.SqlTicketStore`
composes it with the audit, review, card, delivery and change-log writes of the same
transaction. Writes are version-checked: a row is updated only at the version the writer
read (optimistic concurrency), else :class:`VersionConflict`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import MISSING, fields
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import Connection, TextClause, bindparam, text

from ticketing.engine import chunks, driver_sql, sortable
from ticketing.event_ids import EventIdTable, IdRow, new_rows
from ticketing.models import OPEN_STATUSES, Ticket
from ticketing.queries import Sort, TicketFilter, order_sql, where_sql


class TicketNotFound(KeyError):
    """No ticket with that id."""


class VersionConflict(Exception):
    """The ticket changed since the caller read it (optimistic concurrency; HTTP 409)."""

    def __init__(self, ticket_id: str, *, expected: int | None, current: int) -> None:
        super().__init__(f"ticket {ticket_id} is at version {current}, "
                         f"not {expected}; re-read it and try again")
        self.ticket_id = ticket_id
        self.expected = expected
        self.current = current


class OpenTicketMoved(VersionConflict):
    """A (cell, kind) that a writer took to have a certain open ticket has another one
    now, or none (an operator opened, reopened or closed one meanwhile)."""

    def __init__(self, key: tuple[str, str], *, expected: str, actual: str | None) -> None:
        Exception.__init__(self, f"the open ticket of {key} is {actual}, not {expected};"
                                 " re-read it and try again")
        self.ticket_id = expected
        self.expected = None
        self.current = -1
        self.key = key
        self.actual = actual


COLUMNS = ("ticket_id, kind, cell_id, district, town, village, department, status,"
           " review, priority, opened_at, due_at, red_at, updated_at, version,"
           " escalation, origin, level, event_count, body")

BODY = "ticket_id, event_count, body"
"""The columns a ticket is read from (see :meth:`TicketTable.hydrate`)."""

# The statements of the desk's hot paths are built once: ``text()`` parses its SQL and a
# new clause computes its cache key again, which cost more than the SQLite call itself.
OPEN_SQL = ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATUSES, key=lambda s: s.value))
"""The open statuses as a SQL list (``status IN (...)``)."""
_COLUMN_NAMES = tuple(c.strip() for c in COLUMNS.split(","))
GET = text(f"SELECT {BODY} FROM tickets WHERE ticket_id = :id")
_OPEN_FOR = text(f"SELECT {BODY} FROM tickets WHERE cell_id = :cell AND kind = :kind"
                 f" AND status IN ({OPEN_SQL}) ORDER BY opened_at DESC, ticket_id LIMIT 1")
# the ticket open_for gives, for every (cell, kind) of some cells at once
_OPEN_IN_CELLS = text(
    "SELECT cell_id, kind, ticket_id FROM (SELECT cell_id, kind, ticket_id, row_number()"
    " OVER (PARTITION BY cell_id, kind ORDER BY opened_at DESC, ticket_id) AS n"
    f" FROM tickets WHERE cell_id IN :cells AND status IN ({OPEN_SQL})) AS o"
    " WHERE n = 1").bindparams(bindparam("cells", expanding=True))
_FOR_INCIDENT = text("SELECT t.ticket_id, t.event_count, t.body FROM incident_tickets i"
                     " JOIN tickets t ON t.ticket_id = i.ticket_id WHERE i.incident_id = :id")
_INSERT = text(f"INSERT INTO tickets ({COLUMNS}) VALUES ("
               + ", ".join(f":{c}" for c in _COLUMN_NAMES)
               + ") ON CONFLICT (ticket_id) DO NOTHING")
_UPDATE = ("UPDATE tickets SET "
           + ", ".join(f"{c} = :{c}" for c in _COLUMN_NAMES if c != "ticket_id")
           + " WHERE ticket_id = :ticket_id AND version = :expected")
_VERSION_BODY = text("SELECT ticket_id, version, body FROM tickets WHERE ticket_id IN :ids"
                     ).bindparams(bindparam("ids", expanding=True))
_LINKED = text("SELECT incident_id FROM incident_tickets WHERE incident_id IN :ids"
               ).bindparams(bindparam("ids", expanding=True))
_LINK_INCIDENT = text("INSERT INTO incident_tickets (incident_id, ticket_id) VALUES (:i, :t)"
                      " ON CONFLICT (incident_id) DO NOTHING")
_RELINK_INCIDENTS = text("UPDATE incident_tickets SET ticket_id = :into WHERE ticket_id = :id")
_ALL = text(f"SELECT {BODY} FROM tickets ORDER BY opened_at, ticket_id")


def _stored_rows(*, for_update: bool) -> TextClause:
    """Version, status and id count of some tickets, locked on PostgreSQL (in id order, so
    two writers locking overlapping sets wait for each other instead of deadlocking)."""
    return text("SELECT ticket_id, version, status, event_count FROM tickets"
                " WHERE ticket_id IN :ids ORDER BY ticket_id"
                + (" FOR UPDATE" if for_update else "")).bindparams(
        bindparam("ids", expanding=True))


_encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode  # json.dumps's output


def ticket_row(ticket: Ticket, *, event_count: int) -> dict[str, object]:
    """The row's values (the ``body`` without ``event_ids``: those are appended to
    ``ticket_event_ids``)."""
    body = ticket.to_public(event_ids=False)
    return {
        "ticket_id": ticket.ticket_id, "kind": ticket.kind, "cell_id": ticket.cell_id,
        "district": ticket.district, "town": ticket.town, "village": ticket.village,
        "department": ticket.department, "status": ticket.status.value,
        "review": ticket.review.value, "priority": ticket.priority,
        "opened_at": sortable(ticket.opened_at), "due_at": sortable(ticket.due_at),
        "red_at": sortable(ticket.red_at), "updated_at": sortable(ticket.updated_at),
        "version": ticket.version, "escalation": ticket.escalation.value,
        "origin": ticket.origin.value, "level": ticket.level,
        "event_count": event_count,
        "body": _encode(body),
    }


def _public_default(field: Any) -> Any:
    if field.default is not MISSING:
        return field.default.value if isinstance(field.default, Enum) else field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return None


# what a stored body lacks (written before a field existed) reads as the field's default
_PUBLIC_NAMES = tuple(f.name for f in fields(Ticket))
_PUBLIC_DEFAULTS = {f.name: _public_default(f) for f in fields(Ticket)}
_BODY_KEYS = frozenset(_PUBLIC_NAMES) - {"event_ids"}  # a stored body's keys


class TicketTable:
    """Reads and version-checked writes of ticket rows for one database dialect.

    Args:
        dialect: ``"sqlite"`` or ``"postgresql"`` (row locks and placeholders).
        event_ids: the id table (and its cache) tickets are read with.
    """

    def __init__(self, dialect: str, event_ids: EventIdTable) -> None:
        self.dialect = dialect
        self.event_ids = event_ids
        locking = dialect == "postgresql"
        self._stored = _stored_rows(for_update=locking)
        self._update_sql = driver_sql(_UPDATE, dialect)
        self._get_for_update = text(f"SELECT {BODY} FROM tickets WHERE ticket_id = :id"
                                    + (" FOR UPDATE" if locking else ""))

    # -- reads ----------------------------------------------------------------------
    def hydrate(self, conn: Connection, rows: Any, *, every: bool = False) -> list[Ticket]:
        """Tickets from ``(ticket_id, event_count, body)`` rows with their ``event_ids``.
        ``every``: the rows are all tickets (read the id table whole, not by ticket)."""
        tickets: list[Ticket] = []
        counts: dict[str, int] = {}
        for row in rows:
            ticket = Ticket.from_public(json.loads(row.body))
            tickets.append(ticket)
            counts[ticket.ticket_id] = int(row.event_count)
        ids = self.event_ids.of(conn, counts, every=every)
        for ticket in tickets:
            ticket.event_ids = ids.get(ticket.ticket_id, [])
        return tickets

    def _one(self, conn: Connection, query: TextClause,
             params: dict[str, object]) -> Ticket | None:
        row = conn.execute(query, params).first()
        return None if row is None else self.hydrate(conn, [row])[0]

    def get(self, conn: Connection, ticket_id: str) -> Ticket | None:
        return self._one(conn, GET, {"id": ticket_id})

    def open_for(self, conn: Connection, cell_id: str, kind: str) -> Ticket | None:
        """The open ticket of a cell and kind (the latest opened if there are several)."""
        return self._one(conn, _OPEN_FOR, {"cell": cell_id, "kind": kind})

    def for_incident(self, conn: Connection, incident_id: str) -> Ticket | None:
        return self._one(conn, _FOR_INCIDENT, {"id": incident_id})

    def page_rows(self, conn: Connection, flt: TicketFilter, *, limit: int, offset: int,
                  sort: Sort) -> Sequence[Any]:
        where, params = where_sql(flt, time=sortable)
        # the driver's own statement: text() would parse the SQL and compute a cache key
        # on every call, which cost as much as SQLite running it
        sql = driver_sql(f"SELECT {BODY} FROM tickets{where} {order_sql(sort)}"
                         " LIMIT :limit OFFSET :offset", self.dialect)
        return conn.exec_driver_sql(sql, {**params, "limit": limit,
                                          "offset": offset}).fetchall()

    def page(self, conn: Connection, flt: TicketFilter, *, limit: int, offset: int,
             sort: Sort) -> list[Ticket]:
        return self.hydrate(conn, self.page_rows(conn, flt, limit=limit, offset=offset,
                                                 sort=sort))

    def page_public(self, conn: Connection, flt: TicketFilter, *, limit: int, offset: int,
                    sort: Sort) -> tuple[list[dict[str, Any]], int]:
        """A page as ``Ticket.to_public()`` dicts read straight from the stored JSON
        bodies (no :class:`Ticket` is built) and the total matching; the count is
        skipped when the page itself shows the total."""
        rows = self.page_rows(conn, flt, limit=limit, offset=offset, sort=sort)
        ids = self.event_ids.of(conn, {row.ticket_id: int(row.event_count)
                                       for row in rows})
        if len(rows) < limit and (rows or offset == 0):
            total = offset + len(rows)
        else:
            where, params = where_sql(flt, time=sortable)
            total = int(conn.exec_driver_sql(driver_sql(
                f"SELECT count(*) FROM tickets{where}", self.dialect),
                params).scalar_one())
        defaults = _PUBLIC_DEFAULTS
        out = []
        for ticket_id, body_text in ((row.ticket_id, row.body) for row in rows):
            body = orjson.loads(body_text)
            if body.keys() != _BODY_KEYS:  # written before (or after) a field existed
                body = {name: body[name] if name in body else defaults[name]
                        for name in _PUBLIC_NAMES}
            body["event_ids"] = ids.get(ticket_id, [])
            out.append(body)
        return out, total

    @staticmethod
    def count(conn: Connection, flt: TicketFilter) -> int:
        where, params = where_sql(flt, time=sortable)
        return int(conn.execute(text(f"SELECT count(*) FROM tickets{where}"), params)
                   .scalar_one())

    def all(self, conn: Connection) -> list[Ticket]:
        """Every ticket, oldest opened first."""
        return self.hydrate(conn, conn.execute(_ALL).fetchall(), every=True)

    # -- writes (in the caller's transaction) ----------------------------------------
    def stored_versions(self, conn: Connection, ticket_ids: list[str]) -> dict[
            str, tuple[int, str, int]]:
        """(version, status, event_count) of the tickets that exist, locked on
        PostgreSQL until the transaction ends."""
        stored: dict[str, tuple[int, str, int]] = {}
        for chunk in chunks(sorted(set(ticket_ids))):
            for ticket_id, version, status, event_count in conn.execute(
                    self._stored, {"ids": chunk}):
                stored[ticket_id] = (int(version), status, int(event_count))
        return stored

    def load_for_update(self, conn: Connection, ticket_id: str) -> tuple[Ticket, int]:
        """The ticket (locked on PostgreSQL) and its stored ``event_count``; raises
        :class:`TicketNotFound`."""
        row = conn.execute(self._get_for_update, {"id": ticket_id}).first()
        if row is None:
            raise TicketNotFound(ticket_id)
        return self.hydrate(conn, [row])[0], int(row.event_count)

    @staticmethod
    def check_open(conn: Connection, expected: dict[tuple[str, str], str]) -> None:
        """Raise :class:`OpenTicketMoved` unless each (cell, kind)'s open ticket (what
        :meth:`open_for` gives) is the expected one."""
        actual: dict[tuple[str, str], str] = {}
        for chunk in chunks(sorted({cell_id for cell_id, _ in expected})):
            for cell_id, kind, ticket_id in conn.execute(_OPEN_IN_CELLS, {"cells": chunk}):
                actual[(cell_id, kind)] = ticket_id
        for key, ticket_id in expected.items():
            if actual.get(key) != ticket_id:
                raise OpenTicketMoved(key, expected=ticket_id, actual=actual.get(key))

    @staticmethod
    def insert(conn: Connection, values: dict[str, object]) -> bool:
        """Insert a row (:func:`ticket_row`); False if the ticket id exists."""
        return bool(conn.execute(_INSERT, values).rowcount == 1)

    def update_many(self, conn: Connection, updates: list[dict[str, object]]) -> None:
        """Rewrite rows (:func:`ticket_row` plus ``expected``: the version each must
        still be at), else :class:`VersionConflict` naming a stale one."""
        # the rows are locked at the versions read (PostgreSQL FOR UPDATE, SQLite's write
        # lock), so each update matches; the count double-checks (one row at most per
        # update, so a total short of the list is a miss)
        if conn.exec_driver_sql(self._update_sql, updates).rowcount != len(updates):
            self._raise_stale(conn, updates)

    @staticmethod
    def _raise_stale(conn: Connection, updates: list[dict[str, object]]) -> None:
        """Name a ticket whose version-checked update matched no row: the one whose
        stored body is not the one written (the others are, in this transaction)."""
        stored: dict[str, tuple[int, str]] = {}
        for chunk in chunks([str(values["ticket_id"]) for values in updates]):
            for ticket_id, version, body in conn.execute(_VERSION_BODY, {"ids": chunk}):
                stored[ticket_id] = (int(version), body)
        for values in updates:
            ticket_id = str(values["ticket_id"])
            current, body = stored.get(ticket_id, (0, ""))
            if body != values["body"]:
                raise VersionConflict(ticket_id, expected=values["expected"],  # type: ignore[arg-type]
                                      current=current)
        raise VersionConflict(str(updates[0]["ticket_id"]), expected=None, current=-1)

    def update_row(self, conn: Connection, ticket: Ticket, *, expected_version: int,
                   stored_events: int, new_ids: list[IdRow]) -> None:
        """Rewrite the ticket row (not its event ids); the ids past ``stored_events`` go
        to ``new_ids`` for :meth:`EventIdTable.append`. The caller holds the row at
        ``expected_version``, which the ticket was read at, so the stored ids are a
        prefix of ``ticket.event_ids``."""
        values = ticket_row(ticket, event_count=max(stored_events, len(ticket.event_ids)))
        values["expected"] = expected_version
        updated = conn.exec_driver_sql(self._update_sql, values).rowcount
        if updated != 1:
            raise VersionConflict(ticket.ticket_id, expected=expected_version,
                                  current=-1)
        new_ids += new_rows(ticket, stored=stored_events)

    @staticmethod
    def linked(conn: Connection, incident_ids: list[str]) -> set[str]:
        """The incidents of ``incident_ids`` linked to a ticket."""
        found: set[str] = set()
        for part in chunks(incident_ids):
            found.update(row[0] for row in conn.execute(_LINKED, {"ids": part}))
        return found

    @staticmethod
    def link_incidents(conn: Connection, links: list[dict[str, object]]) -> int:
        """Link incidents (``{"i": incident_id, "t": ticket_id}``) to tickets; returns
        how many links were new (an incident already linked keeps its ticket)."""
        return int(conn.execute(_LINK_INCIDENT, links).rowcount) if links else 0

    @staticmethod
    def relink_incidents(conn: Connection, *, from_ticket: str, into: str) -> None:
        """Move every incident of ``from_ticket`` to ``into`` (a merge)."""
        conn.execute(_RELINK_INCIDENTS, {"into": into, "id": from_ticket})
