"""The ticket lifecycle as a checked state machine (pure; no I/O, no clock).

::

    pending_review ─confirm─► dispatched ─accept─► accepted ─resolve─► resolved ─close─► closed
          │  └─merge─► closed    │  ▲                │                  │                │
       dismiss              return │dispatch       return            reopen           reopen
          ▼                      ▼  │                 ▼                  ▼                ▼
      dismissed ◄──dismiss── returned ◄──────────── returned          reopened ◄──────────┘
                                                                  (accept / return)

Every applied action yields :class:`AuditEntry` records (actor, time, note). A refused
action raises :class:`TransitionError` saying why. A ticket returned for the second time
(and every second time after) goes one level up: village → town → district, so a work
order cannot be kicked between departments at the same level for ever. Returning does not
stop the clock: ``due_at`` stays where it was.

>>> from datetime import datetime, UTC
>>> t = make_example_ticket()
>>> [e.action for e in apply_action(t, ActionRequest(Action.ACCEPT), actor="fire",
...                                 at=datetime(2024, 5, 1, 8, tzinfo=UTC))]
['accept']
>>> t.status.value
'accepted'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from stream.policy import Level
from ticketing.models import Origin, Review, Ticket, TicketStatus
from ticketing.routing import escalate

S = TicketStatus


class Action(str, Enum):  # noqa: UP042 (CONVENTIONS 10)
    """What a person (or the system) does to a ticket."""

    CONFIRM = "confirm"  # operator: the review found a real problem; dispatch it
    DISMISS = "dismiss"  # operator: a false positive (reason required)
    MERGE = "merge"  # operator: the same problem as another open ticket (into required)
    DISPATCH = "dispatch"  # operator: re-route a returned ticket (department required)
    ACCEPT = "accept"  # department: we take it
    RETURN = "return"  # department: not ours (reason required)
    RESOLVE = "resolve"  # department: done (note required: the feedback)
    CLOSE = "close"  # operator: the feedback is checked; evaluation counts it
    REOPEN = "reopen"  # operator: the fix did not hold (reason required)


TRANSITIONS: dict[Action, dict[TicketStatus, TicketStatus]] = {
    Action.CONFIRM: {S.PENDING_REVIEW: S.DISPATCHED},
    Action.DISMISS: {S.PENDING_REVIEW: S.DISMISSED, S.DISPATCHED: S.DISMISSED,
                     S.RETURNED: S.DISMISSED},
    Action.MERGE: {S.PENDING_REVIEW: S.CLOSED, S.DISPATCHED: S.CLOSED, S.RETURNED: S.CLOSED},
    Action.DISPATCH: {S.RETURNED: S.DISPATCHED},
    Action.ACCEPT: {S.DISPATCHED: S.ACCEPTED, S.REOPENED: S.ACCEPTED},
    Action.RETURN: {S.DISPATCHED: S.RETURNED, S.ACCEPTED: S.RETURNED, S.REOPENED: S.RETURNED},
    Action.RESOLVE: {S.ACCEPTED: S.RESOLVED},
    Action.CLOSE: {S.RESOLVED: S.CLOSED},
    Action.REOPEN: {S.RESOLVED: S.REOPENED, S.CLOSED: S.REOPENED},
}
"""``TRANSITIONS[action][from_status] -> to_status``; anything absent is refused."""

OPERATOR_ACTIONS = frozenset({Action.CONFIRM, Action.DISMISS, Action.MERGE, Action.DISPATCH,
                              Action.CLOSE, Action.REOPEN})
DEPARTMENT_ACTIONS = frozenset({Action.ACCEPT, Action.RETURN, Action.RESOLVE})

RETURNS_PER_LEVEL = 2


class TransitionError(Exception):
    """The action is not allowed from the ticket's current state (HTTP 409)."""


class ActionInvalid(ValueError):
    """The action lacks something it needs, e.g. a reason (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One action with its arguments; which are required depends on the action."""

    action: Action
    note: str | None = None
    reason: str | None = None
    department: str | None = None  # dispatch: where to
    level: Level | None = None  # dispatch: optionally a different level
    into: str | None = None  # merge: the ticket that absorbs this one


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to one ticket: who, when, what, from which state to which, and why."""

    ticket_id: str
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str
    note: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def unit_for(ticket: Ticket, level: Level) -> str | None:
    """The ticket's administrative unit at ``level`` or the nearest known above it."""
    order = [Level.VILLAGE, Level.TOWN, Level.DISTRICT]
    for name in order[order.index(level):]:
        unit: str | None = getattr(ticket, name.value)
        if unit:
            return unit
    return None


def allowed_actions(status: TicketStatus) -> list[Action]:
    """The actions that the state machine allows from ``status``."""
    return [a for a, edges in TRANSITIONS.items() if status in edges]


def _require(value: str | None, what: str, action: Action) -> str:
    if value is None or not value.strip():
        raise ActionInvalid(f"{action.value} needs a {what}")
    return value.strip()


def apply_action(ticket: Ticket, request: ActionRequest, *, actor: str, at: datetime,
                 load: Callable[[str], Ticket] | None = None) -> list[AuditEntry]:
    """Apply ``request`` to ``ticket`` in place and return the audit entries.

    Args:
        ticket: the ticket as it is now; changed in place (version is the store's job).
        request: the action and its arguments.
        actor: who does it (a token's name); recorded in the audit log.
        at: when (the caller's clock; the API's wall clock, a test's fixed time).
        load: for ``merge``, loads the target ticket (the store locks and saves it).

    Raises:
        TransitionError: not allowed from the current state, or a merge target that is
            not open / is the ticket itself.
        ActionInvalid: a required argument (reason, department, into, note) is missing.
    """
    action = request.action
    edges = TRANSITIONS[action]
    before = ticket.status
    if before not in edges:
        allowed = ", ".join(a.value for a in allowed_actions(before)) or "none"
        raise TransitionError(
            f"cannot {action.value} a ticket that is {before.value} "
            f"(allowed from {before.value}: {allowed})")
    after = edges[before]
    data: dict[str, Any] = {}
    entries: list[AuditEntry] = []
    note = request.note
    if action is Action.CONFIRM:
        data["sources"] = list(ticket.source_ids)
    elif action is Action.DISMISS:
        reason = _require(request.reason, "reason", action)
        ticket.dismiss_reason = reason
        ticket.closed_at = at
        data.update(reason=reason, sources=list(ticket.source_ids))
    elif action is Action.MERGE:
        into = _require(request.into, "target ticket (into)", action)
        if into == ticket.ticket_id:
            raise TransitionError("cannot merge a ticket into itself")
        if load is None:
            raise TransitionError("merge needs the store")
        target = load(into)
        if not target.is_open:
            raise TransitionError(
                f"cannot merge into {into}: it is {target.status.value}, not open")
        _absorb(target, ticket, at=at)
        ticket.merged_into = into
        ticket.closed_at = at
        data["into"] = into
        entries.append(AuditEntry(
            ticket_id=target.ticket_id, at=at, actor=actor, action="absorb",
            from_status=target.status.value, to_status=target.status.value,
            note=note, data={"from": ticket.ticket_id}))
    elif action is Action.DISPATCH:
        department = _require(request.department, "department", action)
        if request.level is not None:
            ticket.level = request.level.value
            ticket.unit = unit_for(ticket, request.level)
        ticket.department = department
        data.update(department=department, level=ticket.level, unit=ticket.unit)
    elif action is Action.ACCEPT:
        if ticket.accepted_at is None:
            ticket.accepted_at = at
    elif action is Action.RETURN:
        reason = _require(request.reason, "reason", action)
        ticket.returned_count += 1
        data.update(reason=reason, department=ticket.department,
                    returned_count=ticket.returned_count)
        if ticket.returned_count % RETURNS_PER_LEVEL == 0:
            old = Level(ticket.level)
            new = escalate(old)
            if new is not old:
                ticket.level = new.value
                ticket.unit = unit_for(ticket, new)
                data.update(level_from=old.value, level_to=new.value, unit=ticket.unit)
        note = note or reason
    elif action is Action.RESOLVE:
        note = _require(request.note, "note (the feedback)", action)
        ticket.resolved_at = at
        data["on_time"] = at <= ticket.due_at
    elif action is Action.CLOSE:
        ticket.closed_at = at
    elif action is Action.REOPEN:
        if ticket.merged_into is not None:
            raise TransitionError(
                f"cannot reopen a ticket merged into {ticket.merged_into}; reopen that one")
        reason = _require(request.reason, "reason", action)
        ticket.resolved_at = None
        ticket.closed_at = None
        data["reason"] = reason
        note = note or reason
    ticket.status = after
    if at > ticket.updated_at:
        ticket.updated_at = at
    entries.insert(0, AuditEntry(ticket_id=ticket.ticket_id, at=at, actor=actor,
                                 action=action.value, from_status=before.value,
                                 to_status=after.value, note=note, data=data))
    return entries


def _absorb(target: Ticket, source: Ticket, *, at: datetime) -> None:
    known = set(target.event_ids)
    target.event_ids.extend(e for e in source.event_ids if e not in known)
    target.incident_ids.extend(i for i in source.incident_ids if i not in target.incident_ids)
    target.source_ids.extend(s for s in source.source_ids if s not in target.source_ids)
    for url in source.snapshot_urls:
        if url not in target.snapshot_urls:
            target.snapshot_urls.append(url)
    target.incident_count += source.incident_count
    target.detection_count += source.detection_count
    target.max_confidence = max(target.max_confidence, source.max_confidence)
    if at > target.updated_at:
        target.updated_at = at


def make_example_ticket(status: TicketStatus = S.DISPATCHED) -> Ticket:
    """A small ticket for examples and tests (village-level, fire_rescue, due in 30 min)."""
    opened = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
    return Ticket(
        ticket_id="GW-example", kind="smoke", cell_id="C1", district="Nanhai",
        town="Guicheng", village="Pingzhou", level="village", unit="Pingzhou",
        department="fire_rescue", status=status, review=Review.AUTO_DISPATCHED,
        priority="P1", opened_at=opened, due_at=opened + timedelta(minutes=30),
        updated_at=opened, lon=113.1, lat=23.0, max_confidence=0.9,
        source_ids=["st1/smoke-3"], origin=Origin.DETECTION)
