"""Each ticket's ``event_ids``: the append-only ``ticket_event_ids`` table (migration 3).

A ticket row counts its ids (``event_count``); the ids themselves are rows ``(ticket_id,
event_id, seq, added_at)``, appended in the transaction that raises the count and never
updated or deleted; keyed by ``(ticket_id, seq)``, unique on ``(event_id, ticket_id)``
(migration 10). So a reader takes only ``seq < event_count`` (the list matches the
ticket's body even where a writer commits between the two reads), and
:class:`EventIdTable` caches the ids of recently read tickets: the next read fetches only
the rows past the cached count (the desk reads its hot tickets once per batch without
reading their whole history again).

:func:`recent` is what a restarted pipeline seeds its duplicate filter with.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, text

from ticketing.engine import chunks, driver_sql, from_sortable, sortable
from ticketing.models import Ticket

IdRow = tuple[str, str, int, str]
"""``(ticket_id, event_id, seq, added_at)``: one row of the table."""

# the ids of recently read tickets are kept between reads, up to this many ids in all
# (least recently read tickets dropped first)
CACHE_BUDGET = 250_000

_FROM = text("SELECT event_id FROM ticket_event_ids WHERE ticket_id = :id"
             " AND seq >= :upto AND seq < :n ORDER BY seq")
# executed with the driver's own placeholders (see driver_sql), rows as tuples
_APPEND = ("INSERT INTO ticket_event_ids (ticket_id, event_id, seq, added_at)"
           " VALUES (?, ?, ?, ?) ON CONFLICT (ticket_id, event_id) DO NOTHING")
_OF_ONE = text("SELECT ticket_id, event_id, seq FROM ticket_event_ids"
               " WHERE ticket_id = :id AND seq < :n ORDER BY seq")
_OF_MANY = text("SELECT ticket_id, event_id, seq FROM ticket_event_ids"
                " WHERE ticket_id IN :ids ORDER BY ticket_id, seq").bindparams(
    bindparam("ids", expanding=True))
_OF_ALL = text("SELECT ticket_id, event_id, seq FROM ticket_event_ids"
               " ORDER BY ticket_id, seq")


def new_rows(ticket: Ticket, *, stored: int) -> list[IdRow]:
    """Rows for ``ticket.event_ids[stored:]`` (``seq`` = position in the list;
    ``added_at`` = the ticket's ``updated_at``, event time)."""
    ticket_id, at = ticket.ticket_id, sortable(ticket.updated_at)
    return [(ticket_id, event_id, seq, at)
            for seq, event_id in enumerate(ticket.event_ids[stored:], start=stored)]


class EventIdTable:
    """Reads and appends of ``ticket_event_ids`` for one database, with the read cache."""

    def __init__(self, dialect: str, *, cache_budget: int = CACHE_BUDGET) -> None:
        self.cache_budget = cache_budget
        # ticket id -> (event_count covered, its first event_count ids): rows are only
        # ever appended, so a cached prefix stays true and a read fetches only the rest
        self._cache: OrderedDict[str, tuple[int, tuple[str, ...]]] = OrderedDict()
        self._cached = 0  # ids held in _cache
        self._cache_lock = threading.Lock()
        self._append_sql = driver_sql(_APPEND, dialect)

    def append(self, conn: Connection, rows: list[IdRow]) -> None:
        """Append id rows; an id the ticket already has is skipped, so a list with a
        repeat keeps its first place."""
        if rows:
            conn.exec_driver_sql(self._append_sql, rows)

    def of(self, conn: Connection, counts: dict[str, int], *,
           every: bool = False) -> dict[str, list[str]]:
        """The ``event_ids`` (in the order absorbed) of tickets with these
        ``event_count``s; only ids with ``seq < event_count`` are taken. ``every``: these
        are all tickets (read the table whole, not by ticket; nothing cached)."""
        ids: dict[str, list[str]] = {}
        uncached: list[str] = []
        for ticket_id, count in counts.items():
            if count == 0:
                continue
            with self._cache_lock:
                cached = None if every else self._cache.get(ticket_id)
            if cached is None or cached[0] > count:
                uncached.append(ticket_id)
                continue
            upto, prefix = cached
            ids[ticket_id] = list(prefix)
            if upto < count:
                ids[ticket_id] += [r[0] for r in conn.execute(
                    _FROM, {"id": ticket_id, "upto": upto, "n": count})]
        if every and uncached:
            batches = [conn.execute(_OF_ALL)]
        elif len(uncached) == 1:
            batches = [conn.execute(_OF_ONE, {"id": uncached[0],
                                              "n": counts[uncached[0]]})]
        else:
            batches = [conn.execute(_OF_MANY, {"ids": chunk}) for chunk in chunks(uncached)]
        for result in batches:
            for ticket_id, event_id, seq in result:
                if seq < counts.get(ticket_id, 0):
                    ids.setdefault(ticket_id, []).append(event_id)
        if not every:
            for ticket_id, event_ids in ids.items():
                self._remember(ticket_id, counts[ticket_id], tuple(event_ids))
        return ids

    def _remember(self, ticket_id: str, count: int, event_ids: tuple[str, ...]) -> None:
        with self._cache_lock:
            old = self._cache.pop(ticket_id, None)
            if old is not None:
                self._cached -= len(old[1])
            self._cache[ticket_id] = (count, event_ids)
            self._cached += len(event_ids)
            while self._cached > self.cache_budget and self._cache:
                _, (_, dropped) = self._cache.popitem(last=False)
                self._cached -= len(dropped)


def recent(conn: Connection, *, horizon_s: float,
           until: datetime | None = None) -> list[tuple[str, float]]:
    """``(event_id, added_at timestamp)`` of the ids added within ``horizon_s`` of the
    newest one, oldest first. ``until``: ids added later than that are left out and do
    not count as the newest (see :meth:`~ticketing.store.SqlTicketStore.recent_event_ids`)."""
    bound = "" if until is None else " WHERE added_at <= :until"
    params = {} if until is None else {"until": sortable(until)}
    newest = conn.execute(text("SELECT max(added_at) FROM ticket_event_ids" + bound),
                          params).scalar()
    if newest is None:
        return []
    since = from_sortable(newest) - timedelta(seconds=horizon_s)
    rows = conn.execute(text(
        "SELECT event_id, added_at FROM ticket_event_ids WHERE added_at >= :since"
        + bound.replace(" WHERE", " AND") + " ORDER BY added_at, ticket_id, seq"),
        {"since": sortable(since), **params}).fetchall()
    return [(r[0], from_sortable(r[1]).timestamp()) for r in rows]


_HELD = text("SELECT DISTINCT event_id FROM ticket_event_ids WHERE event_id IN :ids"
             ).bindparams(bindparam("ids", expanding=True))


def held(conn: Connection, ids: list[str]) -> set[str]:
    """The ids of ``ids`` that some ticket holds (any ticket, open or closed)."""
    found: set[str] = set()
    for part in chunks(ids):
        found.update(row[0] for row in conn.execute(_HELD, {"ids": part}))
    return found
