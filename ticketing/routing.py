"""Routing: which level and department handle a kind in a cell, and by when.

"小事村内解决、要事镇街处置、大事区级决策": each kind names its level (village / town /
district) and department; per-town overrides come from ``ticketing.routing_overrides``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from geo.grid import ADMIN_LEVELS, Cell
from stream.policy import KindPolicy, Level
from ticketing.config import TicketingSettings


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


def unit_at(cell: Cell, level: Level) -> str | None:
    """The cell's unit at ``level``, or the nearest known unit above it."""
    for name in ADMIN_LEVELS[ADMIN_LEVELS.index(level.value):]:
        unit = cell.admin_unit(name)
        if unit:
            return unit
    return None


def escalate(level: Level) -> Level:
    """One level up (village → town → district); district stays district."""
    order = list(Level)
    return order[min(order.index(level) + 1, len(order) - 1)]


def due_at(opened_at: datetime, priority: str, policy: KindPolicy,
           settings: TicketingSettings) -> datetime:
    """SLA deadline: the kind's own ``sla_s`` if set, else the priority's."""
    seconds = policy.sla_s if policy.sla_s is not None else settings.sla_s[priority]  # type: ignore[index]
    return opened_at + timedelta(seconds=seconds)
