"""The audit log: one ``ticket_events`` row per lifecycle step of a ticket, written in the
transaction of the change it records, never updated.

Functions over a connection (a store's transaction, or ``SqlTicketStore.connection()``
for the readers); the 考核 report (:mod:`ticketing.assessment`) is computed from
:func:`of_tickets` and the cards of :mod:`ticketing.cards`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text

from ticketing.engine import chunks, sortable
from ticketing.lifecycle import AuditEntry
from ticketing.models import rfc3339

_INSERT = text(
    "INSERT INTO ticket_events (ticket_id, at, actor, action, from_status, to_status, note,"
    " data) VALUES (:t, :at, :actor, :action, :f, :to, :note, :data)")
_OF_TICKET = text("SELECT * FROM ticket_events WHERE ticket_id = :id ORDER BY id")
_OF_TICKETS = text("SELECT * FROM ticket_events WHERE ticket_id IN :ids ORDER BY id"
                   ).bindparams(bindparam("ids", expanding=True))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _from_row(row: Any) -> AuditEntry:
    return AuditEntry(ticket_id=row.ticket_id, at=_time(row.at), actor=row.actor,
                      action=row.action, from_status=row.from_status,
                      to_status=row.to_status, note=row.note, data=json.loads(row.data))


def insert(conn: Connection, entries: Iterable[AuditEntry]) -> None:
    """Append ``entries`` (in the caller's transaction)."""
    for entry in entries:
        conn.execute(
            _INSERT,
            {"t": entry.ticket_id, "at": sortable(entry.at), "actor": entry.actor,
             "action": entry.action, "f": entry.from_status, "to": entry.to_status,
             "note": entry.note,
             "data": json.dumps(entry.data, sort_keys=True, ensure_ascii=False)})


def of_ticket(conn: Connection, ticket_id: str) -> list[AuditEntry]:
    """One ticket's audit entries, oldest first."""
    return [_from_row(r) for r in conn.execute(_OF_TICKET, {"id": ticket_id})]


def of_tickets(conn: Connection, ticket_ids: list[str]) -> dict[str, list[AuditEntry]]:
    """Each ticket's audit entries, oldest first."""
    out: dict[str, list[AuditEntry]] = {t: [] for t in ticket_ids}
    for chunk in chunks(ticket_ids):
        for r in conn.execute(_OF_TICKETS, {"ids": chunk}):
            out[r.ticket_id].append(_from_row(r))
    return out


def between(conn: Connection, *, start: datetime, end: datetime,
            action: str | None = None) -> list[AuditEntry]:
    """Audit entries with ``start <= at < end`` (optionally of one action), in order."""
    sql = "SELECT * FROM ticket_events WHERE at >= :start AND at < :end"
    params: dict[str, object] = {"start": sortable(start), "end": sortable(end)}
    if action is not None:
        sql += " AND action = :action"
        params["action"] = action
    return [_from_row(r) for r in conn.execute(text(sql + " ORDER BY id"), params)]


def audit_public(entry: AuditEntry) -> dict[str, Any]:
    """JSON-ready audit entry."""
    return {"ticket_id": entry.ticket_id, "at": rfc3339(entry.at), "actor": entry.actor,
            "action": entry.action, "from_status": entry.from_status,
            "to_status": entry.to_status, "note": entry.note, "data": entry.data}
