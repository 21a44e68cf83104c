"""The durable outbox: every detection is committed here before anything is sent.

A row goes through three states: **pending** (committed, not yet acknowledged by the
broker) → **sent** (the broker's PUBACK came; awaiting the centre's receipt) → gone (the
centre's receipt says it was committed, dead-lettered or already had; :meth:`Outbox.receipt`).
A broker acknowledgement is not enough: a broker that is killed before it wrote its
persistence file, or that drops its queue, loses what it acknowledged. So a crash, a
``kill -9`` of the box or of the broker, or a week-long outage loses nothing committed here.
A sent row has a ``due_at``: if no receipt has come by then, the publisher sends it again
(:meth:`Outbox.due`) and the next ``due_at`` backs off. The table is ordered by ``seq``;
the publisher reads pending rows forward from a cursor.

With receipts off (``uplink.receipts: false``, a centre older than receipts) a row is
deleted on its PUBACK (:meth:`Outbox.ack`), as before.

Disk budget: ``max_bytes`` bounds the payload bytes held (plus a fixed per-row overhead).
When a new detection does not fit, ``when_full`` decides:

- ``drop_oldest``: delete the oldest self-tests first, then the oldest evidence images,
  then the oldest detections, until it fits (the newest alarm is the one an operator
  needs, and a detection matters more than its picture);
- ``reject_new``: refuse the new message.

Every detection lost to the budget is counted in the persistent ``dropped`` counter (and,
if the broker had acknowledged it and only the centre's receipt was missing, also in
``dropped_unreceipted``), every evidence image in ``evidence_dropped``.

Schema versions (``PRAGMA user_version``): 0 = before evidence, 1 = with evidence,
2 = with receipts (``sent_at``, ``attempts``, ``due_at``). An older file is upgraded in
place when it is opened; its rows are all pending (the old code deleted them on PUBACK).

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
from typing import Any, NamedTuple

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
    evidence INTEGER NOT NULL DEFAULT 0,
    sent_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
SCHEMA_VERSION = 2
COUNTERS = ("enqueued", "published", "receipted", "receipts_unknown", "resent", "dropped",
            "dropped_unreceipted", "evidence_dropped")
# added after the first release, in this order (an old outbox gets what it lacks)
_MIGRATIONS = (
    ("evidence", "ALTER TABLE outbox ADD COLUMN evidence INTEGER NOT NULL DEFAULT 0"),
    ("sent_at", "ALTER TABLE outbox ADD COLUMN sent_at REAL"),
    ("attempts", "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"),
    ("due_at", "ALTER TABLE outbox ADD COLUMN due_at REAL"),
)
_INDEXES = "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(due_at) WHERE due_at IS NOT NULL"


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
    attempts: int = 0  # how many times the broker acknowledged it (0: pending)


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
        self._migrate()
        self._reload_totals()

    def _migrate(self) -> None:
        """Create the tables, or bring an older outbox file up to :data:`SCHEMA_VERSION`
        (in one transaction: a box that dies meanwhile finds the old file intact)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            for column, statement in _MIGRATIONS:
                if column not in columns:
                    self._db.execute(statement)
            self._db.execute(_INDEXES)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

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

    def _count_lost(self, *, evidence: bool, n: int, unreceipted: int = 0) -> None:
        if not n:
            return
        if evidence:
            self._evidence_dropped += n
            self._bump("evidence_dropped", n)
        else:
            self._dropped += n
            self._bump("dropped", n)
            if unreceipted:
                self._bump("dropped_unreceipted", unreceipted)

    def _make_room(self, size: int) -> bool:
        if self._bytes + size <= self.max_bytes:
            return True
        if self.when_full == "reject_new" or size > self.max_bytes:
            return False
        for where in ("WHERE is_test = 1", "WHERE evidence = 1", ""):
            while self._bytes + size > self.max_bytes:
                rows = self._db.execute(
                    f"SELECT seq, LENGTH(payload), evidence, sent_at IS NOT NULL "
                    f"FROM outbox {where} ORDER BY seq LIMIT 256").fetchall()
                if not rows:
                    break
                freed = 0
                victims = []
                images = 0
                sent_detections = 0
                sent = 0
                for seq, length, evidence, was_sent in rows:
                    victims.append((seq,))
                    images += int(evidence)
                    sent += int(was_sent)
                    sent_detections += int(was_sent and not evidence)
                    freed += length + ROW_OVERHEAD_BYTES
                    if self._bytes - freed + size <= self.max_bytes:
                        break
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", victims)
                self._bytes -= freed
                self._depth -= len(victims)
                self._awaiting -= sent
                self._count_lost(evidence=False, n=len(victims) - images,
                                 unreceipted=sent_detections)
                self._count_lost(evidence=True, n=images)
        return self._bytes + size <= self.max_bytes

    def _reload_totals(self) -> None:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), "
            "COALESCE(SUM(sent_at IS NOT NULL), 0) FROM outbox").fetchone()
        self._depth = int(row[0])
        self._bytes = int(row[1]) + self._depth * ROW_OVERHEAD_BYTES
        self._awaiting = int(row[2])
        self._dropped = self._counter("dropped")
        self._evidence_dropped = self._counter("evidence_dropped")

    # -- reading and acknowledging ----------------------------------------------------
    def fetch_after(self, seq: int, *, limit: int, pending_only: bool = False
                    ) -> list[OutboxRow]:
        """Up to ``limit`` rows with ``seq`` greater than the cursor, oldest first
        (``pending_only``: only those the broker has not acknowledged yet)."""
        where = "AND sent_at IS NULL " if pending_only else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, event_id, topic, payload, attempts FROM outbox WHERE seq > ? "
                f"{where}ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [OutboxRow(int(r[0]), r[1], r[2], bytes(r[3]), int(r[4])) for r in rows]

    def due(self, now: float, *, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` sent rows whose receipt is overdue (``due_at <= now``), the
        most overdue first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, topic, payload, attempts FROM outbox "
                "WHERE due_at IS NOT NULL AND due_at <= ? ORDER BY due_at, seq LIMIT ?",
                (now, limit)).fetchall()
        return [OutboxRow(int(r[0]), r[1], r[2], bytes(r[3]), int(r[4])) for r in rows]

    def next_due_at(self) -> float | None:
        """When the next receipt is due (``None``: nothing is awaiting one)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(due_at) FROM outbox "
                                   "WHERE due_at IS NOT NULL").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def mark_sent(self, seqs: Sequence[int], *, now: float, timeout_s: float,
                  timeout_max_s: float) -> int:
        """The broker acknowledged these rows (or they were handed over again): record
        the attempt; each becomes due for a re-send ``timeout_s`` later, doubling per
        attempt up to ``timeout_max_s``. Returns how many were still there."""
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = []
                for start in range(0, len(seqs), 500):
                    chunk = list(seqs[start:start + 500])
                    marks = ",".join("?" * len(chunk))
                    found += self._db.execute(
                        f"SELECT seq, attempts, sent_at IS NULL FROM outbox "
                        f"WHERE seq IN ({marks})", chunk).fetchall()
                updates = []
                newly = 0
                for seq, attempts, was_pending in found:
                    wait = min(timeout_s * 2 ** min(int(attempts), 30), timeout_max_s)
                    updates.append((now, int(attempts) + 1, now + wait, seq))
                    newly += int(was_pending)
                self._db.executemany("UPDATE outbox SET sent_at = ?, attempts = ?, "
                                     "due_at = ? WHERE seq = ?", updates)
                if newly:
                    self._bump("published", newly)
                if len(found) > newly:  # handed over again for want of a receipt
                    self._bump("resent", len(found) - newly)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._awaiting += newly
        return len(found)

    def postpone(self, until: float) -> int:
        """Move every receipt due before ``until`` to ``until`` (the centre is back after
        a silence: give it time to work through the broker's backlog before re-sending).
        Returns how many rows moved."""
        with self._lock:
            cur = self._db.execute("UPDATE outbox SET due_at = ? WHERE due_at IS NOT NULL "
                                   "AND due_at < ?", (until, until))
            return int(cur.rowcount)

    def receipt(self, keys: Sequence[str]) -> tuple[int, int]:
        """The centre has these outbox keys for good: delete them. Returns ``(removed,
        unknown)``: keys not in the outbox (receipted before, or never this box's) are
        ignored and counted (``receipts_unknown``)."""
        if not keys:
            return 0, 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed, freed, sent = self._delete_rows("event_id", list(keys))
                unknown = len(keys) - removed
                self._bump("receipted", removed)
                if unknown:
                    self._bump("receipts_unknown", unknown)
                # a receipt can overtake the PUBACK: such a row was never "sent" here
                if removed > sent:
                    self._bump("published", removed - sent)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= removed
            self._bytes -= freed
            self._awaiting -= sent
        return removed, unknown

    def _delete_rows(self, column: str, keys: list[Any]) -> tuple[int, int, int]:
        """Inside the caller's transaction: delete the rows whose ``column`` is in
        ``keys``; ``(rows removed, bytes freed, of them sent)``."""
        removed = freed = sent = 0
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            row = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), "
                f"COALESCE(SUM(sent_at IS NOT NULL), 0) FROM outbox "
                f"WHERE {column} IN ({marks})", chunk).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE {column} IN ({marks})", chunk)
            removed += int(row[0])
            freed += int(row[1]) + int(row[0]) * ROW_OVERHEAD_BYTES
            sent += int(row[2])
        return removed, freed, sent

    def ack(self, seqs: list[int]) -> int:
        """Receipts off: delete rows on their PUBACK; returns how many were still there."""
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed, freed, sent = self._delete_rows("seq", seqs)
                self._bump("published", removed - sent)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= removed
            self._bytes -= freed
            self._awaiting -= sent
        return removed

    # -- introspection ----------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Rows held: pending plus awaiting a receipt."""
        return self._depth

    @property
    def pending(self) -> int:
        """Rows the broker has not acknowledged yet."""
        return self._depth - self._awaiting

    @property
    def awaiting_receipt(self) -> int:
        """Rows the broker acknowledged and the centre has not receipted yet."""
        return self._awaiting

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
        """Persistent totals: ``enqueued``, ``published`` (first PUBACK), ``receipted``,
        ``receipts_unknown``, ``resent``, ``dropped`` (of which ``dropped_unreceipted`` had been
        acknowledged by the broker), ``evidence_dropped``."""
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM counters").fetchall()
        out = {name: 0 for name in COUNTERS}
        out.update({str(name): int(value) for name, value in rows})
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
