"""The desk: incident events and hot-spot findings in, tickets upserted out.

Pure logic over a :class:`~ticketing.store.TicketStore`; reads no clock (every time it
writes comes from the events), so replay is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from geo.grid import Cell, Grid
from stream.policy import KindPolicy, PolicyBook
from stream.types import HotspotFinding, IncidentEvent
from ticketing.config import TicketingSettings
from ticketing.models import Review, Ticket, TicketStatus, ticket_id_for
from ticketing.routing import due_at, route_for
from ticketing.store import TicketStore, VersionConflict

MAX_SNAPSHOTS = 10
MAX_RETRIES = 3


@dataclass(slots=True)
class DeskStats:
    opened: int = 0
    updated: int = 0


class TicketDesk:
    """Opens a ticket per new incident chain, or joins the open ticket of the cell and
    kind; the same for hot-spot findings."""

    def __init__(self, *, policies: PolicyBook, settings: TicketingSettings, grid: Grid,
                 store: TicketStore) -> None:
        self.policies = policies
        self.settings = settings
        self.grid = grid
        self.store = store
        self.stats = DeskStats()

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
        lookup = getattr(self.store, "suspended_sources", None)
        if lookup is None or not source_ids:
            return False
        review = self.settings.review
        suspended: frozenset[str] = lookup(
            max_false_positive_rate=review.max_false_positive_rate,
            min_reviewed=review.min_reviewed)
        return bool(suspended) and any(s in suspended for s in source_ids)

    # -- review ---------------------------------------------------------------------
    def _review_for(self, kind: str, policy: KindPolicy, confidence: float) -> Review:
        if not self.policies.is_known(kind) or not policy.auto_dispatch:
            return Review.PENDING_REVIEW
        if confidence < policy.review_below_confidence:
            return Review.PENDING_REVIEW
        return Review.AUTO_DISPATCHED

    def _maybe_auto_dispatch(self, ticket: Ticket, policy: KindPolicy) -> None:
        # a low-confidence start that is later confirmed by a confident detection goes
        # out without waiting for an operator (nobody has touched it yet: version 1 path)
        if ticket.status is TicketStatus.PENDING_REVIEW and \
                ticket.review is Review.PENDING_REVIEW and \
                self._review_for(ticket.kind, policy, ticket.max_confidence) \
                is Review.AUTO_DISPATCHED:
            ticket.review = Review.AUTO_DISPATCHED
            ticket.status = TicketStatus.DISPATCHED

    def _new_ticket(self, *, kind: str, cell: Cell, seed: str, policy: KindPolicy,
                    opened_at, lon: float, lat: float, confidence: float) -> Ticket:  # type: ignore[no-untyped-def]
        route = route_for(kind, cell, policy, self.settings)
        review = self._review_for(kind, policy, confidence)
        status = (TicketStatus.DISPATCHED if review is Review.AUTO_DISPATCHED
                  else TicketStatus.PENDING_REVIEW)
        return Ticket(
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
            due_at=due_at(opened_at, policy.priority, policy, self.settings),
            updated_at=opened_at,
            lon=lon,
            lat=lat,
            max_confidence=confidence,
            label=policy.label,
        )

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
        ticket.event_ids.extend(event.new_event_ids)
        ticket.detection_count = ticket.detection_count + 1
        if event.confidence > ticket.max_confidence:
            ticket.max_confidence = event.confidence
        if incident.last_at > ticket.updated_at:
            ticket.updated_at = incident.last_at
        if incident.opened_at < ticket.opened_at:
            # a late delivery moved the start earlier; the deadline follows the start
            ticket.opened_at = incident.opened_at
            ticket.due_at = due_at(ticket.opened_at, ticket.priority, policy, self.settings)
        _add_new(ticket.source_ids, incident.source_ids)
        for url in incident.snapshot_urls:
            if url not in ticket.snapshot_urls and len(ticket.snapshot_urls) < MAX_SNAPSHOTS:
                ticket.snapshot_urls.append(url)
        if self._suspended(ticket.source_ids):
            # a source with a high false-positive rate: an operator looks first
            if is_new and ticket.review is Review.AUTO_DISPATCHED:
                ticket.review = Review.PENDING_REVIEW
                ticket.status = TicketStatus.PENDING_REVIEW
        else:
            self._maybe_auto_dispatch(ticket, policy)
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
                from ticketing.store import TicketFilter

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


def _add_new(values: list[str], more: list[str]) -> None:
    """Append the items of ``more`` not in ``values`` yet, in order (as a ``not in``
    scan per item would, but an incident's every source checked on each of its
    detections made that scan quadratic)."""
    if len(more) == 1:
        if more[0] not in values:
            values.append(more[0])
        return
    known = set(values)
    if known.issuperset(more):  # the usual case: nothing new
        return
    for value in more:
        if value not in known:
            known.add(value)
            values.append(value)
