"""The desk: incident events and hot-spot findings in, tickets upserted out.

Pure logic over a :class:`~ticketing.store.TicketStore`; reads no clock of its own. Event
times come from the stream outputs; when the centre *received* the work (where a unit's
deadline clock starts) comes from the ``received`` clock the runtime passes in: the live
services pass the wall clock, so a ticket opened from an old observation (an edge box's
backlog after an outage) is not overdue the moment it is created; replay passes none,
and the clock starts at event time, so the same input gives the same tickets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from geo.grid import Cell, Grid
from stream.policy import KindPolicy, PolicyBook
from stream.types import HotspotFinding, IncidentEvent
from ticketing.config import TicketingSettings
from ticketing.models import (
    Origin,
    Review,
    ReviewReason,
    Ticket,
    TicketStatus,
    ticket_id_for,
)
from ticketing.queries import TicketFilter
from ticketing.routing import Rules
from ticketing.store import TicketStore, VersionConflict

MAX_SNAPSHOTS = 10
MAX_RETRIES = 3


@dataclass(slots=True)
class DeskStats:
    opened: int = 0
    updated: int = 0


class TicketDesk:
    """Opens a ticket per new incident chain, or joins the open ticket of the cell and
    kind; the same for hot-spot findings.

    ``received`` is the runtime's clock for when the centre receives a stream output
    (the live services: the wall clock); None (replay) uses the output's event time.
    Deadline clocks start at the later of the two. Raises ``ValueError`` if a kind or
    routing override names a department that is not in ``settings.departments``."""

    def __init__(self, *, policies: PolicyBook, settings: TicketingSettings, grid: Grid,
                 store: TicketStore, received: Callable[[], datetime] | None = None) -> None:
        self.policies = policies
        self.settings = settings
        self.rules = Rules(policies, settings)
        self.grid = grid
        self.store = store
        self.received = received
        self.stats = DeskStats()
        # the item sets of the ticket lists it appends to (also the idempotent desk's)
        self.known = KnownItems()

    def _received_at(self, event_time: datetime) -> datetime:
        if self.received is None:
            return event_time
        return max(event_time, self.received())

    def apply(self, output: IncidentEvent | HotspotFinding) -> Ticket:
        """Open or update the ticket for one stream output.

        With a shared SQL store, an API change between the desk's read and write makes
        the write stale (:class:`~ticketing.store.VersionConflict`); the desk then
        re-reads and re-applies, up to ``MAX_RETRIES`` times.
        """
        for attempt in range(MAX_RETRIES + 1):
            # the counters as they were, to undo an attempt (not ``dataclasses.replace``:
            # about 1 µs per output)
            stats = self.stats
            opened, updated = stats.opened, stats.updated
            try:
                if isinstance(output, IncidentEvent):
                    return self.on_incident(output)
                return self.on_hotspot(output)
            except VersionConflict:
                self.stats = DeskStats(opened, updated)
                if attempt == MAX_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _suspended(self, source_ids: list[str]) -> bool:
        """Whether any source has too many dismissed tickets to auto-dispatch (stores
        without review records, like the replay's, suspend nothing)."""
        if not source_ids:
            return False
        review = self.settings.review
        suspended = self.store.suspended_sources(
            max_false_positive_rate=review.max_false_positive_rate,
            min_reviewed=review.min_reviewed)
        return bool(suspended) and any(s in suspended for s in source_ids)

    # -- review ---------------------------------------------------------------------
    def _review_reason(self, kind: str, policy: KindPolicy,
                       confidence: float) -> ReviewReason | None:
        """Why a ticket of ``kind`` at ``confidence`` needs an operator (None: it does
        not, it is dispatched)."""
        return review_reason(self.policies, kind, policy, confidence)

    def _maybe_auto_dispatch(self, ticket: Ticket, policy: KindPolicy,
                             at: datetime) -> None:
        # a low-confidence start that is later confirmed by a confident detection goes
        # out without waiting for an operator (nobody has touched it yet: version 1 path);
        # the unit's clock starts now, when it receives the work
        if ticket.status is TicketStatus.PENDING_REVIEW and \
                ticket.review is Review.PENDING_REVIEW and \
                ticket.review_reason is not ReviewReason.RECALLED and \
                self._review_reason(ticket.kind, policy, ticket.max_confidence) is None:
            ticket.review = Review.AUTO_DISPATCHED
            ticket.status = TicketStatus.DISPATCHED
            self.rules.start_clock(ticket, max(self._received_at(at), ticket.clock_start))

    def _new_ticket(self, *, kind: str, cell: Cell, seed: str, policy: KindPolicy,
                    opened_at: datetime, lon: float, lat: float,
                    confidence: float) -> Ticket:
        return new_ticket(rules=self.rules, kind=kind, cell=cell, seed=seed,
                          opened_at=opened_at, received_at=self._received_at(opened_at),
                          lon=lon, lat=lat, confidence=confidence, policy=policy)

    def _clock(self, ticket: Ticket, start: datetime) -> None:
        start_first_clock(self.rules, ticket, start)

    # -- incidents ------------------------------------------------------------------
    def on_incident(self, event: IncidentEvent) -> Ticket:
        incident = event.incident
        policy = self.policies.for_kind(incident.kind)
        # a just-opened incident has no ticket yet (re-delivered detections are dropped
        # as duplicates before the stream), so only a growing one is looked up
        ticket = (None if event.opened
                  else self.store.ticket_for_incident(incident.incident_id))
        link: str | None = None
        is_new = False
        if ticket is None:
            ticket = self.store.open_ticket_for(incident.cell_id, incident.kind)
            link = incident.incident_id
            if ticket is None:
                cell = self.grid[incident.cell_id]
                ticket = self._new_ticket(
                    kind=incident.kind, cell=cell, seed=incident.incident_id, policy=policy,
                    opened_at=incident.opened_at, lon=incident.lon, lat=incident.lat,
                    confidence=event.confidence)
                is_new = True
                self.stats.opened += 1
            else:
                self.stats.updated += 1
                ticket.version += 1
            ticket.incident_count += 1
            ticket.incident_ids.append(incident.incident_id)
        else:
            self.stats.updated += 1
            ticket.version += 1
        # never an id the ticket holds: another centre replica may have committed the same
        # re-sent detection first (a duplicate would make the store's id count overrun)
        self.known.add_new(ticket.event_ids, event.new_event_ids)
        ticket.detection_count = ticket.detection_count + event.detections
        extra = event.detections - 1
        if extra:  # merged joins: each after the first is one more update, as one by one
            self.stats.updated += extra
            ticket.version += extra
        if event.confidence > ticket.max_confidence:
            ticket.max_confidence = event.confidence
        if incident.last_at > ticket.updated_at:
            ticket.updated_at = incident.last_at
        if incident.opened_at < ticket.opened_at:
            # a late delivery moved the start earlier; on event time (replay) the first
            # clock started at the start and follows it; a clock started on receipt
            # (live) or by an operator stays
            if self.received is None and ticket.clock_seq == 1 and \
                    ticket.clock_start == ticket.opened_at:
                ticket.received_at = incident.opened_at
                self._clock(ticket, incident.opened_at)
            ticket.opened_at = incident.opened_at
        self.known.add_new(ticket.source_ids, incident.source_ids)
        for url in incident.snapshot_urls:
            if url not in ticket.snapshot_urls and len(ticket.snapshot_urls) < MAX_SNAPSHOTS:
                ticket.snapshot_urls.append(url)
        if self._suspended(ticket.source_ids):
            # a source with a high false-positive rate: an operator looks first
            if is_new and ticket.review is Review.AUTO_DISPATCHED:
                ticket.review = Review.PENDING_REVIEW
                ticket.status = TicketStatus.PENDING_REVIEW
                ticket.review_reason = ReviewReason.SOURCE_SUSPENDED
                self._clock(ticket, ticket.clock_start)
        else:
            self._maybe_auto_dispatch(ticket, policy, incident.last_at)
        self.store.save(ticket, incident_id=link)
        return ticket

    # -- hot spots ------------------------------------------------------------------
    def on_hotspot(self, finding: HotspotFinding) -> Ticket:
        """Open a ticket for a new hot spot, or update the open one of its centre cell and
        kind. After a ticket was closed, dismissed or resolved, findings within
        ``finding.realert_cooldown_s`` of its last update do not open a new one (the
        closed ticket is returned unchanged)."""
        policy = self.policies.for_kind(finding.kind)
        ticket = self.store.open_ticket_for(finding.cell_id, finding.kind)
        if ticket is None:
            if finding.realert_cooldown_s > 0:
                recent = [t for t in self.store.list(
                              TicketFilter(cell_id=finding.cell_id, kind=finding.kind),
                              limit=1_000_000)
                          if t.hotspot is not None and not t.is_open]
                if recent:
                    last = max(recent, key=lambda t: (t.updated_at, t.ticket_id))
                    quiet_s = (finding.window_end - last.updated_at).total_seconds()
                    if quiet_s < finding.realert_cooldown_s:
                        return last
            cell = self.grid[finding.cell_id]
            ticket = self._new_ticket(
                kind=finding.kind, cell=cell,
                seed=f"hotspot:{finding.window_start.isoformat()}", policy=policy,
                opened_at=finding.window_end, lon=finding.lon, lat=finding.lat,
                confidence=1.0)
            self.stats.opened += 1
        else:
            ticket.version += 1
            self.stats.updated += 1
        ticket.incident_count += 1
        known = set(ticket.event_ids)
        ticket.event_ids.extend(e for e in finding.event_ids if e not in known)
        ticket.detection_count = len(ticket.event_ids)
        if finding.window_end > ticket.updated_at:
            ticket.updated_at = finding.window_end
        ticket.hotspot = finding.as_ticket_hotspot()
        for source, _ in finding.top_sources:
            if source not in ticket.source_ids:
                ticket.source_ids.append(source)
        for url in finding.snapshot_urls:
            if url not in ticket.snapshot_urls and len(ticket.snapshot_urls) < MAX_SNAPSHOTS:
                ticket.snapshot_urls.append(url)
        self.store.save(ticket)
        return ticket


def new_ticket(*, rules: Rules, kind: str, cell: Cell, seed: str, opened_at: datetime,
               received_at: datetime, lon: float, lat: float, confidence: float,
               policy: KindPolicy | None = None, origin: Origin = Origin.DETECTION,
               source_suspended: bool = False) -> Ticket:
    """A new ticket, routed and on its first clock: the one way a ticket is made, by the
    desk (a detection's incident or a hot spot) and by :func:`ticketing.service.create_report`
    (an API or Open311 report).

    The kind's route names the level, unit and department; it goes to operator review
    when :func:`review_reason` says so, or (``source_suspended``) a source of it is
    dismissed too often, else it is dispatched. Its clock (review's or the unit's) starts
    at ``received_at``, when the centre received the work, which is never before
    ``opened_at`` (when it was seen); the caller fills in what it absorbed (event ids,
    incidents, sources).

    ``seed`` makes the id (:func:`~ticketing.models.ticket_id_for`): the same seed, the
    same ticket.
    """
    policy = rules.policies.for_kind(kind) if policy is None else policy
    route = rules.route(kind, cell)
    reason = review_reason(rules.policies, kind, policy, confidence)
    if reason is None and source_suspended:
        reason = ReviewReason.SOURCE_SUSPENDED
    review = Review.PENDING_REVIEW if reason is not None else Review.AUTO_DISPATCHED
    status = (TicketStatus.DISPATCHED if review is Review.AUTO_DISPATCHED
              else TicketStatus.PENDING_REVIEW)
    ticket = Ticket(
        ticket_id=ticket_id_for(kind, cell.cell_id, seed),
        kind=kind,
        cell_id=cell.cell_id,
        district=cell.district,
        town=cell.town,
        village=cell.village,
        level=route.level.value,
        unit=route.unit,
        department=route.department,
        status=status,
        review=review,
        priority=policy.priority,
        opened_at=opened_at,
        due_at=opened_at,  # set by start_first_clock below
        updated_at=opened_at,
        lon=lon,
        lat=lat,
        max_confidence=confidence,
        label=policy.label,
        origin=origin,
        received_at=received_at,
        review_reason=reason,
    )
    start_first_clock(rules, ticket, received_at)
    return ticket


def start_first_clock(rules: Rules, ticket: Ticket, start: datetime) -> None:
    """The first clock of a ticket just made: review's if it waits for review, else the
    unit's (and it is dispatched at ``start``)."""
    ticket.clock_started_at = start
    if ticket.status is TicketStatus.PENDING_REVIEW:
        ticket.dispatched_at = None
        ticket.due_at = rules.review_due_at(start)
    else:
        ticket.dispatched_at = start
        ticket.due_at = rules.unit_due_at(ticket, start)


def review_reason(policies: PolicyBook, kind: str, policy: KindPolicy,
                  confidence: float) -> ReviewReason | None:
    """Why a new ticket goes to operator review instead of its unit, or None (the desk and
    API / Open311 reports share it; a suspended source is checked by the caller)."""
    if not policies.is_known(kind):
        return ReviewReason.UNKNOWN_KIND
    if not policy.auto_dispatch:
        return ReviewReason.AUTO_DISPATCH_OFF
    if confidence < policy.review_below_confidence:
        return ReviewReason.LOW_CONFIDENCE
    return None


class KnownItems:
    """The set of a ticket list's items (``event_ids``, ``source_ids``), kept while the
    desk appends to that same list, for :meth:`add_new`.

    A ``not in`` scan of a long-open ticket's thousands of event ids on each detection,
    or a set built anew from an incident's 50 sources on each, was most of the desk's
    time. A set is trusted only for the very list object it was built from and only
    while the two have the same length (the desk only appends through ``add_new``;
    a batching store's fresh copy of a ticket, or a list changed elsewhere, gets a new
    set). At most ``max_items`` items are held in all (then everything is forgotten at
    once); a runtime whose tickets are copied per batch calls :meth:`forget` after each
    (the sets of the old copies would only hold them in memory).
    """

    def __init__(self, max_items: int = 250_000) -> None:
        self.max_items = max_items
        # id(list) -> (the list itself, so the id is not reused while kept; its items)
        self._sets: dict[int, tuple[list[str], set[str]]] = {}
        self._items = 0  # at least the items of the sets held (they grow by add_new)

    def forget(self) -> None:
        """Drop every set (the lists they were built from are not used again)."""
        self._sets.clear()
        self._items = 0

    def items_of(self, values: list[str]) -> set[str]:
        """The items of ``values`` as a set (kept for the next call while ``values``
        does not change but through :meth:`add_new`; do not change it)."""
        entry = self._sets.get(id(values))
        if entry is not None and entry[0] is values and len(entry[1]) == len(values):
            return entry[1]
        known = set(values)
        if len(known) == len(values):  # with repeats no set can follow the list
            if self._items + len(known) > self.max_items:
                self.forget()
            self._sets[id(values)] = (values, known)
            self._items += len(known)
        return known

    def add_new(self, values: list[str], more: Sequence[str]) -> None:
        """Append the items of ``more`` not in ``values`` yet, in order (as a ``not in``
        scan per item would)."""
        known = self.items_of(values)
        if len(more) == 1:
            value = more[0]
            if value not in known:
                known.add(value)
                values.append(value)
            return
        if known.issuperset(more):  # the usual case: nothing new
            return
        for value in more:
            if value not in known:
                known.add(value)
                values.append(value)

