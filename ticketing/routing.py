"""Routing: which level and department handle a kind in a cell, and by when.

"小事村内解决、要事镇街处置、大事区级决策": each kind names its level (village / town /
district) and department; per-town overrides come from ``ticketing.routing_overrides``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from geo.admin import Level, unit_at
from geo.grid import Cell
from stream.policy import KindPolicy, PolicyBook
from ticketing.config import TicketingSettings
from ticketing.departments import check_config, check_department
from ticketing.models import Escalation, Ticket


@dataclass(frozen=True, slots=True)
class Route:
    level: Level
    unit: str | None
    department: str


def route_for(kind: str, cell: Cell, policy: KindPolicy,
              settings: TicketingSettings) -> Route:
    """The first matching override wins; otherwise the kind's policy."""
    level, department = policy.level, policy.department
    for rule in settings.routing_overrides:
        if rule.kind not in (None, kind):
            continue
        if rule.district not in (None, cell.district) or rule.town not in (None, cell.town):
            continue
        level = rule.level or level
        department = rule.department or department
        break
    return Route(level=level, unit=unit_at(cell, level), department=department)


def sla_s(priority: str, policy: KindPolicy, settings: TicketingSettings) -> int:
    """Seconds a unit has: the kind's own ``sla_s`` while the ticket keeps the kind's
    priority, else the priority's (``ticketing.sla_s``), so an operator who raises or
    lowers a ticket's priority moves its deadline."""
    if policy.sla_s is not None and priority == policy.priority:
        return policy.sla_s
    return settings.sla_s[priority]  # type: ignore[index]


def due_at(start: datetime, priority: str, policy: KindPolicy,
           settings: TicketingSettings) -> datetime:
    """The one deadline rule: ``start`` (when the unit received the work) plus
    :func:`sla_s`. Every deadline (desk, API create / PATCH, Open311, actions) comes from
    here; the escalator reads the result (``due_at``, ``red_at``) off the ticket."""
    return start + timedelta(seconds=sla_s(priority, policy, settings))


@dataclass(frozen=True, slots=True)
class Rules:
    """Routing and deadline rules of one process: the policies, the settings and the
    department registry in them. Checks at construction that every department a kind or
    override names is registered (``ValueError`` naming the field and the valid ids)."""

    policies: PolicyBook
    settings: TicketingSettings = field(default_factory=TicketingSettings)

    def __post_init__(self) -> None:
        check_config(self.policies, registry=self.settings.departments,
                     override_departments=[r.department
                                           for r in self.settings.routing_overrides])

    def department(self, department: str) -> str:
        """``department`` if registered, else
        :class:`~ticketing.departments.UnknownDepartment` (naming the valid ids)."""
        return check_department(department, self.settings.departments)

    def route(self, kind: str, cell: Cell) -> Route:
        return route_for(kind, cell, self.policies.for_kind(kind), self.settings)

    def unit_due_at(self, ticket: Ticket, start: datetime) -> datetime:
        return due_at(start, ticket.priority, self.policies.for_kind(ticket.kind),
                      self.settings)

    def review_due_at(self, start: datetime) -> datetime:
        return start + timedelta(seconds=self.settings.review_sla_s)

    def start_clock(self, ticket: Ticket, at: datetime) -> dict[str, Any]:
        """Start a new deadline clock at ``at`` for whoever holds ``ticket`` now (its
        unit if dispatched, operator review if pending): a new ``clock_seq``, no
        escalation yet, a new ``due_at``. The cards of earlier clocks stay on the record
        of the unit that held the ticket then. Returns the audit entry's ``clock``."""
        ticket.clock_seq += 1
        ticket.escalation = Escalation.NONE
        ticket.clock_started_at = at
        if ticket.phase == "review":
            ticket.dispatched_at = None
            ticket.due_at = self.review_due_at(at)
        else:
            ticket.dispatched_at = at
            ticket.due_at = self.unit_due_at(ticket, at)
        return clock_record(ticket)

    def reprice(self, ticket: Ticket) -> None:
        """The running clock's deadline again after a priority or kind change (same
        start)."""
        if ticket.phase == "review":
            ticket.due_at = self.review_due_at(ticket.clock_start)
        else:
            ticket.due_at = self.unit_due_at(ticket, ticket.clock_start)


def clock_record(ticket: Ticket) -> dict[str, Any]:
    """The running clock as an audit entry records it (what the 考核 report reads)."""
    return {"seq": ticket.clock_seq, "phase": ticket.phase,
            "department": ticket.department, "level": ticket.level, "unit": ticket.unit,
            "started_at": ticket.clock_start.isoformat(),
            "due_at": ticket.due_at.isoformat()}
