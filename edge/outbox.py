"""The durable outbox: every detection is committed here before anything is sent.

A row leaves only when the broker has acknowledged it (PUBACK), so a crash, a ``kill -9``
or a week-long uplink outage loses nothing that was committed. The table is ordered by
``seq``; the publisher reads forward from a cursor and deletes what was acknowledged.

Disk budget: ``max_bytes`` bounds the payload bytes held (plus a fixed per-row overhead).
When a new detection does not fit, ``when_full`` decides:

- ``drop_oldest``: delete the oldest self-tests first, then the oldest evidence images,
  then the oldest detections, until it fits (the newest alarm is the one an operator
  needs, and a detection matters more than its picture);
- ``reject_new``: refuse the new message.

Every detection lost to the budget is counted in the persistent ``dropped`` counter, every
evidence image in ``evidence_dropped``.

>>> box = Outbox(":memory:", max_bytes=1 << 20)
>>> box.put(topic="t", event_id="e1", payload=b"{}")
True
>>> [(row.seq, row.event_id) for row in box.fetch_after(0, limit=10)]
[(1, 'e1')]
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from detectors.schema import Detection

ROW_OVERHEAD_BYTES = 128  # index entries, topic, row header: keeps the budget honest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    is_test INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    evidence INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class OutboxItem(NamedTuple):
    """One message to commit: ``key`` is unique in the outbox (a detection's event id,
    ``evidence:<event id>`` for its snapshot)."""

    topic: str
    key: str
    payload: bytes
    is_test: bool = False
    evidence: bool = False


def evidence_key(event_id: str) -> str:
    """The outbox key of a detection's evidence image (its own row, beside the detection)."""
    return f"evidence:{event_id}"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    topic: str
    payload: bytes


class Outbox:
    """A thread-safe SQLite outbox (one connection, one lock; WAL journal).

    Args:
        path: the database file (created with its folder), or ``":memory:"`` in tests.
        max_bytes: the disk budget (payload bytes + a per-row overhead).
        when_full: ``"drop_oldest"`` or ``"reject_new"``.
        synchronous: ``"normal"`` survives a process crash; ``"full"`` also a power cut.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        when_full: str = "drop_oldest",
        synchronous: str = "normal",
    ) -> None:
        if when_full not in ("drop_oldest", "reject_new"):
            raise ValueError(f"when_full: expected drop_oldest or reject_new, got {when_full!r}")
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous: expected normal or full, got {synchronous!r}")
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "evidence" not in columns:  # an outbox written before evidence was sent
            self._db.execute("ALTER TABLE outbox ADD COLUMN evidence INTEGER NOT NULL "
                             "DEFAULT 0")
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._depth = int(row[0])
        self._bytes = int(row[1]) + self._depth * ROW_OVERHEAD_BYTES
        self._dropped = self._counter("dropped")
        self._evidence_dropped = self._counter("evidence_dropped")

    # -- counters ---------------------------------------------------------------------
    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, name: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    # -- writing ----------------------------------------------------------------------
    def put_detection(self, detection: Detection, topic: str) -> bool:
        """Store one detection (serialised once, so a re-send is byte-identical)."""
        return self.put(topic=topic, event_id=detection.event_id,
                        payload=detection.to_json().encode(), is_test=detection.is_self_test)

    def put(self, *, topic: str, event_id: str, payload: bytes, is_test: bool = False) -> bool:
        """Commit one message. False when it was a duplicate event id or refused (full)."""
        return self.put_many([(topic, event_id, payload, is_test)]) == 1

    def put_many(self, items: Sequence[OutboxItem | tuple[str, str, bytes, bool]]) -> int:
        """Commit :class:`OutboxItem` (or ``(topic, event_id, payload, is_test)``) items in
        one transaction: a detection and its evidence are stored together or not at all.

        Returns how many were stored (duplicates and refusals are not).
        """
        stored = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    topic, event_id, payload, is_test, *rest = item
                    evidence = bool(rest and rest[0])
                    size = len(payload) + ROW_OVERHEAD_BYTES
                    if not self._make_room(size):
                        self._count_lost(evidence=evidence, n=1)
                        continue
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO outbox(event_id, topic, payload, is_test, "
                        "created_at, evidence) VALUES (?, ?, ?, ?, ?, ?)",
                        (event_id, topic, payload, int(is_test), time.time(),
                         int(evidence)))
                    if cur.rowcount == 1:
                        stored += 1
                        self._depth += 1
                        self._bytes += size
                if stored:
                    self._bump("enqueued", stored)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._reload_totals()
                raise
        return stored

    def _count_lost(self, *, evidence: bool, n: int) -> None:
        if not n:
            return
        if evidence:
            self._evidence_dropped += n
            self._bump("evidence_dropped", n)
        else:
            self._dropped += n
            self._bump("dropped", n)

    def _make_room(self, size: int) -> bool:
        if self._bytes + size <= self.max_bytes:
            return True
        if self.when_full == "reject_new" or size > self.max_bytes:
            return False
        for where in ("WHERE is_test = 1", "WHERE evidence = 1", ""):
            while self._bytes + size > self.max_bytes:
                rows = self._db.execute(
                    f"SELECT seq, LENGTH(payload), evidence FROM outbox {where} "
                    f"ORDER BY seq LIMIT 256").fetchall()
                if not rows:
                    break
                freed = 0
                victims = []
                images = 0
                for seq, length, evidence in rows:
                    victims.append((seq,))
                    images += int(evidence)
                    freed += length + ROW_OVERHEAD_BYTES
                    if self._bytes - freed + size <= self.max_bytes:
                        break
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", victims)
                self._bytes -= freed
                self._depth -= len(victims)
                self._count_lost(evidence=False, n=len(victims) - images)
                self._count_lost(evidence=True, n=images)
        return self._bytes + size <= self.max_bytes

    def _reload_totals(self) -> None:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._depth = int(row[0])
        self._bytes = int(row[1]) + self._depth * ROW_OVERHEAD_BYTES
        self._dropped = self._counter("dropped")
        self._evidence_dropped = self._counter("evidence_dropped")

    # -- reading and acknowledging ----------------------------------------------------
    def fetch_after(self, seq: int, *, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` rows with ``seq`` greater than the cursor, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, topic, payload FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [OutboxRow(int(r[0]), r[1], r[2], bytes(r[3])) for r in rows]

    def ack(self, seqs: list[int]) -> int:
        """Delete acknowledged rows; returns how many were still there."""
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = 0
                freed = 0
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    row = self._db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox "
                        f"WHERE seq IN ({marks})", chunk).fetchone()
                    self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
                    removed += int(row[0])
                    freed += int(row[1]) + int(row[0]) * ROW_OVERHEAD_BYTES
                self._bump("published", removed)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= removed
            self._bytes -= freed
        return removed

    # -- introspection ----------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Rows waiting for a PUBACK."""
        return self._depth

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @property
    def dropped(self) -> int:
        """Detections lost to the disk budget, ever (persistent)."""
        return self._dropped

    @property
    def evidence_dropped(self) -> int:
        """Evidence images lost to the disk budget, ever (persistent)."""
        return self._evidence_dropped

    def oldest_age_s(self, now: float | None = None) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(created_at) FROM outbox").fetchone()
        if row is None or row[0] is None:
            return None
        return (time.time() if now is None else now) - float(row[0])

    def counters(self) -> dict[str, int]:
        """Persistent totals: ``enqueued``, ``published``, ``dropped``,
        ``evidence_dropped``."""
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM counters").fetchall()
        out = {"enqueued": 0, "published": 0, "dropped": 0, "evidence_dropped": 0}
        out.update({str(name): int(value) for name, value in rows})
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
