"""Review outcomes per source (``source_reviews``) and the sources they suspend.

Every confirm or dismiss of a ticket (and the resolve of an auto-dispatched one, which
was real) counts for each of the ticket's sources, in the transaction of that change. A
source dismissed too often (:func:`suspended`) no longer auto-dispatches: its new tickets
go to operator review first (the desk and :func:`ticketing.desk.new_ticket` ask).

Functions over a connection in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from ticketing.lifecycle import AuditEntry
from ticketing.models import Review, Ticket

_COUNT = text(
    "INSERT INTO source_reviews (source_id, confirmed, dismissed) VALUES (:s, :c, :d)"
    " ON CONFLICT (source_id) DO UPDATE SET"
    " confirmed = source_reviews.confirmed + excluded.confirmed,"
    " dismissed = source_reviews.dismissed + excluded.dismissed")
_SUSPENDED = text("SELECT source_id FROM source_reviews WHERE confirmed + dismissed >= :n"
                  " AND dismissed > :rate * (confirmed + dismissed)")
_STATS = text("SELECT source_id, confirmed, dismissed FROM source_reviews"
              " ORDER BY source_id")


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


def count(conn: Connection, ticket: Ticket, entry: AuditEntry) -> None:
    """Count ``entry`` (one step of ``ticket``) for its sources if it is a review
    outcome; other steps count nothing."""
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
        conn.execute(_COUNT, {"s": source, "c": confirmed, "d": dismissed})


def stats(conn: Connection) -> list[SourceStats]:
    """Every reviewed source's counts, by source id."""
    return [SourceStats(r[0], int(r[1]), int(r[2])) for r in conn.execute(_STATS)]


def suspended(conn: Connection, *, max_false_positive_rate: float,
              min_reviewed: int) -> frozenset[str]:
    """Sources reviewed at least ``min_reviewed`` times whose dismissed share is above
    ``max_false_positive_rate``."""
    rows = conn.execute(_SUSPENDED, {"n": min_reviewed,
                                     "rate": max_false_positive_rate}).fetchall()
    return frozenset(r[0] for r in rows)
