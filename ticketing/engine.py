"""The ticket database: its engine, connections and transactions, and migrations.

:class:`Database` opens SQLite (a WAL file, or ``":memory:"``) or PostgreSQL (psycopg 3,
optionally in its own schema) through SQLAlchemy Core and migrates the schema on
construction (:mod:`ticketing.migrations`). Every store concern (:mod:`ticketing.tickets`,
:mod:`ticketing.event_ids`, :mod:`ticketing.audit`, ...) is a set of functions over a
connection it hands out, so one write transaction can span them all.

Also here: how the database spells a time (:func:`sortable`), and the SQL dialect helpers
those modules share.

>>> db = Database("sqlite://")
>>> with db.read() as conn:
...     conn.exec_driver_sql("SELECT 1").scalar_one()
1
>>> sortable(datetime(2026, 5, 4, 6, 0, 32, tzinfo=UTC))
'2026-05-04T06:00:32.000000Z'
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import StaticPool

from ticketing.migrations import migrate

IN_CHUNK = 500  # ids per ``IN (...)`` (SQLite caps bound parameters)


def sortable(value: datetime) -> str:
    """A fixed-width UTC timestamp; compares correctly as text in both databases.

    >>> sortable(datetime(2026, 5, 4, 6, 0, 32, tzinfo=UTC))
    '2026-05-04T06:00:32.000000Z'
    """
    offset = value.utcoffset()
    if offset is None or type(value) is not datetime:
        return _sortable(value)  # naive (local time, which may change) or a subclass
    # the offset is in the cache key: two times differing only in ``fold`` are equal
    return _sortable_aware(value, offset)


def _sortable(value: datetime) -> str:
    # isoformat with a fixed timespec: strftime's "%Y-%m-%dT%H:%M:%S.%fZ", faster
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@functools.lru_cache(maxsize=8192)  # a desk write spells the same few times again and again
def _sortable_aware(value: datetime, offset: timedelta) -> str:
    return _sortable(value)


def from_sortable(value: str) -> datetime:
    """The inverse of :func:`sortable` (an aware UTC datetime)."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs name the psycopg 3 driver.

    >>> normalise_url("postgres://u@h/db")
    'postgresql+psycopg://u@h/db'
    """
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def driver_sql(sql: str, dialect: str) -> str:
    """``sql`` (``:name`` or ``?`` parameters, as sqlite3 takes them) in the driver's
    style, for ``exec_driver_sql``: the many-row statements of a desk write skip
    SQLAlchemy's per-row parameter processing (the values are plain str and int)."""
    if dialect == "postgresql":  # psycopg: pyformat / format
        return re.sub(r":(\w+)", r"%(\1)s", sql).replace("?", "%s")
    return sql


def chunks(values: list[str]) -> Iterator[list[str]]:
    """``values`` in lists of at most :data:`IN_CHUNK` (for ``IN (...)``)."""
    for i in range(0, len(values), IN_CHUNK):
        yield values[i:i + IN_CHUNK]


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # let SQLAlchemy's "begin" event issue BEGIN itself (IMMEDIATE for writers)
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # WAL is a property of the file: set once, read after. Setting it takes an exclusive
    # lock, and two processes opening a new file at once (two workers starting) can get
    # "database is locked" at once, without the busy timeout: a few tries, spaced
    for attempt in range(20):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 19:
                raise
            time.sleep(0.05 * (attempt + 1))
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # a writer takes the write lock up front, so two writers queue (busy timeout)
    # instead of failing with SQLITE_BUSY when a read lock would have to be upgraded.
    # A reader runs each statement on its own (autocommit), as PostgreSQL's READ
    # COMMITTED does: reads are written for that (see ticketing.event_ids), and a read
    # then costs no BEGIN / ROLLBACK round.
    if conn.get_execution_options().get("gridwatch_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One ticket database; thread-safe.

    Args:
        url: ``sqlite:///path/tickets.db``, ``sqlite://`` (memory) or
            ``postgresql://user@host/db`` (psycopg 3).
        schema: PostgreSQL only: keep the tables in this schema (created if missing).
        pool_size: connections kept open (SQLite file or PostgreSQL); as many again
            may be opened for a burst.

    Raises:
        ValueError: a URL of another database, or a schema for SQLite / not a plain name.
    """

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        self.schema = schema
        self.engine: Engine
        memory = self.url in ("sqlite://", "sqlite:///:memory:")
        # one connection shared by all threads (StaticPool): one user at a time
        self._lock: threading.RLock | None = threading.RLock() if memory else None
        if self.url.startswith("sqlite"):
            self.dialect = "sqlite"
            if schema is not None:
                raise ValueError(f"expected schema=None for SQLite, got {schema!r}")
            kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False,
                                                       "timeout": 30}}
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                # as many pooled connections as PostgreSQL gets (a file connection is
                # cheap, but one opened per request past the pool is not free either)
                kwargs.update(pool_size=pool_size, max_overflow=pool_size)
                db = self.url.split("sqlite:///", 1)[-1]
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, **kwargs)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif self.url.startswith("postgresql"):
            self.dialect = "postgresql"
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size)
            if schema is not None:
                if not schema.replace("_", "").isalnum():
                    raise ValueError(f"expected a plain schema name, got {schema!r}")
                with self.engine.begin() as conn:
                    # PostgreSQL's IF NOT EXISTS is no guard against a create at the same
                    # moment (two workers starting together: one failed on
                    # pg_namespace's unique index); the lock makes the second wait
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": zlib.crc32(f"gridwatch-schema:{schema}".encode())})
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

                def _search_path(dbapi_conn: Any, _record: Any) -> None:
                    with dbapi_conn.cursor() as cur:
                        cur.execute(f'SET search_path TO "{schema}"')
                    dbapi_conn.commit()

                event.listen(self.engine, "connect", _search_path)
                self.engine.dispose()
        else:
            raise ValueError(f"expected a sqlite:// or postgresql:// URL, got {url!r}")
        self.for_update = " FOR UPDATE" if self.dialect == "postgresql" else ""
        with self.write() as conn:
            self.applied_migrations = migrate(conn, dialect=self.dialect,
                                              lock_name=f"gridwatch:{schema or ''}")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read connection (each statement on its own, as READ COMMITTED)."""
        with self._locked(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on exit, rolled back on an error."""
        with self._locked(), self.engine.connect() as conn:
            conn.execution_options(gridwatch_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    def schema_version(self) -> int:
        with self.read() as conn:
            return int(conn.execute(text("SELECT max(version) FROM schema_migrations"))
                       .scalar_one())

    def ping(self) -> bool:
        with self.read() as conn:
            return conn.execute(text("SELECT 1")).scalar_one() == 1
