"""Ticket stores: in memory (replay) and SQL (SQLite by default, PostgreSQL by config),
behind one :class:`TicketStore` Protocol.

Both keep the two indexes the desk needs: the open ticket of a (cell, kind), and the
ticket an incident already belongs to. Desk writes are upserts keyed by ``ticket_id``.

:class:`SqlTicketStore` is also the service store. It is composed from one module per
concern, each a set of functions (or a small class) over a connection, so that one write
transaction spans them:

=========================  ==============================================================
:mod:`ticketing.engine`    the engine, connections, transactions, migrations
:mod:`ticketing.tickets`   ticket rows, incident links, version-checked writes
:mod:`ticketing.event_ids` each ticket's append-only event ids (and their read cache)
:mod:`ticketing.audit`     the audit log
:mod:`ticketing.reviews`   review counts per source and the sources they suspend
:mod:`ticketing.cards`     escalation records (cards) and the tickets with a step due
:mod:`ticketing.deliveries` the webhook delivery queue
:mod:`ticketing.changelog` changes, their listeners and the change log
=========================  ==============================================================

A lifecycle change (:meth:`SqlTicketStore.modify`) runs in one transaction that locks the
row, checks the version (optimistic concurrency), and writes the ticket, its audit
entries, the source review counts, the card, the webhook deliveries and the change log
together, so two API replicas or two escalators on one database never apply the same
change twice.

>>> store = SqliteTicketStore(":memory:")
>>> store.count()
0
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine

from ticketing import audit, cards, changelog, deliveries, event_ids, reviews
from ticketing.audit import audit_public
from ticketing.cards import AlreadyEscalated
from ticketing.changelog import Change, ChangeListener, ChangeListeners
from ticketing.deliveries import CENTRE, Delivery, DeliveryTargets, as_targets
from ticketing.engine import Database, normalise_url, sortable
from ticketing.event_ids import EventIdTable, IdRow, new_rows
from ticketing.lifecycle import AuditEntry
from ticketing.models import OPEN_STATUSES, Ticket
from ticketing.queries import ANY_TICKET, DEFAULT_SORT, Sort, TicketFilter, matches, sort_key
from ticketing.reviews import SourceStats
from ticketing.routing import clock_record
from ticketing.tickets import (
    OpenTicketMoved,
    TicketNotFound,
    TicketTable,
    VersionConflict,
    ticket_row,
)

__all__ = [
    "AlreadyEscalated", "Change", "ChangeListener", "Delivery", "DeliveryTargets",
    "MemoryTicketStore", "Mutation", "OpenTicketMoved", "SourceStats", "SqlTicketStore",
    "SqliteTicketStore", "TicketFilter", "TicketNotFound", "TicketStore",
    "VersionConflict", "audit_public", "configured_url", "open_store", "sortable",
]

_normalise_url = normalise_url  # the name tests/conftest.py and benchmarks import


class TicketStore(Protocol):
    """What the desk (:class:`~ticketing.desk.TicketDesk`) and the runtimes that feed it
    use of a store: the two desk indexes, the upsert, lists, and the sources whose
    tickets go to review first. :class:`MemoryTicketStore` (replay),
    :class:`SqlTicketStore` and :class:`~ticketing.batch.BatchingStore` implement it;
    mypy checks each against it (``tests/ticketing/test_store.py``)."""

    def get(self, ticket_id: str) -> Ticket | None:
        """The ticket with this id, or None."""
        ...

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        """The open ticket of a cell and kind (the latest opened if several)."""
        ...

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        """The ticket an incident was linked to by :meth:`save`."""
        ...

    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        """Insert or replace ``ticket`` (linking ``incident_id`` to it)."""
        ...

    def list(self, flt: TicketFilter = ..., *, limit: int = 100,
             offset: int = 0, sort: Sort = ...) -> builtins.list[Ticket]:
        """Tickets matching ``flt`` in ``sort`` order."""
        ...

    def count(self, flt: TicketFilter = ...) -> int:
        """How many tickets match ``flt``."""
        ...

    def all(self) -> Iterator[Ticket]:
        """Every ticket, oldest opened first."""
        ...

    def suspended_sources(self, *, max_false_positive_rate: float,
                          min_reviewed: int) -> frozenset[str]:
        """Sources dismissed too often to auto-dispatch (none without review records)."""
        ...


class MemoryTicketStore:
    """Dict-backed; what replay uses (no I/O until the end). It keeps no review records,
    so it suspends no source."""

    def __init__(self) -> None:
        self._tickets: dict[str, Ticket] = {}
        self._open: dict[tuple[str, str], str] = {}
        self._by_incident: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._tickets)

    def get(self, ticket_id: str) -> Ticket | None:
        return self._tickets.get(ticket_id)

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        ticket_id = self._open.get((cell_id, kind))
        return None if ticket_id is None else self._tickets[ticket_id]

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        ticket_id = self._by_incident.get(incident_id)
        return None if ticket_id is None else self._tickets[ticket_id]

    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        self._tickets[ticket.ticket_id] = ticket
        key = (ticket.cell_id, ticket.kind)
        if ticket.status in OPEN_STATUSES:
            self._open[key] = ticket.ticket_id
        elif self._open.get(key) == ticket.ticket_id:
            del self._open[key]
        if incident_id is not None:
            self._by_incident[incident_id] = ticket.ticket_id

    def list(self, flt: TicketFilter = ANY_TICKET, *, limit: int = 100,
             offset: int = 0, sort: Sort = DEFAULT_SORT) -> builtins.list[Ticket]:
        rows = sorted((t for t in self._tickets.values() if matches(t, flt)),
                      key=sort_key(sort))
        return rows[offset:offset + limit]

    def count(self, flt: TicketFilter = ANY_TICKET) -> int:
        return sum(1 for t in self._tickets.values() if matches(t, flt))

    def all(self) -> Iterator[Ticket]:
        return iter(sorted(self._tickets.values(), key=lambda t: (t.opened_at, t.ticket_id)))

    def suspended_sources(self, *, max_false_positive_rate: float,
                          min_reviewed: int) -> frozenset[str]:
        return frozenset()


Mutation = Callable[[Ticket, Callable[[str], Ticket]], builtins.list[AuditEntry]]
"""``mutate(ticket, load)`` of :meth:`SqlTicketStore.modify`."""


class SqlTicketStore:
    """Tickets in SQLite or PostgreSQL through SQLAlchemy Core; thread-safe.

    Args:
        url: ``sqlite:///path/tickets.db``, ``sqlite://`` (memory) or
            ``postgresql://user@host/db`` (psycopg 3).
        schema: PostgreSQL only: keep the tables in this schema (created if missing).
        webhooks: also queue every change for webhook delivery (same transaction):
            ``True`` for the upstream centre alone, or the receivers as
            :class:`~ticketing.deliveries.DeliveryTargets` (what ``serve`` and ``demo``
            pass: ``DeliveryTargets.from_settings(settings)``, the centre and the
            departments with their own webhook); ``False`` or no receiver: none.
        pool_size: connections kept open (SQLite file or PostgreSQL); as many again
            may be opened for a burst.

    The schema is migrated on construction (see :mod:`ticketing.migrations`).

    Composition, not inheritance: the store holds a :class:`~ticketing.engine.Database`
    and calls each concern's functions with the connection of the one transaction a
    write needs; no concern knows the others, and each is tested by itself.
    """

    def __init__(self, url: str, *, schema: str | None = None,
                 webhooks: bool | DeliveryTargets = False, pool_size: int = 10) -> None:
        self.webhooks: DeliveryTargets | None = as_targets(webhooks)
        self.listeners = ChangeListeners()
        self.db = Database(url, schema=schema, pool_size=pool_size)
        self._event_ids = EventIdTable(self.db.dialect)
        self._tickets = TicketTable(self.db.dialect, self._event_ids)
        self._changes_key = changelog.lock_key(schema)

    # -- the database -----------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.db.url

    @property
    def schema(self) -> str | None:
        return self.db.schema

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.db.dialect

    @property
    def engine(self) -> Engine:
        return self.db.engine

    @property
    def applied_migrations(self) -> builtins.list[int]:
        """The migrations this store applied when it opened the database."""
        return self.db.applied_migrations

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction on this database, for the modules that keep tables of
        their own in it (:mod:`ticketing.users`, :mod:`ticketing.login`,
        :mod:`ticketing.checkpoints`); committed on exit, rolled back on an error."""
        return self.db.write()

    def connection(self) -> AbstractContextManager[Connection]:
        """A read connection on this database, for those modules and the query modules
        that take one (:mod:`ticketing.audit`, :mod:`ticketing.cards`)."""
        return self.db.read()

    def schema_version(self) -> int:
        return self.db.schema_version()

    def ping(self) -> bool:
        return self.db.ping()

    # -- change listeners -------------------------------------------------------------
    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(change)`` after every committed change (in the writer's
        thread; keep it quick and do not raise)."""
        self.listeners.add(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        self.listeners.remove(listener)

    # -- tickets (ticketing.tickets) ----------------------------------------------------
    def get(self, ticket_id: str) -> Ticket | None:
        with self.db.read() as conn:
            return self._tickets.get(conn, ticket_id)

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        """The open ticket of a cell and kind (the latest opened if there are several)."""
        with self.db.read() as conn:
            return self._tickets.open_for(conn, cell_id, kind)

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        with self.db.read() as conn:
            return self._tickets.for_incident(conn, incident_id)

    def list(self, flt: TicketFilter = ANY_TICKET, *, limit: int = 100,
             offset: int = 0, sort: Sort = DEFAULT_SORT) -> builtins.list[Ticket]:
        """Tickets matching ``flt`` in ``sort`` order (oldest opened first by default)."""
        with self.db.read() as conn:
            return self._tickets.page(conn, flt, limit=limit, offset=offset, sort=sort)

    def page_public(self, flt: TicketFilter = ANY_TICKET, *, limit: int = 100,
                    offset: int = 0, sort: Sort = DEFAULT_SORT
                    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """What :meth:`list` gives, as ``Ticket.to_public()`` dicts read straight from the
        stored JSON bodies (no :class:`Ticket` is built), and :meth:`count`'s total: the
        API's list is this plus JSON encoding. One connection."""
        with self.db.read() as conn:
            return self._tickets.page_public(conn, flt, limit=limit, offset=offset,
                                             sort=sort)

    def count(self, flt: TicketFilter = ANY_TICKET) -> int:
        with self.db.read() as conn:
            return self._tickets.count(conn, flt)

    def all(self) -> Iterator[Ticket]:
        with self.db.read() as conn:
            return iter(self._tickets.all(conn))

    # -- event ids (ticketing.event_ids) -----------------------------------------------
    def recent_event_ids(self, *, horizon_s: float, until: datetime | None = None
                         ) -> builtins.list[tuple[str, float]]:
        """``(event_id, added_at timestamp)`` of the ids added to tickets within
        ``horizon_s`` of the newest one, oldest first: what a restarted pipeline needs to
        recognise redelivered detections without loading every ticket. ``added_at`` is
        the ticket's ``updated_at`` (event time) of the write that added the id.

        ``until`` (a live runtime: its clock plus the future it accepts): ids added later
        than that (a bad clock's) are left out and do not count as the newest, so one
        far-future write cannot push every real id out of the horizon."""
        with self.db.read() as conn:
            return event_ids.recent(conn, horizon_s=horizon_s, until=until)

    def linked_incidents(self, incident_ids: builtins.list[str]) -> set[str]:
        """The incidents of ``incident_ids`` that a ticket is linked to (one read)."""
        if not incident_ids:
            return set()
        with self.db.read() as conn:
            return self._tickets.linked(conn, incident_ids)

    def event_ids_held(self, ids: builtins.list[str]) -> set[str]:
        """The ids of ``ids`` that a ticket holds, whichever ticket: what a centre replica
        checks before it adds a re-sent detection that another replica may have committed
        into a ticket this one does not know."""
        if not ids:
            return set()
        with self.db.read() as conn:
            return event_ids.held(conn, ids)

    # -- audit (ticketing.audit) ---------------------------------------------------------
    def audit(self, ticket_id: str) -> builtins.list[AuditEntry]:
        """The ticket's audit log, oldest first."""
        with self.db.read() as conn:
            return audit.of_ticket(conn, ticket_id)

    def audit_between(self, *, start: datetime, end: datetime,
                      action: str | None = None) -> builtins.list[AuditEntry]:
        """Audit entries with ``start <= at < end`` (optionally of one action)."""
        with self.db.read() as conn:
            return audit.between(conn, start=start, end=end, action=action)

    # -- reviews and sources (ticketing.reviews) -----------------------------------------
    def source_stats(self) -> builtins.list[SourceStats]:
        with self.db.read() as conn:
            return reviews.stats(conn)

    def suspended_sources(self, *, max_false_positive_rate: float,
                          min_reviewed: int) -> frozenset[str]:
        """Sources whose false-positive rate is above the threshold (with enough
        reviews to judge): their tickets go to review instead of auto-dispatch."""
        with self.db.read() as conn:
            return reviews.suspended(conn, max_false_positive_rate=max_false_positive_rate,
                                     min_reviewed=min_reviewed)

    # -- escalations (ticketing.cards) ---------------------------------------------------
    def escalation_candidates(self, *, now: datetime, remind_before_s: int,
                              limit: int = 500) -> builtins.list[Ticket]:
        """Open tickets with a supervision step due at ``now`` (reminder, yellow, red)."""
        with self.db.read() as conn:
            return self._tickets.hydrate(conn, cards.due_rows(
                conn, now=now, remind_before_s=remind_before_s, limit=limit))

    # -- change log (ticketing.changelog) ------------------------------------------------
    def change_window(self) -> changelog.LogWindow:
        """The oldest and newest ``seq`` still in the change log."""
        with self.db.read() as conn:
            return changelog.window(conn)

    def change_version(self) -> int:
        """The newest change's ``seq`` (0 before any): it moves on with every committed
        ticket write, from any process (a version of the whole ticket table)."""
        with self.db.read() as conn:
            return int(conn.execute(changelog.NEWEST).scalar() or 0)

    def changes_since(self, after: int, *, limit: int = 500) -> builtins.list[
            dict[str, Any]]:
        """Logged change messages with ``seq > after``, oldest first (``limit`` at most)."""
        with self.db.read() as conn:
            return changelog.since(conn, after, limit=limit)

    def prune_changes(self, *, now: datetime, retention_s: float, max_rows: int) -> int:
        """Drop changes older than ``retention_s`` before ``now`` (by the change's time)
        and all but the newest ``max_rows``; the newest is always kept."""
        with self.db.write() as conn:
            return changelog.prune(conn, keep=max_rows, before=sortable(
                now - timedelta(seconds=retention_s)))

    # -- webhook deliveries (ticketing.deliveries) ---------------------------------------
    def claim_deliveries(self, *, now: datetime, lease_s: float, worker: str,
                         limit: int = 50, destination: str = CENTRE
                         ) -> builtins.list[Delivery]:
        """Claim the due deliveries of one receiver (``"centre"`` or
        ``"department/<id>"``, see :mod:`ticketing.deliveries`) for ``lease_s``; another
        worker skips them meanwhile."""
        with self.db.write() as conn:
            return deliveries.claim(conn, dialect=self.dialect, destination=destination,
                                    now=sortable(now),
                                    until=sortable(now + timedelta(seconds=lease_s)),
                                    worker=worker, limit=limit)

    def release_deliveries(self, item_ids: builtins.list[int], *, worker: str) -> None:
        """Give back deliveries ``worker`` claimed but did not try (no attempt counted)."""
        if item_ids:
            with self.db.write() as conn:
                deliveries.release(conn, item_ids, worker=worker)

    def finish_delivery(self, item_id: int, *, at: datetime, delivered: bool,
                        error: str | None = None, retry_at: datetime | None = None) -> None:
        """Record one delivery attempt: delivered, to retry at ``retry_at``, or given up
        (``retry_at`` None and not delivered)."""
        with self.db.write() as conn:
            deliveries.finish(conn, item_id, at=sortable(at), delivered=delivered,
                              error=error,
                              retry_at=None if retry_at is None else sortable(retry_at))

    def delivery_counts(self, *, destination: str | None = None) -> dict[str, int]:
        """Deliveries pending, delivered and failed (of one receiver, or all)."""
        with self.db.read() as conn:
            return deliveries.counts(conn, destination=destination)

    # -- writes: one transaction across the concerns -------------------------------------
    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        """The desk's upsert. A new ticket is inserted; an existing one is replaced only
        if ``ticket.version`` is newer than the stored one, else :class:`VersionConflict`
        (the desk re-reads and re-applies)."""
        self.save_many([(ticket, [incident_id] if incident_id is not None else [])])

    def save_many(self, items: builtins.list[tuple[Ticket, builtins.list[str]]], *,
                  read_versions: dict[str, int] | None = None,
                  open_tickets: dict[tuple[str, str], str] | None = None,
                  also: Callable[[Connection], None] | None = None) -> int:
        """Several desk upserts (each with the incident ids it newly absorbed) in one
        transaction: all are written or, on a :class:`VersionConflict`, none.

        ``read_versions`` (ticket id → the version the caller read) makes the check
        exact for a caller that changed a ticket several times before saving it: the
        stored version must still be the one read, and a ticket missing from it must not
        exist yet. ``open_tickets`` ((cell id, kind) → ticket id) is what a caller took
        for :meth:`open_ticket_for` without asking (a cache): each must still be the
        answer, else :class:`OpenTicketMoved` (a :class:`VersionConflict`).

        ``also(conn)`` runs last in the same transaction (the stream stage's checkpoint
        or journal, so it commits exactly with the tickets it produced).

        Returns how many of the incident links were new: fewer than given means another
        writer linked an incident first (its link is kept)."""
        changes: builtins.list[Change] = []
        new_ids: builtins.list[IdRow] = []  # all tickets', one statement
        inserts: builtins.list[dict[str, object]] = []
        updates: builtins.list[dict[str, object]] = []
        links: builtins.list[dict[str, object]] = []
        tickets = self._tickets
        with self.db.write() as conn:
            # ticket id -> (version, status, event_count) as stored, then as written
            stored = tickets.stored_versions(conn, [t.ticket_id for t, _ in items])
            for ticket, incident_ids in items:
                ticket_id = ticket.ticket_id
                row = stored.get(ticket_id)
                if read_versions is not None:
                    read = read_versions.get(ticket_id, 0)
                    current = 0 if row is None else row[0]
                    if current != read:
                        raise VersionConflict(ticket_id, expected=read, current=current)
                at = ticket.updated_at
                if row is None:
                    count = len(ticket.event_ids)
                    inserts.append(ticket_row(ticket, event_count=count))
                    new_ids += new_rows(ticket, stored=0)
                    entry = AuditEntry(ticket_id=ticket_id, at=at, actor="system:desk",
                                       action="create", from_status=None,
                                       to_status=ticket.status.value,
                                       note=f"opened ({ticket.review.value})",
                                       data={"origin": ticket.origin.value,
                                             "clock": clock_record(ticket)})
                    changes.append(Change("created", ticket, (entry,)))
                else:
                    version, status, stored_events = row
                    if version >= ticket.version:
                        raise VersionConflict(ticket_id, expected=ticket.version - 1,
                                              current=version)
                    count = max(stored_events, len(ticket.event_ids))
                    values = ticket_row(ticket, event_count=count)
                    values["expected"] = version
                    updates.append(values)
                    new_ids += new_rows(ticket, stored=stored_events)
                    entries: tuple[AuditEntry, ...] = ()
                    if status != ticket.status.value:
                        entries = (AuditEntry(
                            ticket_id=ticket_id, at=at, actor="system:desk",
                            action="auto_dispatch", from_status=status,
                            to_status=ticket.status.value,
                            note="a confident detection confirmed it",
                            data={"clock": clock_record(ticket)}),)
                    changes.append(Change("updated", ticket, entries))
                stored[ticket_id] = (ticket.version, ticket.status.value, count)
                links += [{"i": i, "t": ticket_id} for i in incident_ids]
            if open_tickets:
                tickets.check_open(conn, open_tickets)
            for values in inserts:  # new tickets are rare: one by one, each checked
                if not tickets.insert(conn, values):
                    raise VersionConflict(str(values["ticket_id"]), expected=None, current=0)
            if updates:
                tickets.update_many(conn, updates)
            linked = tickets.link_incidents(conn, links)
            self._event_ids.append(conn, new_ids)
            self._record(conn, changes)
            if also is not None:
                also(conn)
        self.listeners.notify(changes)
        return linked

    def create(self, ticket: Ticket, *, actor: str, note: str | None = None) -> tuple[
            Ticket, bool]:
        """Insert a ticket made outside the desk (API, Open311). Idempotent on
        ``ticket_id``: an existing ticket is returned unchanged with ``False``."""
        with self.db.write() as conn:
            if not self._tickets.insert(conn, ticket_row(
                    ticket, event_count=len(ticket.event_ids))):
                existing = self._tickets.get(conn, ticket.ticket_id)
                if existing is None:  # the insert found it; only a delete could do this
                    raise TicketNotFound(ticket.ticket_id)
                return existing, False
            self._event_ids.append(conn, new_rows(ticket, stored=0))
            entry = AuditEntry(ticket_id=ticket.ticket_id,
                               at=ticket.received_at or ticket.opened_at, actor=actor,
                               action="create", from_status=None,
                               to_status=ticket.status.value, note=note,
                               data={"origin": ticket.origin.value,
                                     "clock": clock_record(ticket)})
            changes = [Change("created", ticket, (entry,))]
            self._record(conn, changes)
        self.listeners.notify(changes)
        return ticket, True

    def modify(self, ticket_id: str, mutate: Mutation, *,
               expected_version: int | None) -> Ticket:
        """Lock the ticket, check its version, ``mutate`` it and commit with its audit
        entries; all or nothing.

        ``mutate(ticket, load)`` changes the ticket in place and returns audit entries;
        ``load(other_id)`` locks another ticket that the mutation also changes (merge).
        Raises :class:`TicketNotFound`, :class:`VersionConflict`, or whatever ``mutate``
        raises (nothing is written then).
        """
        changes: builtins.list[Change] = []
        tickets = self._tickets
        with self.db.write() as conn:
            loaded: dict[str, tuple[Ticket, int, int]] = {}  # ticket, version, event_count
            held_before: dict[str, str] = {}  # ticket id -> its department when loaded
            new_ids: builtins.list[IdRow] = []

            def load(other_id: str) -> Ticket:
                if other_id not in loaded:
                    ticket, event_count = tickets.load_for_update(conn, other_id)
                    loaded[other_id] = (ticket, ticket.version, event_count)
                    held_before[other_id] = ticket.department
                return loaded[other_id][0]

            ticket = load(ticket_id)
            if expected_version is not None and ticket.version != expected_version:
                raise VersionConflict(ticket_id, expected=expected_version,
                                      current=ticket.version)
            entries = mutate(ticket, load)
            by_ticket: dict[str, builtins.list[AuditEntry]] = {}
            for entry in entries:
                by_ticket.setdefault(entry.ticket_id, []).append(entry)
            for other_id, (other, version, stored_events) in loaded.items():
                if other_id not in by_ticket:
                    continue
                other.version = version + 1
                # a merge's target gets the absorbed ticket's ids appended (copied: the
                # merged ticket keeps its own list)
                tickets.update_row(conn, other, expected_version=version,
                                   stored_events=stored_events, new_ids=new_ids)
                ticket_entries = by_ticket[other_id]
                moved_from = held_before[other_id]
                changes.append(Change(ticket_entries[0].action, other, tuple(ticket_entries),
                                      department_from=None if moved_from == other.department
                                      else moved_from))
                if any(e.action == "merge" for e in ticket_entries) and other.merged_into:
                    tickets.relink_incidents(conn, from_ticket=other_id,
                                             into=other.merged_into)
            self._event_ids.append(conn, new_ids)
            self._record(conn, changes)
        self.listeners.notify(changes)
        return ticket

    def _record(self, conn: Connection, changes: builtins.list[Change]) -> None:
        """What ``changes`` imply besides the ticket rows, in their transaction: audit
        entries, review counts, cards, webhook deliveries and the change log; numbers
        each change (``seq``) in place."""
        for change in changes:
            ticket = change.ticket
            for entry in change.entries:
                audit.insert(conn, (entry,))
                reviews.count(conn, ticket, entry)
                if entry.action == "escalate":
                    cards.record(conn, entry)
            if self.webhooks is not None:
                deliveries.write(conn, change, targets=self.webhooks,
                                 held_before=change.department_from,
                                 audit=[audit_public(e) for e in change.entries],
                                 time=sortable)
        # last: on PostgreSQL this takes the change-log lock, held until commit
        seqs = changelog.append(conn, changes, dialect=self.dialect,
                                key=self._changes_key, time=sortable)
        changes[:] = [dataclasses.replace(c, seq=n) for c, n in zip(changes, seqs,
                                                                    strict=True)]


class SqliteTicketStore(SqlTicketStore):
    """The embedded single-box store: a SQLite file (WAL), or ``":memory:"``.

    Args:
        path: the database file (its folder is created) or ``":memory:"``.
        webhooks: also queue changes for webhook delivery (see :class:`SqlTicketStore`).
    """

    def __init__(self, path: str | Path, *, webhooks: bool | DeliveryTargets = False) -> None:
        self.path = str(path)
        url = "sqlite://" if self.path == ":memory:" else f"sqlite:///{self.path}"
        super().__init__(url, webhooks=webhooks)


def open_store(url: str, *, schema: str | None = None,
               webhooks: bool | DeliveryTargets = False) -> SqlTicketStore:
    """A store for a URL from config (``ticketing.storage_url``) or a plain path."""
    if "://" not in url:
        return SqliteTicketStore(url, webhooks=webhooks)
    return SqlTicketStore(url, schema=schema, webhooks=webhooks)


TICKETS_URL_ENV = "GRIDWATCH_TICKETS_URL"


def configured_url(storage_url: str | None, *, default: str,
                   environ: dict[str, str] | None = None) -> str:
    """The store URL: ``$GRIDWATCH_TICKETS_URL`` (may carry a password), else
    ``ticketing.storage_url``, else ``default`` (the runtime's SQLite file)."""
    import os

    env = os.environ if environ is None else environ
    return env.get(TICKETS_URL_ENV) or storage_url or default


if TYPE_CHECKING:  # mypy checks that each store is a TicketStore
    from ticketing.batch import BatchingStore

    def _stores(memory: MemoryTicketStore, sql: SqlTicketStore,
                batching: BatchingStore) -> builtins.list[TicketStore]:
        return [memory, sql, batching]
