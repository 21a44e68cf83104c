"""Ticket changes: what one committed write did (:class:`Change`), who hears of it in
this process (:class:`ChangeListeners`), and the change log, one row per committed change
in the ticket database.

Every write of :class:`~ticketing.store.SqlTicketStore` appends its changes to
``ticket_changes`` in its own transaction, so a change is in the log exactly when it is
committed, whichever replica, desk or worker made it. ``seq`` numbers the changes in
commit order: writers append under a lock (SQLite's write lock; a transaction-scoped
advisory lock on PostgreSQL, taken as the writer's last step), so a reader that has seen
``seq`` N never later finds a committed change below N. That is what makes
``GET /events`` resumable: a client that sends back the last ``seq`` it saw
(``Last-Event-ID``) gets every change after it, from any replica.

The log is pruned by age and size (:func:`prune`, run by the API's workers); the newest
change is always kept, so numbering never restarts.

Functions take a connection inside the caller's transaction.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from ticketing.engine import driver_sql
from ticketing.lifecycle import AuditEntry
from ticketing.models import Ticket, rfc3339

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """What one committed write did to one ticket; given to change listeners."""

    type: str  # created | updated | an action (accept, dismiss, ...) | escalate
    ticket: Ticket
    entries: tuple[AuditEntry, ...] = ()
    seq: int | None = None  # its place in the change log (set when committed)
    # the department that held the ticket before this change, when the change moved it
    # to another one (its own webhook hears of the move: ticketing.deliveries)
    department_from: str | None = None


ChangeListener = Callable[[Change], None]


class ChangeListeners:
    """The callables told of every committed change, in the writer's thread."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def add(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def remove(self, listener: ChangeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def notify(self, changes: Sequence[Change]) -> None:
        """Call each listener with each change; a listener that raises is logged (it
        must not undo a committed write) and the others still hear of it."""
        for change in changes:
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:  # a listener must not undo a committed write
                    log.exception("change listener failed for %s", change.ticket.ticket_id)


@dataclass(frozen=True, slots=True)
class LogWindow:
    """The changes still in the log: ``oldest``..``newest`` (both None when empty)."""

    oldest: int | None
    newest: int | None

    def can_resume(self, after: int) -> bool:
        """Whether every change after ``after`` is still in the log (the client missed
        nothing that was pruned, and ``after`` is not from the future or another
        database)."""
        if self.newest is None or self.oldest is None:
            return after == 0
        return self.oldest - 1 <= after <= self.newest


def change_time(change: Change) -> datetime:
    return change.entries[0].at if change.entries else change.ticket.updated_at


def change_message(change: Change, *, seq: int | None = None) -> dict[str, Any]:
    """The JSON message for one committed change (what SSE clients receive). ``id`` is
    the change's key (ticket, version, type); ``seq`` its place in the change log."""
    ticket = change.ticket
    return {
        "id": f"{ticket.ticket_id}:{ticket.version}:{change.type}",
        "seq": change.seq if seq is None else seq,
        "type": f"ticket.{change.type}",
        "ticket_id": ticket.ticket_id,
        "department": ticket.department,
        "status": ticket.status.value,
        "escalation": ticket.escalation.value,
        "version": ticket.version,
        "at": rfc3339(change_time(change)),
    }


NEWEST = _MAX = text("SELECT max(seq) FROM ticket_changes")
_WINDOW = text("SELECT min(seq), max(seq) FROM ticket_changes")
_APPEND = ("INSERT INTO ticket_changes (seq, at, ticket_id, department, message)"
           " VALUES (:seq, :at, :ticket_id, :department, :message)")
_SINCE = text("SELECT seq, message FROM ticket_changes WHERE seq > :after ORDER BY seq"
              " LIMIT :limit")


def lock_key(schema: str | None) -> int:
    return zlib.crc32(f"gridwatch:changes:{schema or ''}".encode())


def append(conn: Connection, changes: Sequence[Change], *, dialect: str, key: int,
           time: Any) -> list[int]:
    """Log ``changes`` (in order) and return their ``seq`` numbers. ``time`` spells a
    datetime as the store does (``ticketing.engine.sortable``)."""
    if not changes:
        return []
    if dialect == "postgresql":
        # held until commit: appends (and so commits) happen in seq order
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    first = int(conn.execute(_MAX).scalar() or 0) + 1
    rows = []
    for seq, change in enumerate(changes, start=first):
        message = change_message(change, seq=seq)
        rows.append({"seq": seq, "at": time(change_time(change)),
                     "ticket_id": change.ticket.ticket_id,
                     "department": change.ticket.department,
                     "message": json.dumps(message, sort_keys=True, ensure_ascii=False)})
    conn.exec_driver_sql(driver_sql(_APPEND, dialect), rows)
    return list(range(first, first + len(changes)))


def window(conn: Connection) -> LogWindow:
    oldest, newest = conn.execute(_WINDOW).one()
    return LogWindow(None if oldest is None else int(oldest),
                     None if newest is None else int(newest))


def since(conn: Connection, after: int, *, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` logged messages with ``seq > after``, in order."""
    return [json.loads(message) for _seq, message in
            conn.execute(_SINCE, {"after": after, "limit": limit})]


def prune(conn: Connection, *, before: str, keep: int) -> int:
    """Delete changes older than ``before`` (the store's spelling of a time) and all but
    the newest ``keep``; the newest change always stays. Returns how many went."""
    newest = conn.execute(_MAX).scalar()
    if newest is None:
        return 0
    floor = int(newest) - max(1, keep) + 1
    deleted = conn.execute(text("DELETE FROM ticket_changes WHERE seq < :floor"),
                           {"floor": floor}).rowcount
    deleted += conn.execute(text("DELETE FROM ticket_changes WHERE at < :before"
                                 " AND seq < :newest"),
                            {"before": before, "newest": int(newest)}).rowcount
    return int(deleted)
