"""The centre's copy of camera evidence: snapshot images kept by detection event id.

Edge boxes send each detection's snapshot beside the detection (``docs/edge.md``); the
ingest stores it here, and the API serves it at ``/evidence/<event_id>`` to whoever may
read a ticket holding that detection. In the live services a ticket's ``snapshot_urls``
hold these links (:func:`evidence_path`), never a path on an edge box. The link depends
only on the event id, so it is right whether the image arrives before its detection,
after it, or (after an outage) much later; until then the API answers 404.

Storage has two halves behind one :class:`EvidenceStore`:

- metadata (event id, station, source, content type, size, SHA-256, when stored) in the
  ticket database's ``evidence`` table (migration 6), so the budget, retention and
  authorization are queries next to ``ticket_event_ids``;
- the bytes in a :class:`BlobStore`. The embedded default is :class:`DirectoryBlobStore`,
  a folder beside the ticket database; a production centre with several API replicas
  puts that folder on a shared volume, or implements the three methods over an object
  store (S3/MinIO: ``put_object`` / ``get_object`` / ``delete_object``).

Limits (``evidence:`` in ``configs/default.yaml``): ``max_item_bytes`` per image,
``max_bytes`` in all (the oldest are removed to make room), ``retention_days`` (older
ones are removed whenever evidence arrives, or by :meth:`EvidenceStore.evict`). Only JPEG
and PNG are taken, recognised by their bytes, whatever the sender calls them.

>>> from ticketing.store import SqliteTicketStore
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> store = EvidenceStore(SqliteTicketStore(":memory:"), DirectoryBlobStore(folder))
>>> store.put(event_id="e1", station_id="st1", source_id="cam-1",
...           content_type="image/png", image=b"\\x89PNG\\r\\n\\x1a\\n...")
True
>>> store.get("e1").size_bytes, store.read("e1")[:4]
(11, b'\\x89PNG')
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection, text

from ticketing.engine import sortable
from ticketing.store import SqlTicketStore

log = logging.getLogger(__name__)

EVIDENCE_PREFIX = "/evidence/"
MIB = 1024 * 1024

# the types the centre serves, by their first bytes
_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))
SUPPORTED_TYPES = tuple(t for _, t in _SIGNATURES)


def evidence_path(event_id: str) -> str:
    """The API path of a detection's evidence: ``/evidence/<event id, URL-quoted>``.

    >>> evidence_path("st1:cam-1:wrong_way_ebike:20260522T120004+0800:3")
    '/evidence/st1:cam-1:wrong_way_ebike:20260522T120004%2B0800:3'
    """
    return EVIDENCE_PREFIX + quote(event_id, safe=":")


def sniff_content_type(image: bytes) -> str | None:
    """``image/jpeg`` or ``image/png`` from the image's first bytes, else None."""
    for magic, content_type in _SIGNATURES:
        if image.startswith(magic):
            return content_type
    return None


class EvidenceSettings(BaseModel):
    """The ``evidence:`` section of the root config (documented in default.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # where the images go; None: an "evidence" folder beside the ticket database
    directory: Path | None = None
    max_bytes: Annotated[int, Field(ge=MIB)] = 10 * 1024 * MIB
    max_item_bytes: Annotated[int, Field(ge=1024, le=64 * MIB)] = 4 * MIB
    retention_days: Annotated[float, Field(gt=0, le=3650)] = 90.0

    @model_validator(mode="after")
    def _item_fits(self) -> EvidenceSettings:
        if self.max_item_bytes > self.max_bytes:
            raise ValueError(f"expected max_item_bytes <= max_bytes, got "
                             f"{self.max_item_bytes} > {self.max_bytes}")
        return self


class EvidenceRejected(ValueError):
    """An image the centre will not store.

    Attributes:
        code: ``too_large``, ``not_an_image`` or ``content_type_mismatch``.
        reason: one line saying what was expected and what came.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """What is known about one stored image."""

    event_id: str
    station_id: str
    source_id: str
    content_type: str
    size_bytes: int
    sha256: str
    stored_at: datetime


class BlobStore(Protocol):
    """Where the image bytes live; keys are ``[0-9a-f]{64}`` strings."""

    def put(self, key: str, data: bytes) -> None:
        """Store durably (the ingest acknowledges the message after this returns)."""

    def get(self, key: str) -> bytes | None:
        """The bytes, or None when there are none under ``key``."""

    def delete(self, key: str) -> None:
        """Remove (nothing happens when there is nothing under ``key``)."""


class DirectoryBlobStore:
    """Blobs as files ``<root>/<key[:2]>/<key>``, written atomically and fsynced."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"expected a 64-digit hex key, got {key!r}")
        return self.root / key[:2] / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def blob_key(event_id: str) -> str:
    """The blob key of an event id (any characters in; a safe file name out)."""
    return hashlib.sha256(event_id.encode("utf-8")).hexdigest()


def _parse_stored(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EvidenceStore:
    """Evidence images: metadata in the ticket database, bytes in a :class:`BlobStore`.

    Args:
        tickets: the ticket store (its database holds the ``evidence`` table and the
            tickets that authorize reading).
        blobs: where the bytes go.
        settings: size limits and retention.

    Thread-safe; the counters (:meth:`stats`) are this process's since start.
    """

    def __init__(self, tickets: SqlTicketStore, blobs: BlobStore,
                 settings: EvidenceSettings | None = None) -> None:
        self.tickets = tickets
        self.blobs = blobs
        self.settings = settings or EvidenceSettings()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._evicted: Counter[str] = Counter()
        self._bytes = self._total_bytes()

    @classmethod
    def beside(cls, tickets: SqlTicketStore, db_path: str | Path,
               settings: EvidenceSettings | None = None) -> EvidenceStore:
        """The embedded default: ``settings.directory``, else ``evidence/`` next to the
        SQLite file ``db_path``."""
        settings = settings or EvidenceSettings()
        folder = settings.directory or Path(db_path).parent / "evidence"
        return cls(tickets, DirectoryBlobStore(folder), settings)

    # -- plumbing -------------------------------------------------------------------
    def _connect(self, *, write: bool) -> Any:
        conn = self.tickets.engine.connect()
        if write:
            conn.execution_options(gridwatch_write=True)
        return conn

    def _total_bytes(self) -> int:
        with self._connect(write=False) as conn:
            return int(conn.execute(text(
                "SELECT COALESCE(SUM(size_bytes), 0) FROM evidence")).scalar() or 0)

    # -- writing ----------------------------------------------------------------------
    def check(self, *, content_type: str, image: bytes) -> str:
        """The image's content type if the centre takes it; raises :class:`EvidenceRejected`."""
        limit = self.settings.max_item_bytes
        if len(image) > limit:
            raise EvidenceRejected("too_large", f"expected at most {limit} bytes "
                                                f"(evidence.max_item_bytes), got {len(image)}")
        actual = sniff_content_type(image)
        if actual is None:
            raise EvidenceRejected("not_an_image", f"expected one of {list(SUPPORTED_TYPES)}, "
                                                   f"got bytes that are none of them")
        if content_type != actual:
            raise EvidenceRejected("content_type_mismatch", f"declared {content_type!r} but "
                                                            f"the bytes are {actual}")
        return actual

    def put(self, *, event_id: str, station_id: str, source_id: str, content_type: str,
            image: bytes, now: datetime | None = None) -> bool:
        """Store one image; True if new, False if this event id is already stored (the
        first copy is kept). Makes room first: retention, then the budget (oldest out).

        Raises:
            EvidenceRejected: not a JPEG/PNG, not what it says it is, or too large
                (counted by code in :meth:`stats`).
            OSError, SQLAlchemy errors: storage unavailable (nothing recorded; retry).
        """
        try:
            self.check(content_type=content_type, image=image)
        except EvidenceRejected as exc:
            with self._lock:
                self._rejected[exc.code] += 1
            raise
        if self.get(event_id) is not None:
            with self._lock:
                self._counts["duplicates"] += 1
            return False
        now = now or _utc_now()
        self.evict(now=now, room_for=len(image))
        key = blob_key(event_id)
        # bytes first: a crash before the row leaves an orphan file, never a row without
        # its bytes; the unacknowledged message comes again and writes both
        self.blobs.put(key, image)
        with self._connect(write=True) as conn, conn.begin():
            inserted = conn.execute(text(
                "INSERT INTO evidence (event_id, station_id, source_id, content_type,"
                " size_bytes, sha256, stored_at) VALUES (:e, :st, :so, :ct, :n, :h, :at)"
                " ON CONFLICT (event_id) DO NOTHING"),
                {"e": event_id, "st": station_id, "so": source_id, "ct": content_type,
                 "n": len(image), "h": hashlib.sha256(image).hexdigest(),
                 "at": sortable(now)}).rowcount
        with self._lock:
            if inserted:
                self._counts["stored"] += 1
                self._bytes += len(image)
            else:  # another writer stored it meanwhile (same event, same bytes)
                self._counts["duplicates"] += 1
        return bool(inserted)

    def evict(self, *, now: datetime | None = None, room_for: int = 0) -> int:
        """Remove images older than ``retention_days``, then the oldest until
        ``room_for`` more bytes fit in ``max_bytes``. Returns how many were removed."""
        now = now or _utc_now()
        cutoff = now - timedelta(days=self.settings.retention_days)
        removed = 0
        with self._connect(write=True) as conn, conn.begin():
            old = conn.execute(text(
                "SELECT event_id, size_bytes FROM evidence WHERE stored_at < :cutoff"),
                {"cutoff": sortable(cutoff)}).fetchall()
            removed += self._remove(conn, old, "retention")
            if self._bytes + room_for > self.settings.max_bytes:
                self._bytes = int(conn.execute(text(
                    "SELECT COALESCE(SUM(size_bytes), 0) FROM evidence")).scalar() or 0)
            while self._bytes + room_for > self.settings.max_bytes:
                rows = conn.execute(text(
                    "SELECT event_id, size_bytes FROM evidence"
                    " ORDER BY stored_at, event_id LIMIT 100")).fetchall()
                if not rows:
                    break
                victims = []
                freed = 0
                for row in rows:
                    victims.append(row)
                    freed += int(row.size_bytes)
                    if self._bytes - freed + room_for <= self.settings.max_bytes:
                        break
                removed += self._remove(conn, victims, "budget")
        return removed

    def _remove(self, conn: Connection, rows: list[Any], reason: str) -> int:
        if not rows:
            return 0
        conn.execute(text("DELETE FROM evidence WHERE event_id = :e"),
                     [{"e": row.event_id} for row in rows])
        for row in rows:
            # after the row: a crash in between leaves an orphan file, not a dead link
            self.blobs.delete(blob_key(row.event_id))
        with self._lock:
            self._bytes -= sum(int(row.size_bytes) for row in rows)
            self._evicted[reason] += len(rows)
        log.info("evidence: removed %d image(s) (%s)", len(rows), reason)
        return len(rows)

    # -- reading ----------------------------------------------------------------------
    def get(self, event_id: str) -> EvidenceItem | None:
        with self._connect(write=False) as conn:
            row = conn.execute(text(
                "SELECT event_id, station_id, source_id, content_type, size_bytes, sha256,"
                " stored_at FROM evidence WHERE event_id = :e"), {"e": event_id}).first()
        if row is None:
            return None
        return EvidenceItem(row.event_id, row.station_id, row.source_id, row.content_type,
                            int(row.size_bytes), row.sha256, _parse_stored(row.stored_at))

    def read(self, event_id: str) -> bytes | None:
        """The image bytes, or None."""
        return self.blobs.get(blob_key(event_id))

    def departments_holding(self, event_id: str) -> list[str]:
        """Departments of the tickets that hold this detection (a merge copies ids, so
        there may be more than one), sorted."""
        with self._connect(write=False) as conn:
            rows = conn.execute(text(
                "SELECT DISTINCT t.department FROM ticket_event_ids e"
                " JOIN tickets t ON t.ticket_id = e.ticket_id WHERE e.event_id = :e"),
                {"e": event_id}).fetchall()
        return sorted(str(r[0]) for r in rows)

    def stats(self) -> dict[str, Any]:
        """``stored``, ``duplicates``, ``rejected_by_code``, ``evicted_by_reason`` (this
        process, since start) and ``bytes`` held now."""
        with self._lock:
            return {"stored": self._counts["stored"],
                    "duplicates": self._counts["duplicates"],
                    "rejected_by_code": dict(sorted(self._rejected.items())),
                    "evicted_by_reason": dict(sorted(self._evicted.items())),
                    "bytes": self._bytes}
