"""Write-behind batching for the desk over a SQL store.

A live pipeline applies hundreds of detections a second, most of them to a few open
tickets. Reading and rewriting a ticket once per detection is what limits throughput;
:class:`BatchingStore` lets the desk work on an in-memory copy for one batch and writes
each touched ticket once, all in one transaction
(:meth:`~ticketing.store.SqlTicketStore.save_many`). The ticket's ``event_ids`` are not
rewritten: the store appends only the ids past those it holds (the version read, checked
on write, guarantees the stored ids are a prefix of the batch's copy).

>>> batching = BatchingStore(sql_store)
>>> desk = TicketDesk(policies=..., settings=..., grid=..., store=batching)
>>> with batching.batch():
...     for output in outputs:
...         desk.apply(output)
... # committed here; a VersionConflict (an API change meanwhile) rolls the batch back
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ticketing.models import Ticket
from ticketing.store import SqlTicketStore


class BatchingStore:
    """The desk's view of a :class:`SqlTicketStore` with writes held until the batch
    ends. Outside :meth:`batch` it writes through. Anything else (lists, audit, API
    operations) is passed to the underlying store."""

    def __init__(self, inner: SqlTicketStore) -> None:
        self.inner = inner
        self._active = False
        self._reset()

    def _reset(self) -> None:
        self._tickets: dict[str, Ticket] = {}
        self._open: dict[tuple[str, str], str] = {}
        self._incidents: dict[str, str] = {}
        self._dirty: dict[str, list[str]] = {}  # ticket id -> incident ids newly linked
        self._read_versions: dict[str, int] = {}  # as read from the store (0: new)
        self._suspended: dict[tuple[Any, ...], frozenset[str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the desk's writes; commit them together when the block ends.

        Raises:
            VersionConflict: a ticket changed underneath (nothing of the batch written).
        """
        self._active = True
        self._reset()
        try:
            yield
            if self._dirty:
                self.inner.save_many([(self._tickets[tid], links)
                                      for tid, links in self._dirty.items()],
                                     read_versions=self._read_versions)
        finally:
            self._active = False
            self._reset()

    def _remember(self, ticket: Ticket | None) -> Ticket | None:
        if ticket is None:
            return None
        cached = self._tickets.get(ticket.ticket_id)
        if cached is not None:
            return cached  # the batch's own, newer copy
        self._tickets[ticket.ticket_id] = ticket
        self._read_versions[ticket.ticket_id] = ticket.version
        if ticket.is_open:
            self._open[(ticket.cell_id, ticket.kind)] = ticket.ticket_id
        return ticket

    # -- the desk's reads ---------------------------------------------------------------
    def get(self, ticket_id: str) -> Ticket | None:
        if not self._active:
            return self.inner.get(ticket_id)
        return self._tickets.get(ticket_id) or self._remember(self.inner.get(ticket_id))

    def open_ticket_for(self, cell_id: str, kind: str) -> Ticket | None:
        if not self._active:
            return self.inner.open_ticket_for(cell_id, kind)
        ticket_id = self._open.get((cell_id, kind))
        if ticket_id is not None and self._tickets[ticket_id].is_open:
            return self._tickets[ticket_id]
        return self._remember(self.inner.open_ticket_for(cell_id, kind))

    def ticket_for_incident(self, incident_id: str) -> Ticket | None:
        if not self._active:
            return self.inner.ticket_for_incident(incident_id)
        ticket_id = self._incidents.get(incident_id)
        if ticket_id is not None:
            return self._tickets[ticket_id]
        ticket = self._remember(self.inner.ticket_for_incident(incident_id))
        if ticket is not None:
            self._incidents[incident_id] = ticket.ticket_id
        return ticket

    def suspended_sources(self, **criteria: Any) -> frozenset[str]:
        """Sources too often dismissed; read once per batch."""
        if not self._active:
            return self.inner.suspended_sources(**criteria)  # type: ignore[no-any-return]
        key = tuple(sorted(criteria.items()))
        if key not in self._suspended:
            self._suspended[key] = self.inner.suspended_sources(**criteria)
        return self._suspended[key]

    # -- the desk's write -----------------------------------------------------------------
    def save(self, ticket: Ticket, *, incident_id: str | None = None) -> None:
        if not self._active:
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
