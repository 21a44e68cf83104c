"""The stream stage's durable state in the ticket database (tables of migration 8).

Per runtime instance (``name``, e.g. ``embedded``): the latest checkpoint (opaque bytes
with their format version, :mod:`stream.hotspot_state`) and a journal of the detections
committed since it, one row per batch. Both are written in the transaction that writes
the batch's tickets, so after any stop (clean, crash, ``kill -9``) the checkpoint plus the
journal are exactly the detections whose tickets are committed: restoring the checkpoint
and re-feeding the journal gives the state an uninterrupted run would have.

Every function takes a SQLAlchemy connection inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class Saved:
    """What is stored for one name: the checkpoint (``None`` if never written) and the
    journal since it (each entry a batch's detections, one JSON object per line)."""

    format: int | None
    body: bytes | None
    saved_at: str | None
    journal: list[str]

    @property
    def empty(self) -> bool:
        return self.body is None and not self.journal


def save_checkpoint(conn: Connection, *, name: str, format: int, body: bytes,
                    saved_at: datetime) -> None:
    """Replace the checkpoint of ``name`` and empty its journal (the checkpoint holds it)."""
    conn.execute(text("DELETE FROM stream_checkpoints WHERE name = :n"), {"n": name})
    conn.execute(text("INSERT INTO stream_checkpoints (name, format, saved_at, body) "
                      "VALUES (:n, :f, :at, :b)"),
                 {"n": name, "f": format, "at": saved_at.isoformat(), "b": body})
    conn.execute(text("DELETE FROM stream_journal WHERE name = :n"), {"n": name})


def append_journal(conn: Connection, *, name: str, lines: str) -> None:
    """Add one batch's detections (JSON lines) to the journal of ``name``."""
    if lines:
        conn.execute(text("INSERT INTO stream_journal (name, lines) VALUES (:n, :l)"),
                     {"n": name, "l": lines})


def load(conn: Connection, *, name: str) -> Saved:
    """The checkpoint and journal of ``name`` (journal in the order written)."""
    row = conn.execute(text("SELECT format, saved_at, body FROM stream_checkpoints "
                            "WHERE name = :n"), {"n": name}).first()
    journal = [r[0] for r in conn.execute(text(
        "SELECT lines FROM stream_journal WHERE name = :n ORDER BY id"), {"n": name})]
    if row is None:
        return Saved(None, None, None, journal)
    return Saved(int(row[0]), bytes(row[2]), str(row[1]), journal)


def clear(conn: Connection, *, name: str) -> None:
    """Forget the checkpoint and journal of ``name`` (the next start is cold)."""
    conn.execute(text("DELETE FROM stream_checkpoints WHERE name = :n"), {"n": name})
    conn.execute(text("DELETE FROM stream_journal WHERE name = :n"), {"n": name})
