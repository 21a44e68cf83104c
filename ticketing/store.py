"""Ticket stores: in memory (replay) and SQL (SQLite by default, PostgreSQL by config).

Both keep the two indexes the desk needs: the open ticket of a (cell, kind), and the
ticket an incident already belongs to. Desk writes are upserts keyed by ``ticket_id``.

:class:`SqlTicketStore` is also the service store: lifecycle changes (:meth:`modify`) run
in one transaction that locks the row, checks the version (optimistic concurrency),
writes the ticket, its audit entries, the source review counts, the escalation record
and the webhook outbox together, so two API replicas or two escalators on one database
never apply the same change twice.

>>> store = SqliteTicketStore(":memory:")
>>> store.count()
0
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection, Engine, TextClause, bindparam, create_engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from ticketing import changelog
from ticketing.lifecycle import AuditEntry
from ticketing.migrations import migrate
from ticketing.models import OPEN_STATUSES, Review, Ticket, rfc3339
from ticketing.outbox import CENTRE, OutboxItem, OutboxTargets, as_targets
from ticketing.outbox import claim as claim_rows
from ticketing.outbox import release as release_rows
from ticketing.outbox import write as write_outbox
from ticketing.queries import (
    ANY_TICKET,
    DEFAULT_SORT,
    Sort,
    TicketFilter,
    matches,
    order_sql,
    sort_key,
    where_sql,
)
from ticketing.routing import clock_record

log = logging.getLogger(__name__)


class TicketStore(Protocol):
    def get(self, ticket_id: str) -> Ticket | None: ...
    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None: ...
    def ticket_for_incident(self, incident_id: str) -> Ticket | None: ...
    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None: ...
    def list(self, flt: TicketFilter = ..., *, limit: int = 100,
             offset: int = 0, sort: Sort = ...) -> list[Ticket]: ...
    def count(self, flt: TicketFilter = ...) -> int: ...
    def all(self) -> Iterator[Ticket]: ...


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

    def list(self, flt: TicketFilter = ANY_TICKET, *, limit: int = 100,
             offset: int = 0, sort: Sort = DEFAULT_SORT) -> list[Ticket]:
        rows = sorted((t for t in self._tickets.values() if matches(t, flt)),
                      key=sort_key(sort))
        return rows[offset:offset + limit]

    def count(self, flt: TicketFilter = ANY_TICKET) -> int:
        return sum(1 for t in self._tickets.values() if matches(t, flt))

    def all(self) -> Iterator[Ticket]:
        return iter(sorted(self._tickets.values(), key=lambda t: (t.opened_at, t.ticket_id)))


# -- SQL ----------------------------------------------------------------------------------

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


class AlreadyEscalated(Exception):
    """Another worker recorded this escalation first (the unique row exists)."""


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Review outcomes of one source (``station/source``)."""

    source_id: str
    confirmed: int
    dismissed: int

    @property
    def reviewed(self) -> int:
        return self.confirmed + self.dismissed

    @property
    def false_positive_rate(self) -> float | None:
        return None if self.reviewed == 0 else self.dismissed / self.reviewed


@dataclass(frozen=True, slots=True)
class Change:
    """What one committed write did to one ticket; given to change listeners."""

    type: str  # created | updated | an action (accept, dismiss, ...) | escalate
    ticket: Ticket
    entries: tuple[AuditEntry, ...] = ()
    seq: int | None = None  # its place in the change log (set when committed)
    # the department that held the ticket before this change, when the change moved it
    # to another one (its own webhook hears of the move: ticketing.outbox)
    department_from: str | None = None


def sortable(value: datetime) -> str:
    """A fixed-width UTC timestamp; compares correctly as text in both databases.

    >>> sortable(datetime(2026, 5, 4, 6, 0, 32, tzinfo=UTC))
    '2026-05-04T06:00:32.000000Z'
    """
    offset = value.utcoffset()
    if offset is None or type(value) is not datetime:
        return _sortable(value)  # naive (local time, which may change) or a subclass
    # the offset is in the cache key: two times differing only in ``fold`` are equal
    return _sortable_aware(value, offset)


def _sortable(value: datetime) -> str:
    # isoformat with a fixed timespec: strftime's "%Y-%m-%dT%H:%M:%S.%fZ", faster
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@functools.lru_cache(maxsize=8192)  # a desk write spells the same few times again and again
def _sortable_aware(value: datetime, offset: timedelta) -> str:
    return _sortable(value)


def _normalise_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


ChangeListener = Callable[[Change], None]
Mutation = Callable[[Ticket, Callable[[str], Ticket]], list[AuditEntry]]

_TICKET_COLUMNS = ("ticket_id, kind, cell_id, district, town, village, department, status,"
                   " review, priority, opened_at, due_at, red_at, updated_at, version,"
                   " escalation, origin, level, event_count, body")

# a ticket row and how many of its ``ticket_event_ids`` it has (see :meth:`_hydrate`)
_BODY = "ticket_id, event_count, body"
_IN_CHUNK = 500  # ticket ids per ``IN (...)`` (SQLite caps bound parameters)
# the event ids of recently read tickets are kept between reads (see :meth:`_hydrate`),
# up to this many ids in all (least recently read tickets dropped first)
_IDS_CACHE_BUDGET = 250_000
_IDS_FROM = text("SELECT event_id FROM ticket_event_ids WHERE ticket_id = :id"
                 " AND seq >= :upto AND seq < :n ORDER BY seq")
# executed with the driver's own placeholders (see :func:`_driver_sql`), rows as tuples
_IDS_APPEND = ("INSERT INTO ticket_event_ids (ticket_id, event_id, seq, added_at)"
               " VALUES (?, ?, ?, ?) ON CONFLICT (ticket_id, event_id) DO NOTHING")
_IDS_OF_ONE = text("SELECT ticket_id, event_id, seq FROM ticket_event_ids"
                   " WHERE ticket_id = :id AND seq < :n ORDER BY seq")
_IDS_OF_MANY = text("SELECT ticket_id, event_id, seq FROM ticket_event_ids"
                    " WHERE ticket_id IN :ids ORDER BY ticket_id, seq").bindparams(
    bindparam("ids", expanding=True))
_IDS_OF_ALL = text("SELECT ticket_id, event_id, seq FROM ticket_event_ids"
                   " ORDER BY ticket_id, seq")

# The statements of the desk's hot paths are built once: ``text()`` parses its SQL and a
# new clause computes its cache key again, which cost more than the SQLite call itself.
_OPEN_SQL = ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATUSES, key=lambda s: s.value))
_COLUMN_NAMES = tuple(c.strip() for c in _TICKET_COLUMNS.split(","))
_GET = text(f"SELECT {_BODY} FROM tickets WHERE ticket_id = :id")
_OPEN_FOR = text(f"SELECT {_BODY} FROM tickets WHERE cell_id = :cell AND kind = :kind"
                 f" AND status IN ({_OPEN_SQL}) ORDER BY opened_at DESC, ticket_id LIMIT 1")
# the ticket open_ticket_for gives, for every (cell, kind) of some cells at once
_OPEN_IN_CELLS = text(
    "SELECT cell_id, kind, ticket_id FROM (SELECT cell_id, kind, ticket_id, row_number()"
    " OVER (PARTITION BY cell_id, kind ORDER BY opened_at DESC, ticket_id) AS n"
    f" FROM tickets WHERE cell_id IN :cells AND status IN ({_OPEN_SQL})) AS o"
    " WHERE n = 1").bindparams(bindparam("cells", expanding=True))
_FOR_INCIDENT = text("SELECT t.ticket_id, t.event_count, t.body FROM incident_tickets i"
                     " JOIN tickets t ON t.ticket_id = i.ticket_id WHERE i.incident_id = :id")
_INSERT_TICKET = text(f"INSERT INTO tickets ({_TICKET_COLUMNS}) VALUES ("
                      + ", ".join(f":{c}" for c in _COLUMN_NAMES)
                      + ") ON CONFLICT (ticket_id) DO NOTHING")
_UPDATE_TICKET = ("UPDATE tickets SET "
                  + ", ".join(f"{c} = :{c}" for c in _COLUMN_NAMES if c != "ticket_id")
                  + " WHERE ticket_id = :ticket_id AND version = :expected")
_VERSION_BODY = text("SELECT ticket_id, version, body FROM tickets WHERE ticket_id IN :ids"
                     ).bindparams(bindparam("ids", expanding=True))
_LINK_INCIDENT = text("INSERT INTO incident_tickets (incident_id, ticket_id) VALUES (:i, :t)"
                      " ON CONFLICT (incident_id) DO NOTHING")
_RELINK_INCIDENTS = text("UPDATE incident_tickets SET ticket_id = :into WHERE ticket_id = :id")
_INSERT_AUDIT = text(
    "INSERT INTO ticket_events (ticket_id, at, actor, action, from_status, to_status, note,"
    " data) VALUES (:t, :at, :actor, :action, :f, :to, :note, :data)")
# a card is recorded against the unit that held the ticket (migration 4), once per clock
_INSERT_ESCALATION = text(
    "INSERT INTO escalations (ticket_id, clock_seq, stage, at, actor, department, phase,"
    " level, unit, due_at) VALUES (:t, :seq, :stage, :at, :actor, :department, :phase,"
    " :level, :unit, :due_at)")
_COUNT_REVIEW = text(
    "INSERT INTO source_reviews (source_id, confirmed, dismissed) VALUES (:s, :c, :d)"
    " ON CONFLICT (source_id) DO UPDATE SET"
    " confirmed = source_reviews.confirmed + excluded.confirmed,"
    " dismissed = source_reviews.dismissed + excluded.dismissed")
_SUSPENDED = text("SELECT source_id FROM source_reviews WHERE confirmed + dismissed >= :n"
                  " AND dismissed > :rate * (confirmed + dismissed)")


def _stored_rows(*, for_update: bool) -> TextClause:
    """Version, status and id count of some tickets, locked on PostgreSQL (in id order, so
    two writers locking overlapping sets wait for each other instead of deadlocking)."""
    return text("SELECT ticket_id, version, status, event_count FROM tickets"
                " WHERE ticket_id IN :ids ORDER BY ticket_id"
                + (" FOR UPDATE" if for_update else "")).bindparams(
        bindparam("ids", expanding=True))


def _driver_sql(sql: str, dialect: str) -> str:
    """``sql`` (``:name`` or ``?`` parameters, as sqlite3 takes them) in the driver's
    style, for ``exec_driver_sql``: the many-row statements of a desk write skip
    SQLAlchemy's per-row parameter processing (the values are plain str and int)."""
    if dialect == "postgresql":  # psycopg: pyformat / format
        return re.sub(r":(\w+)", r"%(\1)s", sql).replace("?", "%s")
    return sql


def _chunks(values: builtins.list[str]) -> Iterator[builtins.list[str]]:
    for i in range(0, len(values), _IN_CHUNK):
        yield values[i:i + _IN_CHUNK]


_encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode  # json.dumps's output


def _ticket_row(ticket: Ticket, *, event_count: int) -> dict[str, object]:
    body = ticket.to_public(event_ids=False)  # in ticket_event_ids, appended to
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

_IdRow = tuple[str, str, int, str]  # ticket_id, event_id, seq, added_at


def _new_event_ids(ticket: Ticket, *, stored: int) -> list[_IdRow]:
    """Rows for ``ticket.event_ids[stored:]`` (``seq`` = position in the list)."""
    ticket_id, at = ticket.ticket_id, sortable(ticket.updated_at)
    return [(ticket_id, event_id, seq, at)
            for seq, event_id in enumerate(ticket.event_ids[stored:], start=stored)]


def _audit_from_row(row: Any) -> AuditEntry:
    return AuditEntry(ticket_id=row.ticket_id, at=datetime.fromisoformat(row.at),
                      actor=row.actor, action=row.action, from_status=row.from_status,
                      to_status=row.to_status, note=row.note, data=json.loads(row.data))


class SqlTicketStore:
    """Tickets in SQLite or PostgreSQL through SQLAlchemy Core; thread-safe.

    Args:
        url: ``sqlite:///path/tickets.db``, ``sqlite://`` (memory) or
            ``postgresql://user@host/db`` (psycopg 3).
        schema: PostgreSQL only: keep the tables in this schema (created if missing).
        outbox: also write every change to the webhook outbox (same transaction):
            ``True`` for the upstream centre alone, or the receivers as
            :class:`~ticketing.outbox.OutboxTargets` (what ``serve`` and ``demo`` pass:
            ``OutboxTargets.from_settings(settings)``, the centre and the departments
            with their own webhook); ``False`` or no receiver: none.
        pool_size: connections kept open (SQLite file or PostgreSQL); as many again
            may be opened for a burst.

    The schema is migrated on construction (see :mod:`ticketing.migrations`).
    """

    def __init__(self, url: str, *, schema: str | None = None,
                 outbox: bool | OutboxTargets = False, pool_size: int = 10) -> None:
        self.url = _normalise_url(url)
        self.outbox: OutboxTargets | None = as_targets(outbox)
        self._listeners: builtins.list[ChangeListener] = []
        self.engine: Engine
        memory = self.url in ("sqlite://", "sqlite:///:memory:")
        self._lock: threading.RLock | None = threading.RLock() if memory else None
        # ticket id -> (event_count covered, its first event_count ids): rows are only
        # ever appended, so a cached prefix stays true and a read fetches only the rest
        self._ids_cache: OrderedDict[str, tuple[int, tuple[str, ...]]] = OrderedDict()
        self._ids_cached = 0  # ids held in _ids_cache
        self._ids_cache_lock = threading.Lock()
        if self.url.startswith("sqlite"):
            self.dialect = "sqlite"
            if schema is not None:
                raise ValueError(f"expected schema=None for SQLite, got {schema!r}")
            kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False,
                                                       "timeout": 30}}
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                # as many pooled connections as PostgreSQL gets (a file connection is
                # cheap, but one opened per request past the pool is not free either)
                kwargs.update(pool_size=pool_size, max_overflow=pool_size)
                db = self.url.split("sqlite:///", 1)[-1]
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, **kwargs)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif self.url.startswith("postgresql"):
            self.dialect = "postgresql"
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size)
            if schema is not None:
                if not schema.replace("_", "").isalnum():
                    raise ValueError(f"expected a plain schema name, got {schema!r}")
                with self.engine.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

                def _search_path(dbapi_conn: Any, _record: Any) -> None:
                    with dbapi_conn.cursor() as cur:
                        cur.execute(f'SET search_path TO "{schema}"')
                    dbapi_conn.commit()

                event.listen(self.engine, "connect", _search_path)
                self.engine.dispose()
        else:
            raise ValueError(f"expected a sqlite:// or postgresql:// URL, got {url!r}")
        self._for_update = " FOR UPDATE" if self.dialect == "postgresql" else ""
        self._stored = _stored_rows(for_update=self.dialect == "postgresql")
        self._update_sql = _driver_sql(_UPDATE_TICKET, self.dialect)
        self._ids_append_sql = _driver_sql(_IDS_APPEND, self.dialect)
        self._get_for_update = text(f"SELECT {_BODY} FROM tickets WHERE ticket_id = :id"
                                    f"{self._for_update}")
        self.schema = schema
        self._changes_key = changelog.lock_key(schema)
        with self._write() as conn:
            self.applied_migrations = migrate(conn, dialect=self.dialect,
                                              lock_name=f"gridwatch:{schema or ''}")

    # -- plumbing -------------------------------------------------------------------
    def close(self) -> None:
        self.engine.dispose()

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(change)`` after every committed change (in the writer's
        thread; keep it quick and do not raise)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, changes: builtins.list[Change]) -> None:
        for change in changes:
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:  # a listener must not undo a committed write
                    log.exception("change listener failed for %s", change.ticket.ticket_id)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._locked(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._locked(), self.engine.connect() as conn:
            conn.execution_options(gridwatch_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction on this database (committed on exit), for the modules
        that keep tables of their own in it (:mod:`ticketing.users`, :mod:`ticketing.login`,
        :mod:`ticketing.checkpoints`); committed on exit, rolled back on an error."""
        return self._write()

    def connection(self) -> AbstractContextManager[Connection]:
        """A read connection on this database, for those modules and the query modules
        that take one (:mod:`ticketing.records`)."""
        return self._read()

    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute(text("SELECT max(version) FROM schema_migrations"))
                       .scalar_one())

    def ping(self) -> bool:
        with self._read() as conn:
            return conn.execute(text("SELECT 1")).scalar_one() == 1

    # -- reads ----------------------------------------------------------------------
    def _hydrate(self, conn: Connection, rows: Any, *,
                 every: bool = False) -> builtins.list[Ticket]:
        """Tickets from ``(ticket_id, event_count, body)`` rows with their ``event_ids``
        (see :meth:`_event_ids`). ``every``: the rows are all tickets (read the id table
        whole, not by ticket)."""
        tickets: builtins.list[Ticket] = []
        counts: dict[str, int] = {}
        for row in rows:
            ticket = Ticket.from_public(json.loads(row.body))
            tickets.append(ticket)
            counts[ticket.ticket_id] = int(row.event_count)
        ids = self._event_ids(conn, counts, every=every)
        for ticket in tickets:
            ticket.event_ids = ids.get(ticket.ticket_id, [])
        return tickets

    def _event_ids(self, conn: Connection, counts: dict[str, int], *,
                   every: bool = False) -> dict[str, builtins.list[str]]:
        """The ``event_ids`` (in the order absorbed) of tickets with these
        ``event_count``s. Only ids with ``seq < event_count`` are taken: ids are appended
        in the transaction that raises ``event_count``, so the list matches the body even
        where a writer commits between the two reads (READ COMMITTED).

        Rows are never updated or deleted, so the ids of a long-open ticket are cached
        and the next read fetches only ``seq`` from the cached count on: the desk reads
        its hot tickets once per batch without reading their whole history again."""
        ids: dict[str, builtins.list[str]] = {}
        uncached: builtins.list[str] = []
        for ticket_id, count in counts.items():
            if count == 0:
                continue
            with self._ids_cache_lock:
                cached = None if every else self._ids_cache.get(ticket_id)
            if cached is None or cached[0] > count:
                uncached.append(ticket_id)
                continue
            upto, prefix = cached
            ids[ticket_id] = list(prefix)
            if upto < count:
                ids[ticket_id] += [r[0] for r in conn.execute(
                    _IDS_FROM, {"id": ticket_id, "upto": upto, "n": count})]
        if every and uncached:
            batches = [conn.execute(_IDS_OF_ALL)]
        elif len(uncached) == 1:
            batches = [conn.execute(_IDS_OF_ONE, {"id": uncached[0],
                                                  "n": counts[uncached[0]]})]
        else:
            batches = [conn.execute(_IDS_OF_MANY, {"ids": chunk})
                       for chunk in _chunks(uncached)]
        for result in batches:
            for ticket_id, event_id, seq in result:
                if seq < counts.get(ticket_id, 0):
                    ids.setdefault(ticket_id, []).append(event_id)
        if not every:
            for ticket_id, event_ids in ids.items():
                self._cache_ids(ticket_id, counts[ticket_id], tuple(event_ids))
        return ids

    def _cache_ids(self, ticket_id: str, count: int, event_ids: tuple[str, ...]) -> None:
        with self._ids_cache_lock:
            old = self._ids_cache.pop(ticket_id, None)
            if old is not None:
                self._ids_cached -= len(old[1])
            self._ids_cache[ticket_id] = (count, event_ids)
            self._ids_cached += len(event_ids)
            while self._ids_cached > _IDS_CACHE_BUDGET and self._ids_cache:
                _, (_, dropped) = self._ids_cache.popitem(last=False)
                self._ids_cached -= len(dropped)

    def _one(self, query: TextClause, params: dict[str, object]) -> Ticket | None:
        with self._read() as conn:
            row = conn.execute(query, params).first()
            return None if row is None else self._hydrate(conn, [row])[0]

    def get(self, ticket_id: str) -> Ticket | None:
        return self._one(_GET, {"id": ticket_id})

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        """The open ticket of a cell and kind (the latest opened if there are several)."""
        return self._one(_OPEN_FOR, {"cell": cell_id, "kind": kind})

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        return self._one(_FOR_INCIDENT, {"id": incident_id})

    def _where(self, f: TicketFilter) -> tuple[str, dict[str, object]]:
        return where_sql(f, time=sortable)

    def list(self, flt: TicketFilter = ANY_TICKET, *, limit: int = 100,
             offset: int = 0, sort: Sort = DEFAULT_SORT) -> builtins.list[Ticket]:
        """Tickets matching ``flt`` in ``sort`` order (oldest opened first by default)."""
        with self._read() as conn:
            return self._hydrate(conn, self._page(conn, flt, limit=limit, offset=offset,
                                                  sort=sort))

    def page_public(self, flt: TicketFilter = ANY_TICKET, *, limit: int = 100,
                    offset: int = 0, sort: Sort = DEFAULT_SORT
                    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """What :meth:`list` gives, as ``Ticket.to_public()`` dicts read straight from the
        stored JSON bodies (no :class:`Ticket` is built), and :meth:`count`'s total: the
        API's list is this plus JSON encoding. One connection; the count is skipped when
        the page itself shows the total."""
        where, params = self._where(flt)
        with self._read() as conn:
            rows = self._page(conn, flt, limit=limit, offset=offset, sort=sort)
            ids = self._event_ids(conn, {row.ticket_id: int(row.event_count)
                                         for row in rows})
            if len(rows) < limit and (rows or offset == 0):
                total = offset + len(rows)
            else:
                total = int(conn.exec_driver_sql(_driver_sql(
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

    def _page(self, conn: Connection, flt: TicketFilter, *, limit: int, offset: int,
              sort: Sort) -> Sequence[Any]:
        where, params = self._where(flt)
        # the driver's own statement: text() would parse the SQL and compute a cache key
        # on every call, which cost as much as SQLite running it
        sql = _driver_sql(f"SELECT {_BODY} FROM tickets{where} {order_sql(sort)}"
                          " LIMIT :limit OFFSET :offset", self.dialect)
        return conn.exec_driver_sql(sql, {**params, "limit": limit,
                                          "offset": offset}).fetchall()

    def count(self, flt: TicketFilter = ANY_TICKET) -> int:
        where, params = self._where(flt)
        with self._read() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM tickets{where}"), params)
                       .scalar_one())

    def all(self) -> Iterator[Ticket]:
        with self._read() as conn:
            rows = conn.execute(text(
                f"SELECT {_BODY} FROM tickets ORDER BY opened_at, ticket_id")).fetchall()
            return iter(self._hydrate(conn, rows, every=True))

    def recent_event_ids(self, *, horizon_s: float, until: datetime | None = None
                         ) -> builtins.list[tuple[str, float]]:
        """``(event_id, added_at timestamp)`` of the ids added to tickets within
        ``horizon_s`` of the newest one, oldest first: what a restarted pipeline needs to
        recognise redelivered detections without loading every ticket. ``added_at`` is
        the ticket's ``updated_at`` (event time) of the write that added the id.

        ``until`` (a live runtime: its clock plus the future it accepts): ids added later
        than that (a bad clock's) are left out and do not count as the newest, so one
        far-future write cannot push every real id out of the horizon."""
        bound = "" if until is None else " WHERE added_at <= :until"
        params = {} if until is None else {"until": sortable(until)}
        with self._read() as conn:
            newest = conn.execute(text("SELECT max(added_at) FROM ticket_event_ids" + bound),
                                  params).scalar()
            if newest is None:
                return []
            since = datetime.strptime(newest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=UTC) - timedelta(seconds=horizon_s)
            rows = conn.execute(text(
                "SELECT event_id, added_at FROM ticket_event_ids WHERE added_at >= :since"
                + bound.replace(" WHERE", " AND") + " ORDER BY added_at, ticket_id, seq"),
                {"since": sortable(since), **params}).fetchall()
        return [(r[0], datetime.strptime(r[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC).timestamp()) for r in rows]

    def audit(self, ticket_id: str) -> builtins.list[AuditEntry]:
        """The ticket's audit log, oldest first."""
        with self._read() as conn:
            rows = conn.execute(text(
                "SELECT * FROM ticket_events WHERE ticket_id = :id ORDER BY id"),
                {"id": ticket_id}).fetchall()
        return [_audit_from_row(r) for r in rows]

    def audit_between(self, *, start: datetime, end: datetime,
                      action: str | None = None) -> builtins.list[AuditEntry]:
        """Audit entries with ``start <= at < end`` (optionally of one action)."""
        sql = "SELECT * FROM ticket_events WHERE at >= :start AND at < :end"
        params: dict[str, object] = {"start": sortable(start), "end": sortable(end)}
        if action is not None:
            sql += " AND action = :action"
            params["action"] = action
        with self._read() as conn:
            rows = conn.execute(text(sql + " ORDER BY id"), params).fetchall()
        return [_audit_from_row(r) for r in rows]

    def source_stats(self) -> builtins.list[SourceStats]:
        with self._read() as conn:
            rows = conn.execute(text("SELECT source_id, confirmed, dismissed"
                                     " FROM source_reviews ORDER BY source_id")).fetchall()
        return [SourceStats(r[0], int(r[1]), int(r[2])) for r in rows]

    def suspended_sources(self, *, max_false_positive_rate: float,
                          min_reviewed: int) -> frozenset[str]:
        """Sources whose false-positive rate is above the threshold (with enough
        reviews to judge): their tickets go to review instead of auto-dispatch."""
        with self._read() as conn:
            rows = conn.execute(_SUSPENDED, {"n": min_reviewed,
                                             "rate": max_false_positive_rate}).fetchall()
        return frozenset(r[0] for r in rows)

    def escalation_candidates(self, *, now: datetime, remind_before_s: int,
                              limit: int = 500) -> builtins.list[Ticket]:
        """Open tickets with a supervision step due at ``now`` (reminder, yellow, red)."""
        params = {"now": sortable(now),
                  "soon": sortable(now + timedelta(seconds=remind_before_s)),
                  "limit": limit}
        with self._read() as conn:
            rows = conn.execute(text(
                f"SELECT {_BODY} FROM tickets WHERE status IN ({_OPEN_SQL}) AND ("
                " (escalation = 'none' AND due_at <= :soon)"
                " OR (escalation = 'due_soon' AND due_at <= :now)"
                " OR (escalation = 'yellow' AND red_at <= :now))"
                " ORDER BY due_at, ticket_id LIMIT :limit"), params).fetchall()
            return self._hydrate(conn, rows)

    # -- change log (ticketing.changelog) ---------------------------------------------
    def change_window(self) -> changelog.LogWindow:
        """The oldest and newest ``seq`` still in the change log."""
        with self._read() as conn:
            return changelog.window(conn)

    def change_version(self) -> int:
        """The newest change's ``seq`` (0 before any): it moves on with every committed
        ticket write, from any process (a version of the whole ticket table)."""
        with self._read() as conn:
            return int(conn.execute(changelog.NEWEST).scalar() or 0)

    def changes_since(self, after: int, *, limit: int = 500) -> builtins.list[
            dict[str, Any]]:
        """Logged change messages with ``seq > after``, oldest first (``limit`` at most)."""
        with self._read() as conn:
            return changelog.since(conn, after, limit=limit)

    def prune_changes(self, *, now: datetime, retention_s: float, max_rows: int) -> int:
        """Drop changes older than ``retention_s`` before ``now`` (by the change's time)
        and all but the newest ``max_rows``; the newest is always kept."""
        with self._write() as conn:
            return changelog.prune(conn, keep=max_rows, before=sortable(
                now - timedelta(seconds=retention_s)))

    # -- writes -----------------------------------------------------------------------
    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        """The desk's upsert. A new ticket is inserted; an existing one is replaced only
        if ``ticket.version`` is newer than the stored one, else :class:`VersionConflict`
        (the desk re-reads and re-applies)."""
        self.save_many([(ticket, [incident_id] if incident_id is not None else [])])

    def save_many(self, items: builtins.list[tuple[Ticket, builtins.list[str]]], *,
                  read_versions: dict[str, int] | None = None,
                  open_tickets: dict[tuple[str, str], str] | None = None,
                  also: Callable[[Connection], None] | None = None) -> int:
        """Several desk upserts (each with the incident ids it newly absorbed) in one
        transaction: all are written or, on a :class:`VersionConflict`, none.

        ``read_versions`` (ticket id → the version the caller read) makes the check
        exact for a caller that changed a ticket several times before saving it: the
        stored version must still be the one read, and a ticket missing from it must not
        exist yet. ``open_tickets`` ((cell id, kind) → ticket id) is what a caller took
        for :meth:`open_ticket_for` without asking (a cache): each must still be the
        answer, else :class:`OpenTicketMoved` (a :class:`VersionConflict`).

        ``also(conn)`` runs last in the same transaction (the stream stage's checkpoint
        or journal, so it commits exactly with the tickets it produced).

        Returns how many of the incident links were new: fewer than given means another
        writer linked an incident first (its link is kept)."""
        changes: builtins.list[Change] = []
        new_ids: builtins.list[_IdRow] = []  # all tickets', one statement
        inserts: builtins.list[dict[str, object]] = []
        updates: builtins.list[dict[str, object]] = []
        links: builtins.list[dict[str, object]] = []
        with self._write() as conn:
            # ticket id -> (version, status, event_count) as stored, then as written
            stored = self._stored_versions(conn, [t.ticket_id for t, _ in items])
            for ticket, incident_ids in items:
                ticket_id = ticket.ticket_id
                row = stored.get(ticket_id)
                if read_versions is not None:
                    read = read_versions.get(ticket_id, 0)
                    current = 0 if row is None else row[0]
                    if current != read:
                        raise VersionConflict(ticket_id, expected=read, current=current)
                at = ticket.updated_at
                if row is None:
                    count = len(ticket.event_ids)
                    inserts.append(_ticket_row(ticket, event_count=count))
                    new_ids += _new_event_ids(ticket, stored=0)
                    entry = AuditEntry(ticket_id=ticket_id, at=at, actor="system:desk",
                                       action="create", from_status=None,
                                       to_status=ticket.status.value,
                                       note=f"opened ({ticket.review.value})",
                                       data={"origin": ticket.origin.value,
                                             "clock": clock_record(ticket)})
                    changes.append(Change("created", ticket, (entry,)))
                else:
                    version, status, stored_events = row
                    if version >= ticket.version:
                        raise VersionConflict(ticket_id, expected=ticket.version - 1,
                                              current=version)
                    count = max(stored_events, len(ticket.event_ids))
                    values = _ticket_row(ticket, event_count=count)
                    values["expected"] = version
                    updates.append(values)
                    new_ids += _new_event_ids(ticket, stored=stored_events)
                    entries: tuple[AuditEntry, ...] = ()
                    if status != ticket.status.value:
                        entries = (AuditEntry(
                            ticket_id=ticket_id, at=at, actor="system:desk",
                            action="auto_dispatch", from_status=status,
                            to_status=ticket.status.value,
                            note="a confident detection confirmed it",
                            data={"clock": clock_record(ticket)}),)
                    changes.append(Change("updated", ticket, entries))
                stored[ticket_id] = (ticket.version, ticket.status.value, count)
                links += [{"i": i, "t": ticket_id} for i in incident_ids]
            if open_tickets:
                self._check_open(conn, open_tickets)
            for values in inserts:  # new tickets are rare: one by one, each checked
                if conn.execute(_INSERT_TICKET, values).rowcount != 1:
                    raise VersionConflict(str(values["ticket_id"]), expected=None, current=0)
            if updates:
                # the rows are locked at the versions read above (PostgreSQL FOR UPDATE,
                # SQLite's write lock), so each update matches; the count double-checks
                # (one row at most per update, so a total short of the list is a miss)
                if conn.exec_driver_sql(self._update_sql, updates).rowcount != len(updates):
                    self._raise_stale(conn, updates)
            linked = conn.execute(_LINK_INCIDENT, links).rowcount if links else 0
            self._insert_event_ids(conn, new_ids)
            self._record(conn, changes)
            if also is not None:
                also(conn)
        self._notify(changes)
        return int(linked)

    def _stored_versions(self, conn: Connection, ticket_ids: builtins.list[str]) -> dict[
            str, tuple[int, str, int]]:
        """(version, status, event_count) of the tickets that exist, locked on
        PostgreSQL until the transaction ends."""
        stored: dict[str, tuple[int, str, int]] = {}
        for chunk in _chunks(sorted(set(ticket_ids))):
            for ticket_id, version, status, event_count in conn.execute(
                    self._stored, {"ids": chunk}):
                stored[ticket_id] = (int(version), status, int(event_count))
        return stored

    @staticmethod
    def _check_open(conn: Connection, expected: dict[tuple[str, str], str]) -> None:
        """Raise :class:`OpenTicketMoved` unless each (cell, kind)'s open ticket (what
        :meth:`open_ticket_for` gives) is the expected one."""
        actual: dict[tuple[str, str], str] = {}
        for chunk in _chunks(sorted({cell_id for cell_id, _ in expected})):
            for cell_id, kind, ticket_id in conn.execute(_OPEN_IN_CELLS, {"cells": chunk}):
                actual[(cell_id, kind)] = ticket_id
        for key, ticket_id in expected.items():
            if actual.get(key) != ticket_id:
                raise OpenTicketMoved(key, expected=ticket_id, actual=actual.get(key))

    @staticmethod
    def _raise_stale(conn: Connection, updates: builtins.list[dict[str, object]]) -> None:
        """Name a ticket whose version-checked update matched no row: the one whose
        stored body is not the one written (the others are, in this transaction)."""
        stored: dict[str, tuple[int, str]] = {}
        for chunk in _chunks([str(values["ticket_id"]) for values in updates]):
            for ticket_id, version, body in conn.execute(_VERSION_BODY, {"ids": chunk}):
                stored[ticket_id] = (int(version), body)
        for values in updates:
            ticket_id = str(values["ticket_id"])
            current, body = stored.get(ticket_id, (0, ""))
            if body != values["body"]:
                raise VersionConflict(ticket_id, expected=values["expected"],  # type: ignore[arg-type]
                                      current=current)
        raise VersionConflict(str(updates[0]["ticket_id"]), expected=None, current=-1)

    def create(self, ticket: Ticket, *, actor: str, note: str | None = None) -> tuple[
            Ticket, bool]:
        """Insert a ticket made outside the desk (API, Open311). Idempotent on
        ``ticket_id``: an existing ticket is returned unchanged with ``False``."""
        with self._write() as conn:
            inserted = conn.execute(_INSERT_TICKET, _ticket_row(
                ticket, event_count=len(ticket.event_ids))).rowcount
            if inserted != 1:
                existing = conn.execute(_GET, {"id": ticket.ticket_id}).one()
                return self._hydrate(conn, [existing])[0], False
            self._insert_event_ids(conn, _new_event_ids(ticket, stored=0))
            entry = AuditEntry(ticket_id=ticket.ticket_id,
                               at=ticket.received_at or ticket.opened_at, actor=actor,
                               action="create", from_status=None,
                               to_status=ticket.status.value, note=note,
                               data={"origin": ticket.origin.value,
                                     "clock": clock_record(ticket)})
            changes = [Change("created", ticket, (entry,))]
            self._record(conn, changes)
        self._notify(changes)
        return ticket, True

    def modify(self, ticket_id: str, mutate: Mutation, *,
               expected_version: int | None) -> Ticket:
        """Lock the ticket, check its version, ``mutate`` it and commit with its audit
        entries; all or nothing.

        ``mutate(ticket, load)`` changes the ticket in place and returns audit entries;
        ``load(other_id)`` locks another ticket that the mutation also changes (merge).
        Raises :class:`TicketNotFound`, :class:`VersionConflict`, or whatever ``mutate``
        raises (nothing is written then).
        """
        changes: builtins.list[Change] = []
        with self._write() as conn:
            loaded: dict[str, tuple[Ticket, int, int]] = {}  # ticket, version, event_count
            held_before: dict[str, str] = {}  # ticket id -> its department when loaded
            new_ids: builtins.list[_IdRow] = []

            def load(other_id: str) -> Ticket:
                if other_id not in loaded:
                    row = conn.execute(self._get_for_update, {"id": other_id}).first()
                    if row is None:
                        raise TicketNotFound(other_id)
                    ticket = self._hydrate(conn, [row])[0]
                    loaded[other_id] = (ticket, ticket.version, int(row.event_count))
                    held_before[other_id] = ticket.department
                return loaded[other_id][0]

            ticket = load(ticket_id)
            if expected_version is not None and ticket.version != expected_version:
                raise VersionConflict(ticket_id, expected=expected_version,
                                      current=ticket.version)
            entries = mutate(ticket, load)
            by_ticket: dict[str, builtins.list[AuditEntry]] = {}
            for entry in entries:
                by_ticket.setdefault(entry.ticket_id, []).append(entry)
            for other_id, (other, version, stored_events) in loaded.items():
                if other_id not in by_ticket:
                    continue
                other.version = version + 1
                # a merge's target gets the absorbed ticket's ids appended (copied: the
                # merged ticket keeps its own list)
                self._update_row(conn, other, expected_version=version,
                                 stored_events=stored_events, new_ids=new_ids)
                ticket_entries = by_ticket[other_id]
                moved_from = held_before[other_id]
                changes.append(Change(ticket_entries[0].action, other, tuple(ticket_entries),
                                      department_from=None if moved_from == other.department
                                      else moved_from))
                if any(e.action == "merge" for e in ticket_entries) and other.merged_into:
                    conn.execute(_RELINK_INCIDENTS, {"into": other.merged_into, "id": other_id})
            self._insert_event_ids(conn, new_ids)
            self._record(conn, changes)
        self._notify(changes)
        return ticket

    def _update_row(self, conn: Connection, ticket: Ticket, *, expected_version: int,
                    stored_events: int, new_ids: builtins.list[_IdRow]) -> None:
        """Rewrite the ticket row (not its event ids); the ids past ``stored_events`` go
        to ``new_ids`` for :meth:`_insert_event_ids`. The caller holds the row at
        ``expected_version``, which the ticket was read at, so the stored ids are a
        prefix of ``ticket.event_ids``."""
        values = _ticket_row(ticket, event_count=max(stored_events, len(ticket.event_ids)))
        values["expected"] = expected_version
        updated = conn.exec_driver_sql(self._update_sql, values).rowcount
        if updated != 1:
            raise VersionConflict(ticket.ticket_id, expected=expected_version,
                                  current=-1)
        new_ids += _new_event_ids(ticket, stored=stored_events)

    def _insert_event_ids(self, conn: Connection,
                          rows: builtins.list[_IdRow]) -> None:
        """Append event-id rows; an id the ticket already has is skipped, so a list with
        a repeat keeps its first place."""
        if rows:
            conn.exec_driver_sql(self._ids_append_sql, rows)

    def _record(self, conn: Connection, changes: builtins.list[Change]) -> None:
        """Audit entries, review counts, escalation records, the webhook outbox and the
        change log of ``changes``; numbers each change (``seq``) in place."""
        self._record_effects(conn, changes)
        # last: on PostgreSQL this takes the change-log lock, held until commit
        seqs = changelog.append(conn, changes, dialect=self.dialect,
                                key=self._changes_key, time=sortable)
        changes[:] = [dataclasses.replace(c, seq=n) for c, n in zip(changes, seqs,
                                                                    strict=True)]

    def _record_effects(self, conn: Connection, changes: builtins.list[Change]) -> None:
        for change in changes:
            ticket = change.ticket
            for entry in change.entries:
                conn.execute(
                    _INSERT_AUDIT,
                    {"t": entry.ticket_id, "at": sortable(entry.at), "actor": entry.actor,
                     "action": entry.action, "f": entry.from_status, "to": entry.to_status,
                     "note": entry.note,
                     "data": json.dumps(entry.data, sort_keys=True, ensure_ascii=False)})
                self._record_review(conn, ticket, entry)
                if entry.action == "escalate":
                    try:
                        with conn.begin_nested():
                            data = entry.data
                            conn.execute(
                                _INSERT_ESCALATION,
                                {"t": entry.ticket_id, "seq": data["clock_seq"],
                                 "stage": data["stage"], "at": sortable(entry.at),
                                 "actor": entry.actor, "department": data["department"],
                                 "phase": data["phase"], "level": data.get("level"),
                                 "unit": data.get("unit"),
                                 "due_at": sortable(datetime.fromisoformat(
                                     data["due_at"]))})
                    except IntegrityError:
                        raise AlreadyEscalated(
                            f"{entry.ticket_id} already has {entry.data['stage']}") from None
            if self.outbox is not None:
                write_outbox(conn, change, targets=self.outbox,
                             held_before=change.department_from,
                             audit=[audit_public(e) for e in change.entries], time=sortable)

    def _record_review(self, conn: Connection, ticket: Ticket, entry: AuditEntry) -> None:
        confirmed = dismissed = 0
        if entry.action == "confirm":
            confirmed = 1
        elif entry.action == "dismiss":
            dismissed = 1
        elif entry.action == "resolve" and ticket.review is Review.AUTO_DISPATCHED:
            confirmed = 1  # an auto-dispatched ticket that was real
        else:
            return
        for source in ticket.source_ids:
            conn.execute(_COUNT_REVIEW, {"s": source, "c": confirmed, "d": dismissed})

    # -- webhook outbox -------------------------------------------------------------
    def claim_outbox(self, *, now: datetime, lease_s: float, worker: str,
                     limit: int = 50, destination: str = CENTRE) -> builtins.list[OutboxItem]:
        """Claim the due outbox items of one receiver (``"centre"`` or
        ``"department/<id>"``, see :mod:`ticketing.outbox`) for ``lease_s``; another
        worker skips them meanwhile."""
        with self._write() as conn:
            return claim_rows(conn, dialect=self.dialect, destination=destination,
                              now=sortable(now),
                              until=sortable(now + timedelta(seconds=lease_s)),
                              worker=worker, limit=limit)

    def release_outbox(self, item_ids: builtins.list[int], *, worker: str) -> None:
        """Give back items ``worker`` claimed but did not try (no attempt counted)."""
        if item_ids:
            with self._write() as conn:
                release_rows(conn, item_ids, worker=worker)

    def finish_outbox(self, item_id: int, *, at: datetime, delivered: bool,
                      error: str | None = None, retry_at: datetime | None = None) -> None:
        """Record one delivery attempt: delivered, to retry at ``retry_at``, or given up
        (``retry_at`` None and not delivered)."""
        with self._write() as conn:
            conn.execute(text(
                "UPDATE outbox SET attempts = attempts + 1, claimed_until = NULL,"
                " claimed_by = NULL, last_error = :err, delivered_at = :delivered,"
                " failed_at = :failed, next_attempt_at = coalesce(:retry, next_attempt_at)"
                " WHERE id = :id"),
                {"err": error, "id": item_id,
                 "delivered": sortable(at) if delivered else None,
                 "failed": sortable(at) if not delivered and retry_at is None else None,
                 "retry": sortable(retry_at) if retry_at is not None else None})

    def outbox_status(self, *, destination: str | None = None) -> dict[str, int]:
        """Counts of outbox items: pending, delivered, failed (of one receiver, or all)."""
        where = "" if destination is None else " WHERE destination = :d"
        with self._read() as conn:
            row = conn.execute(text(
                "SELECT count(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL),"
                " count(*) FILTER (WHERE delivered_at IS NOT NULL),"
                " count(*) FILTER (WHERE failed_at IS NOT NULL) FROM outbox" + where),
                {"d": destination}).one()
        return {"pending": int(row[0]), "delivered": int(row[1]), "failed": int(row[2])}


def audit_public(entry: AuditEntry) -> dict[str, Any]:
    """JSON-ready audit entry."""
    return {"ticket_id": entry.ticket_id, "at": rfc3339(entry.at), "actor": entry.actor,
            "action": entry.action, "from_status": entry.from_status,
            "to_status": entry.to_status, "note": entry.note, "data": entry.data}


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # let SQLAlchemy's "begin" event issue BEGIN itself (IMMEDIATE for writers)
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # a writer takes the write lock up front, so two writers queue (busy timeout)
    # instead of failing with SQLITE_BUSY when a read lock would have to be upgraded.
    # A reader runs each statement on its own (autocommit), as PostgreSQL's READ
    # COMMITTED does: reads are written for that (see _event_ids), and a read then
    # costs no BEGIN / ROLLBACK round.
    if conn.get_execution_options().get("gridwatch_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")



class SqliteTicketStore(SqlTicketStore):
    """The embedded single-box store: a SQLite file (WAL), or ``":memory:"``.

    Args:
        path: the database file (its folder is created) or ``":memory:"``.
        outbox: also write changes to the webhook outbox.
    """

    def __init__(self, path: str | Path, *, outbox: bool | OutboxTargets = False) -> None:
        self.path = str(path)
        url = "sqlite://" if self.path == ":memory:" else f"sqlite:///{self.path}"
        super().__init__(url, outbox=outbox)


def open_store(url: str, *, schema: str | None = None,
               outbox: bool | OutboxTargets = False) -> SqlTicketStore:
    """A store for a URL from config (``ticketing.storage_url``) or a plain path."""
    if "://" not in url:
        return SqliteTicketStore(url, outbox=outbox)
    return SqlTicketStore(url, schema=schema, outbox=outbox)



TICKETS_URL_ENV = "GRIDWATCH_TICKETS_URL"


def configured_url(storage_url: str | None, *, default: str,
                   environ: dict[str, str] | None = None) -> str:
    """The store URL: ``$GRIDWATCH_TICKETS_URL`` (may carry a password), else
    ``ticketing.storage_url``, else ``default`` (the runtime's SQLite file)."""
    import os

    env = os.environ if environ is None else environ
    return env.get(TICKETS_URL_ENV) or storage_url or default
