"""A desk that is safe for re-delivered stream outputs (at-least-once runtimes).

The scale-out runtime replays a partition after a restart or rebalance through a fresh
stream processor; its outputs may repeat what the store already holds. The embedded
service uses the same desk for what its seeded event-id filter no longer knows (a
detection re-sent after the dedup horizon, into a ticket an operator has closed): one
mechanism for both, so a re-sent detection is absorbed, never a version conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from stream.processor import StreamOutput
from stream.types import HotspotFinding, Incident, IncidentEvent
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
        # the last merge_joins' merged events: id -> (the event, the joins it stands for)
        self._parts: dict[int, tuple[IncidentEvent, list[IncidentEvent]]] = {}

    def apply(self, output: StreamOutput) -> Ticket | None:
        """Apply one output; ``None`` when it was a redelivery with nothing new."""
        if self._parts and isinstance(output, IncidentEvent) and \
                output.incident.incident_id in self.reopened:
            merged = self._parts.get(id(output))
            if merged is not None and merged[0] is output:
                # its incident was found re-opened when this batch applied its
                # opening: each join is checked against the store, one by one
                ticket = None
                for join in merged[1]:
                    ticket = self.apply(join) or ticket
                return ticket
        fresh: StreamOutput | None = (self._fresh_incident_event(output)
                                      if isinstance(output, IncidentEvent)
                                      else self._fresh_finding(output))
        if fresh is None:
            self.skipped += 1
            return None
        return self.desk.apply(fresh)

    def merge_joins(self, outputs: Sequence[StreamOutput]) -> list[StreamOutput]:
        """``outputs`` with the joins of one incident merged into one event, where that
        gives the same tickets as applying them one by one: a batch's detections of one
        busy incident then cost the desk one application, not one each.

        The desk applies an event from the incident's state as it is when applied, which
        in a batch is already its state after the whole batch; what differs per join is
        only its ids, its confidence and the counts (``detections``). So the joins of an
        incident are merged into the place of the first, unless another output of the
        same cell and kind (another incident joining the same open ticket, a hot-spot
        finding) comes between them, which would change the order of the ticket's ids.
        Only where no join is checked against the store (``only_reopened`` without
        ``held_anywhere``, an incident not found re-opened): a checked join's outcome
        depends on the joins applied before it. An incident opened in the same batch is
        found re-opened, or not, only when its opening is applied: :meth:`apply` then
        applies its merged joins one by one after all.
        """
        self._parts.clear()
        if not self.only_reopened or self.held_anywhere is not None:
            return list(outputs)
        merged: list[StreamOutput] = []
        # per (cell, kind): the incident whose joins are being merged, and its group
        current: dict[tuple[str, str], tuple[Incident, list[IncidentEvent]]] = {}
        groups: list[tuple[int, list[IncidentEvent]]] = []  # (index in merged, its joins)
        reopened = self.reopened
        for output in outputs:
            if isinstance(output, IncidentEvent):
                incident = output.incident
                key = (incident.cell_id, incident.kind)
                if not output.opened and incident.incident_id not in reopened:
                    group = current.get(key)
                    if group is not None and group[0] is incident:
                        group[1].append(output)
                        continue
                    joins = [output]
                    current[key] = (incident, joins)
                    groups.append((len(merged), joins))
                    merged.append(output)
                    continue
            else:
                key = (output.cell_id, output.kind)
            current.pop(key, None)
            merged.append(output)
        for index, joins in groups:
            if len(joins) > 1:
                first = joins[0]
                event = merged[index] = IncidentEvent(
                    first.incident, False,
                    tuple(e for join in joins for e in join.new_event_ids),
                    max(join.confidence for join in joins), first.source_type,
                    sum(join.detections for join in joins))
                self._parts[id(event)] = (event, joins)
        return merged

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
