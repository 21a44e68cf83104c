"""Ticket operations behind the API: plain functions with keyword-only arguments over a
:class:`~ticketing.store.SqlTicketStore`. They raise domain errors (``TicketNotFound``,
``VersionConflict``, ``TransitionError``, ``ActionInvalid``, ``OutsideGrid``); only the
API's routes turn them into HTTP responses."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from geo.grid import Grid
from stream.policy import PolicyBook
from ticketing.config import TicketingSettings
from ticketing.desk import new_ticket
from ticketing.lifecycle import ActionRequest, AuditEntry, apply_action
from ticketing.models import Origin, Ticket
from ticketing.queries import DEFAULT_SORT, Sort
from ticketing.routing import Rules, clock_record
from ticketing.store import SqlTicketStore, TicketFilter, TicketNotFound


class OutsideGrid(ValueError):
    """The report's position is in no grid cell."""


def list_tickets(*, store: SqlTicketStore, flt: TicketFilter, limit: int,
                 offset: int, sort: Sort = DEFAULT_SORT) -> tuple[list[Ticket], int]:
    """One page of tickets (oldest first by default) and the total matching ``flt``."""
    return store.list(flt, limit=limit, offset=offset, sort=sort), store.count(flt)


def list_public(*, store: SqlTicketStore, flt: TicketFilter, limit: int, offset: int,
                sort: Sort = DEFAULT_SORT) -> tuple[list[dict[str, Any]], int]:
    """:func:`list_tickets` as ``Ticket.to_public()`` dicts, read without building
    tickets (what the API's list encodes)."""
    return store.page_public(flt, limit=limit, offset=offset, sort=sort)


def get_visible(*, store: SqlTicketStore, ticket_id: str,
                visible: Callable[[Ticket], bool]) -> Ticket:
    """The ticket if it exists and the caller may see it, else :class:`TicketNotFound`
    (the same answer either way, so a department learns nothing of others' tickets)."""
    ticket = store.get(ticket_id)
    if ticket is None or not visible(ticket):
        raise TicketNotFound(ticket_id)
    return ticket


def create_report(*, store: SqlTicketStore, grid: Grid, policies: PolicyBook,
                  settings: TicketingSettings, kind: str, lon: float, lat: float,
                  at: datetime, actor: str, origin: Origin,
                  description: str | None = None, observed_at: datetime | None = None,
                  external_id: str | None = None, source_id: str | None = None,
                  media_url: str | None = None) -> tuple[Ticket, bool]:
    """Open a ticket for a report (API or Open311), routed like a detection's.

    Idempotent per ``(origin, actor, external_id)``: the same report posted twice is one
    ticket. Returns the ticket and whether it was created now.

    ``opened_at`` is ``observed_at`` (when it was seen) or ``at``; the deadline clock
    starts at ``at`` (when the centre received it), so an old observation reported now
    is not overdue at once.
    """
    cell = grid.cell_at(lon, lat)
    if cell is None:
        raise OutsideGrid(f"({lon}, {lat}) is outside every grid cell")
    seed = f"{origin.value}:{actor}:{external_id or uuid.uuid4().hex}"
    opened = observed_at or at
    suspended = source_id is not None and source_id in store.suspended_sources(
        max_false_positive_rate=settings.review.max_false_positive_rate,
        min_reviewed=settings.review.min_reviewed)
    ticket = new_ticket(rules=Rules(policies, settings), kind=kind, cell=cell, seed=seed,
                        opened_at=opened, received_at=max(opened, at), lon=lon, lat=lat,
                        confidence=1.0, origin=origin, source_suspended=suspended)
    ticket.description = description
    ticket.incident_count = ticket.detection_count = 1
    ticket.source_ids = [source_id] if source_id else []
    ticket.snapshot_urls = [media_url] if media_url else []
    return store.create(ticket, actor=actor, note=description)


def act(*, store: SqlTicketStore, rules: Rules, ticket_id: str, request: ActionRequest,
        expected_version: int, actor: str, at: datetime,
        visible: Callable[[Ticket], bool]) -> Ticket:
    """Apply a lifecycle action (checked by :func:`ticketing.lifecycle.apply_action`;
    departments and kinds against ``rules``)."""
    get_visible(store=store, ticket_id=ticket_id, visible=visible)

    def mutate(ticket: Ticket, load: Callable[[str], Ticket]) -> list[AuditEntry]:
        if not visible(ticket):
            raise TicketNotFound(ticket_id)

        def load_visible(other_id: str) -> Ticket:
            other = load(other_id)
            if not visible(other):
                raise TicketNotFound(other_id)
            return other

        return apply_action(ticket, request, actor=actor, at=at, rules=rules,
                            load=load_visible)

    return store.modify(ticket_id, mutate, expected_version=expected_version)


def update_ticket(*, store: SqlTicketStore, rules: Rules, ticket_id: str,
                  expected_version: int, actor: str, at: datetime,
                  visible: Callable[[Ticket], bool], description: str | None = None,
                  priority: str | None = None, note: str | None = None) -> Ticket:
    """Change the description and/or priority (the running clock's deadline follows the
    priority, by the same rule as everywhere: :func:`ticketing.routing.due_at`)."""
    get_visible(store=store, ticket_id=ticket_id, visible=visible)

    def mutate(ticket: Ticket, _load: Callable[[str], Ticket]) -> list[AuditEntry]:
        if not visible(ticket):
            raise TicketNotFound(ticket_id)
        data: dict[str, object] = {}
        if description is not None and description != ticket.description:
            ticket.description = description
            data["description"] = description
        if priority is not None and priority != ticket.priority:
            data.update(priority_from=ticket.priority, priority_to=priority)
            ticket.priority = priority
            rules.reprice(ticket)
            data["due_at"] = ticket.due_at.isoformat()
            data["clock"] = clock_record(ticket)
        if at > ticket.updated_at:
            ticket.updated_at = at
        return [AuditEntry(ticket_id=ticket.ticket_id, at=at, actor=actor, action="update",
                           from_status=ticket.status.value, to_status=ticket.status.value,
                           note=note, data=data)]

    return store.modify(ticket_id, mutate, expected_version=expected_version)


