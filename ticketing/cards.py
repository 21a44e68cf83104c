"""Escalation records (cards): reminders, yellow and red cards in ``escalations``, each
recorded once per deadline clock against the unit that held the ticket (migration 4), and
the query for the tickets with a supervision step due (the escalator's candidates,
:mod:`ticketing.escalation`).

Functions over a connection; :func:`record` runs in the transaction of the ``escalate``
change, so a card and its audit entry commit together, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import IntegrityError

from ticketing.engine import chunks, sortable
from ticketing.lifecycle import AuditEntry
from ticketing.models import Escalation
from ticketing.tickets import BODY, OPEN_SQL


class AlreadyEscalated(Exception):
    """Another worker recorded this escalation first (the unique row exists)."""


@dataclass(frozen=True, slots=True)
class Card:
    """A reminder, yellow or red card, on the record of the unit that held the ticket
    (``phase`` ``review``: operator review held it)."""

    ticket_id: str
    clock_seq: int
    stage: Escalation
    at: datetime
    department: str
    phase: str
    level: str | None
    unit: str | None


_INSERT = text(
    "INSERT INTO escalations (ticket_id, clock_seq, stage, at, actor, department, phase,"
    " level, unit, due_at) VALUES (:t, :seq, :stage, :at, :actor, :department, :phase,"
    " :level, :unit, :due_at)")
_OF = text("SELECT ticket_id, clock_seq, stage, at, department, phase, level, unit,"
           " due_at FROM escalations WHERE ticket_id IN :ids"
           " ORDER BY at, ticket_id, clock_seq, stage"
           ).bindparams(bindparam("ids", expanding=True))
_DUE = text(
    f"SELECT {BODY} FROM tickets WHERE status IN ({OPEN_SQL}) AND ("
    " (escalation = 'none' AND due_at <= :soon)"
    " OR (escalation = 'due_soon' AND due_at <= :now)"
    " OR (escalation = 'yellow' AND red_at <= :now))"
    " ORDER BY due_at, ticket_id LIMIT :limit")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def record(conn: Connection, entry: AuditEntry) -> None:
    """Record the card of an ``escalate`` audit entry; :class:`AlreadyEscalated` if this
    clock already has that card (the caller's transaction then rolls back)."""
    data = entry.data
    try:
        with conn.begin_nested():
            conn.execute(
                _INSERT,
                {"t": entry.ticket_id, "seq": data["clock_seq"], "stage": data["stage"],
                 "at": sortable(entry.at), "actor": entry.actor,
                 "department": data["department"], "phase": data["phase"],
                 "level": data.get("level"), "unit": data.get("unit"),
                 "due_at": sortable(datetime.fromisoformat(data["due_at"]))})
    except IntegrityError:
        raise AlreadyEscalated(f"{entry.ticket_id} already has {data['stage']}") from None


def cards_of(conn: Connection, ticket_ids: list[str]) -> list[Card]:
    """The cards of these tickets, oldest first."""
    cards: list[Card] = []
    for chunk in chunks(ticket_ids):
        cards += [Card(ticket_id=r.ticket_id, clock_seq=int(r.clock_seq),
                       stage=Escalation(r.stage), at=_time(r.at), department=r.department,
                       phase=r.phase, level=r.level, unit=r.unit)
                  for r in conn.execute(_OF, {"ids": chunk})]
    return sorted(cards, key=lambda c: (c.at, c.ticket_id, c.clock_seq, c.stage.rank))


def due_rows(conn: Connection, *, now: datetime, remind_before_s: int,
             limit: int) -> Sequence[Any]:
    """Rows (:data:`ticketing.tickets.BODY`) of open tickets with a supervision step due
    at ``now``: a reminder ``remind_before_s`` before the deadline, the yellow card at
    it, the red card at ``red_at``; soonest deadline first."""
    return conn.execute(_DUE, {"now": sortable(now),
                               "soon": sortable(now + timedelta(seconds=remind_before_s)),
                               "limit": limit}).fetchall()
