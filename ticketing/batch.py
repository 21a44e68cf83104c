"""Write-behind batching for the desk over a SQL store.

A live pipeline applies hundreds of detections a second, most of them to a few open
tickets. Reading and rewriting a ticket once per detection is what limits throughput;
:class:`BatchingStore` lets the desk work on an in-memory copy for one batch and writes
each touched ticket once, all in one transaction
(:meth:`~ticketing.store.SqlTicketStore.save_many`). The ticket's ``event_ids`` are not
rewritten: the store appends only the ids past those it holds (the version read, checked
on write, guarantees the stored ids are a prefix of the batch's copy).

Between batches it keeps the tickets it wrote (as written, with their version) and what
it learned about them: the incidents linked to each, and which ticket is the open one of
a (cell, kind). The next batch starts from those instead of reading them again. That is
safe because every write checks what it relied on: a kept ticket is saved only if the
store still has the version kept (an operator's action, a merge or another replica's
write changes it: :class:`~ticketing.store.VersionConflict`), and an open ticket taken
from what was kept must still be the one :meth:`~ticketing.store.SqlTicketStore.open_ticket_for`
gives (:class:`~ticketing.store.OpenTicketMoved`). Only what was seen to be true is kept,
never that a (cell, kind) has no open ticket. After a conflict or any other error nothing
of the batch is written and everything kept is dropped, so the next batch reads afresh.

>>> batching = BatchingStore(sql_store)
>>> desk = TicketDesk(policies=..., settings=..., grid=..., store=batching)
>>> with batching.batch():
...     for output in outputs:
...         desk.apply(output)
... # committed here; a VersionConflict (an API change meanwhile) rolls the batch back
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import operator
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from ticketing.models import Ticket
from ticketing.queries import ANY_TICKET, DEFAULT_SORT, Sort, TicketFilter
from ticketing.store import SqlTicketStore

# what is kept between batches is bounded by this many event ids and incident ids in all
# (the tickets written longest ago are dropped first)
KEEP_BUDGET = 250_000


@dataclasses.dataclass(slots=True)
class _Kept:
    """A ticket as this store last wrote it, and what is true of it at that version."""

    ticket: Ticket  # a copy of the one written: the next batch that needs it takes it
    version: int  # as written (the ticket itself changes once a batch has taken it)
    key: tuple[str, str]  # its (cell, kind)
    incidents: set[str]  # incidents linked to it
    open_for: bool  # it is the open ticket of its (cell, kind)
    size: int  # its ids, event and incident, counted against the budget


# every field of a ticket, in ``__init__``'s order
_FIELD_VALUES = operator.attrgetter(*(f.name for f in dataclasses.fields(Ticket)))


def _copy(ticket: Ticket) -> Ticket:
    """A copy that changes to the original do not reach (its lists and hot-spot dict
    are its own; the ids are immutable strings, so no deep copy). Positional, as
    ``dataclasses.replace`` by keyword cost four times as much (once per ticket written
    per batch)."""
    new = Ticket(*_FIELD_VALUES(ticket))
    new.event_ids = list(ticket.event_ids)
    new.incident_ids = list(ticket.incident_ids)
    new.source_ids = list(ticket.source_ids)
    new.snapshot_urls = list(ticket.snapshot_urls)
    if ticket.hotspot is not None:
        new.hotspot = copy.deepcopy(ticket.hotspot)
    return new


class BatchingStore:
    """The desk's view of a :class:`SqlTicketStore` with writes held until the batch
    ends. Outside :meth:`batch` it reads and writes through (and a write drops what is
    kept). Anything else (lists, audit, API operations) is passed to the underlying
    store.

    Args:
        inner: the store.
        keep_budget: how many event and incident ids of written tickets to keep between
            batches (0: keep nothing, read every batch's tickets afresh).
    """

    def __init__(self, inner: SqlTicketStore, *, keep_budget: int = KEEP_BUDGET) -> None:
        self.inner = inner
        self.keep_budget = keep_budget
        self._active = False
        self.forget()
        self._reset()

    def forget(self) -> None:
        """Drop everything kept between batches (the next batch reads from the store)."""
        self._kept: OrderedDict[str, _Kept] = OrderedDict()  # least recently written first
        self._kept_size = 0
        self._kept_incidents: dict[str, str] = {}  # incident id -> ticket id (see _Kept)
        self._kept_open: dict[tuple[str, str], str] = {}  # (cell, kind) -> ticket id

    def _reset(self) -> None:
        self._tickets: dict[str, Ticket] = {}
        self._open: dict[tuple[str, str], str] = {}
        self._incidents: dict[str, str] = {}
        self._dirty: dict[str, list[str]] = {}  # ticket id -> incident ids newly linked
        self._read_versions: dict[str, int] = {}  # as read from the store (0: new)
        self._suspended: dict[tuple[Any, ...], frozenset[str]] = {}
        # what the store answered this batch (facts to keep if the ticket is written)
        self._seen_open: dict[tuple[str, str], str] = {}
        self._seen_incidents: dict[str, str] = {}
        # open tickets taken from what was kept, not read: checked when written
        self._open_unread: dict[tuple[str, str], str] = {}
        # incidents the store had no ticket for when this batch began (prefetch_incidents)
        self._unlinked: set[str] = set()
        self._taken: set[str] = set()  # kept tickets this batch has (and may change)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextmanager
    def batch(self, *, also: Callable[[Connection], None] | None = None
              ) -> Iterator[None]:
        """Hold the desk's writes; commit them together when the block ends.

        ``also(conn)`` is written in the same transaction (even when no ticket changed):
        the stream stage's checkpoint or journal of this batch.

        Raises:
            VersionConflict: a ticket changed underneath (nothing of the batch written,
                nothing kept from before).
        """
        if self._active:
            raise RuntimeError("expected no batch in progress; batches do not nest")
        self._active = True
        self._reset()
        committed = False
        try:
            yield
            linked = None
            if self._dirty:
                linked = self.inner.save_many(
                    [(self._tickets[tid], links) for tid, links in self._dirty.items()],
                    read_versions=self._read_versions, open_tickets=self._open_unread,
                    also=also)
            elif also is not None:
                with self.inner.transaction() as conn:
                    also(conn)
            committed = True
        finally:
            self._active = False
            if committed:
                self._keep(linked)
            else:
                self.forget()
            self._reset()

    # -- between batches ------------------------------------------------------------------
    def _keep(self, linked: object) -> None:
        """After a commit: keep the tickets written, with what is known of them now."""
        for ticket_id in self._taken.difference(self._dirty):
            self._drop(ticket_id)  # taken but not written: the desk may have changed it
        if not self._dirty:
            return
        # a link another writer made first stays theirs; which one is not known, so none
        # of this batch's links is kept (the next batch reads them)
        links_hold = linked == sum(len(links) for links in self._dirty.values())
        incidents: dict[str, set[str]] = {}
        for incident_id, ticket_id in self._seen_incidents.items():
            incidents.setdefault(ticket_id, set()).add(incident_id)
        if links_hold:
            for ticket_id, links in self._dirty.items():
                incidents.setdefault(ticket_id, set()).update(links)
        for ticket_id in self._dirty:
            ticket = self._tickets[ticket_id]
            key = (ticket.cell_id, ticket.kind)
            read = self._read_versions.get(ticket_id, 0)
            known = incidents.get(ticket_id, set())
            # the store gave it for its (cell, kind), or the desk opened it there because
            # the store had no open ticket
            open_for = self._seen_open.get(key) == ticket_id or read == 0
            old = self._drop(ticket_id)
            if old is not None and old.version == read:  # written at the version kept
                known |= old.incidents
                open_for = open_for or old.open_for
            open_for = open_for and ticket.is_open
            # a copy: whoever holds the written ticket (the desk's caller, a change
            # listener) may change it without that reaching the next batch
            self._kept[ticket_id] = _Kept(_copy(ticket), ticket.version, key, known,
                                          open_for, 1 + len(ticket.event_ids) + len(known))
            self._kept_size += self._kept[ticket_id].size
            if open_for:
                self._kept_open[key] = ticket_id
            for incident_id in known:
                self._kept_incidents[incident_id] = ticket_id
        while self._kept_size > self.keep_budget and self._kept:
            self._drop(next(iter(self._kept)))  # the least recently written

    def _drop(self, ticket_id: str) -> _Kept | None:
        entry = self._kept.pop(ticket_id, None)
        if entry is not None:
            self._kept_size -= entry.size
            for incident_id in entry.incidents:
                if self._kept_incidents.get(incident_id) == ticket_id:
                    del self._kept_incidents[incident_id]
            if self._kept_open.get(entry.key) == ticket_id:
                del self._kept_open[entry.key]
        return entry

    def _from_kept(self, ticket_id: str) -> Ticket:
        """A kept ticket, for this batch (which then changes it in place)."""
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            ticket = self._kept[ticket_id].ticket
            self._taken.add(ticket_id)
        return ticket

    def _usable(self, ticket_id: str) -> _Kept | None:
        """The kept entry, unless this batch read the ticket at another version."""
        entry = self._kept.get(ticket_id)
        if entry is None:
            return None
        read = self._read_versions.get(ticket_id)
        if read is not None and read != entry.version:
            self._drop(ticket_id)  # the store has moved on; what was kept is stale
            return None
        return entry

    # -- the store's answers: kept, else read -------------------------------------------
    def _stored(self, ticket_id: str) -> Ticket | None:
        if self._usable(ticket_id) is not None:
            return self._from_kept(ticket_id)
        return self.inner.get(ticket_id)

    def _stored_open(self, cell_id: str, kind: str) -> Ticket | None:
        key = (cell_id, kind)
        ticket_id = self._kept_open.get(key)
        entry = None if ticket_id is None else self._usable(ticket_id)
        if ticket_id is not None and entry is not None and entry.open_for:
            self._open_unread[key] = ticket_id
            return self._from_kept(ticket_id)
        ticket = self.inner.open_ticket_for(cell_id, kind)
        if ticket is not None:
            self._seen_open[key] = ticket.ticket_id
        return ticket

    def prefetch_incidents(self, incident_ids: builtins.list[str]) -> None:
        """In a batch: ask the store once which of these incidents (about to be looked
        up, none of them kept) have a ticket; :meth:`ticket_for_incident` then answers
        ``None`` for the others without a read each. (The answer is as of now, as a read
        per incident would be a moment later; a link another writer makes meanwhile is
        found when the batch writes, as before.)"""
        if not self._active:
            raise RuntimeError("expected a batch in progress (prefetch_incidents)")
        kept = self._kept_incidents
        ask = [i for i in incident_ids if i not in kept and i not in self._incidents]
        if ask:
            self._unlinked.update(set(ask) - self.inner.linked_incidents(ask))

    def _stored_for_incident(self, incident_id: str) -> Ticket | None:
        ticket_id = self._kept_incidents.get(incident_id)
        entry = None if ticket_id is None else self._usable(ticket_id)
        if ticket_id is not None and entry is not None and incident_id in entry.incidents:
            return self._from_kept(ticket_id)
        if incident_id in self._unlinked:
            return None
        ticket = self.inner.ticket_for_incident(incident_id)
        if ticket is not None:
            self._seen_incidents[incident_id] = ticket.ticket_id
        return ticket

    def _remember(self, ticket: Ticket | None) -> Ticket | None:
        if ticket is None:
            return None
        cached = self._tickets.get(ticket.ticket_id)
        if cached is not None:
            return cached  # the batch's own, newer copy
        kept = self._kept.get(ticket.ticket_id)
        if kept is not None and kept.version != ticket.version:
            self._drop(ticket.ticket_id)  # read afresh at another version: kept is stale
        self._tickets[ticket.ticket_id] = ticket
        self._read_versions[ticket.ticket_id] = ticket.version
        if ticket.is_open:
            self._open[(ticket.cell_id, ticket.kind)] = ticket.ticket_id
        return ticket

    # -- the desk's reads ---------------------------------------------------------------
    def get(self, ticket_id: str) -> Ticket | None:
        if not self._active:
            return self.inner.get(ticket_id)
        return self._tickets.get(ticket_id) or self._remember(self._stored(ticket_id))

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        if not self._active:
            return self.inner.open_ticket_for(cell_id, kind)
        ticket_id = self._open.get((cell_id, kind))
        if ticket_id is not None and self._tickets[ticket_id].is_open:
            return self._tickets[ticket_id]
        return self._remember(self._stored_open(cell_id, kind))

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        if not self._active:
            return self.inner.ticket_for_incident(incident_id)
        ticket_id = self._incidents.get(incident_id)
        if ticket_id is not None:
            return self._tickets[ticket_id]
        ticket = self._remember(self._stored_for_incident(incident_id))
        if ticket is not None:
            self._incidents[incident_id] = ticket.ticket_id
        return ticket

    def suspended_sources(self, **criteria: Any) -> frozenset[str]:
        """Sources too often dismissed; read once per batch."""
        if not self._active:
            return self.inner.suspended_sources(**criteria)  # type: ignore[no-any-return]
        key = tuple(criteria.items())  # the desk always asks alike
        suspended = self._suspended.get(key)
        if suspended is None:
            suspended = self._suspended[key] = self.inner.suspended_sources(**criteria)
        return suspended

    # lists read what is committed (the desk asks for closed tickets, which no batch holds)
    def list(self, flt: TicketFilter = ANY_TICKET, *, limit: int = 100, offset: int = 0,
             sort: Sort = DEFAULT_SORT) -> builtins.list[Ticket]:
        return self.inner.list(flt, limit=limit, offset=offset, sort=sort)

    def count(self, flt: TicketFilter = ANY_TICKET) -> int:
        return self.inner.count(flt)

    def all(self) -> Iterator[Ticket]:
        return self.inner.all()

    # -- the desk's write -----------------------------------------------------------------
    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        if not self._active:
            self.forget()  # a write outside a batch: what was kept may be stale
            self.inner.save(ticket, incident_id=incident_id)
            return
        self._tickets[ticket.ticket_id] = ticket
        key = (ticket.cell_id, ticket.kind)
        if ticket.is_open:
            self._open[key] = ticket.ticket_id
        elif self._open.get(key) == ticket.ticket_id:
            del self._open[key]
        links = self._dirty.setdefault(ticket.ticket_id, [])
        if incident_id is not None:
            self._incidents[incident_id] = ticket.ticket_id
            links.append(incident_id)
