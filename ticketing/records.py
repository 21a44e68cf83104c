"""Reading the accountability records of some tickets: their audit entries and the cards
(escalations) recorded against the unit that held each ticket. Functions over a
connection (``SqlTicketStore.connection()``); the 考核 report is computed from these."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, text

from ticketing.lifecycle import AuditEntry
from ticketing.models import Escalation

_CHUNK = 500  # ticket ids per IN (...) (SQLite caps bound parameters)

_AUDIT_OF = text("SELECT * FROM ticket_events WHERE ticket_id IN :ids ORDER BY id"
                 ).bindparams(bindparam("ids", expanding=True))
_CARDS_OF = text("SELECT ticket_id, clock_seq, stage, at, department, phase, level, unit,"
                 " due_at FROM escalations WHERE ticket_id IN :ids"
                 " ORDER BY at, ticket_id, clock_seq, stage"
                 ).bindparams(bindparam("ids", expanding=True))


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


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def audit_of(conn: Connection, ticket_ids: list[str]) -> dict[str, list[AuditEntry]]:
    """Each ticket's audit entries, oldest first."""
    out: dict[str, list[AuditEntry]] = {t: [] for t in ticket_ids}
    for chunk in _chunks(ticket_ids):
        for r in conn.execute(_AUDIT_OF, {"ids": chunk}):
            out[r.ticket_id].append(AuditEntry(
                ticket_id=r.ticket_id, at=_time(r.at), actor=r.actor, action=r.action,
                from_status=r.from_status, to_status=r.to_status, note=r.note,
                data=json.loads(r.data)))
    return out


def cards_of(conn: Connection, ticket_ids: list[str]) -> list[Card]:
    """The cards of these tickets, in the order given."""
    cards: list[Card] = []
    for chunk in _chunks(ticket_ids):
        cards += [Card(ticket_id=r.ticket_id, clock_seq=int(r.clock_seq),
                       stage=Escalation(r.stage), at=_time(r.at), department=r.department,
                       phase=r.phase, level=r.level, unit=r.unit)
                  for r in conn.execute(_CARDS_OF, {"ids": chunk})]
    return sorted(cards, key=lambda c: (c.at, c.ticket_id, c.clock_seq, c.stage.rank))
