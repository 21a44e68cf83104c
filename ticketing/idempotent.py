"""A desk that is safe for re-delivered stream outputs (at-least-once runtimes).

The scale-out runtime replays a partition after a restart or rebalance through a fresh
stream processor; its outputs may repeat what the store already holds. The embedded
service uses the same desk for what its seeded event-id filter no longer knows (a
detection re-sent after the dedup horizon, into a ticket an operator has closed): one
mechanism for both, so a re-sent detection is absorbed, never a version conflict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from stream.processor import StreamOutput
from stream.types import HotspotFinding, IncidentEvent
from ticketing.desk import TicketDesk
from ticketing.models import Ticket, ticket_id_for
from ticketing.store import TicketStore


class IdempotentDesk:
    """:class:`TicketDesk` made safe for re-delivered stream outputs.

    A partition replayed after a restart or rebalance runs through a fresh
    :class:`StreamProcessor`, which re-opens incidents the store already has tickets for.
    Before the desk sees an output, event ids a matching ticket already holds are dropped;
    an output with nothing new is skipped. Without this, a re-opened incident would append
    its event ids to the open ticket a second time, and one whose ticket an operator has
    closed would try to re-create it under the same deterministic id.
    """

    def __init__(self, desk: TicketDesk, *, only_reopened: bool = False,
                 reopened: set[str] | None = None,
                 held_anywhere: Callable[[list[str]], set[str]] | None = None) -> None:
        self.desk = desk
        # several centre replicas on one store (``gridwatch serve --mqtt-share-group``):
        # another replica may have committed a re-sent detection into a ticket this one
        # has never seen (its own incident, or an open ticket its cache does not know), so
        # every new id is also checked against the whole store
        self.held_anywhere = held_anywhere
        self.store: TicketStore = desk.store
        self.skipped = 0
        # only_reopened: a runtime whose event-id filter already drops the repeats it
        # knows (the embedded service, seeded at start-up) checks each new incident, and
        # the growth of only those incidents found re-opened (their ids already held);
        # the worker, without such a filter, checks every output
        self.only_reopened = only_reopened
        # the incidents found re-opened (shared with another view of the same store)
        self.reopened: set[str] = set() if reopened is None else reopened

    def apply(self, output: StreamOutput) -> Ticket | None:
        """Apply one output; ``None`` when it was a redelivery with nothing new."""
        fresh: StreamOutput | None = (self._fresh_incident_event(output)
                                      if isinstance(output, IncidentEvent)
                                      else self._fresh_finding(output))
        if fresh is None:
            self.skipped += 1
            return None
        return self.desk.apply(fresh)

    def _fresh_incident_event(self, event: IncidentEvent) -> IncidentEvent | None:
        incident = event.incident
        if self.held_anywhere is not None:
            elsewhere = self.held_anywhere(list(event.new_event_ids))
            if elsewhere:
                if elsewhere.issuperset(event.new_event_ids):
                    return None
                event = replace(event, new_event_ids=tuple(
                    e for e in event.new_event_ids if e not in elsewhere))
        if self.only_reopened and not event.opened and \
                incident.incident_id not in self.reopened:
            return event  # an incident opened afresh in this run: nothing it adds is held
        linked = self.store.ticket_for_incident(incident.incident_id)
        # the desk's kept sets of the tickets' ids: no set of a long ticket's thousands
        # of ids built anew for each new incident
        items_of = self.desk.known.items_of
        held = [items_of(ticket.event_ids) for ticket in (
            linked, self.store.open_ticket_for(incident.cell_id, incident.kind))
            if ticket is not None]
        new_ids = tuple(e for e in event.new_event_ids
                        if not any(e in ids for ids in held))
        if self.only_reopened and event.opened and \
                (linked is not None or new_ids != event.new_event_ids):
            self.reopened.add(incident.incident_id)
        if not new_ids:
            return None
        if new_ids != event.new_event_ids:
            event = replace(event, new_event_ids=new_ids)
        if event.opened and linked is not None:
            # the incident re-opened after a restart: join the ticket it already has
            event = replace(event, opened=False)
        return event

    def _fresh_finding(self, finding: HotspotFinding) -> HotspotFinding | None:
        own_id = ticket_id_for(finding.kind, finding.cell_id,
                               f"hotspot:{finding.window_start.isoformat()}")
        own = self.store.get(own_id)
        if own is not None and not own.is_open:
            return None  # this window's ticket exists and was closed: already handled
        current = self.store.open_ticket_for(finding.cell_id, finding.kind)
        if (current is not None and current.updated_at >= finding.window_end
                and set(finding.event_ids) <= set(current.event_ids)):
            return None  # the same window again
        return finding
