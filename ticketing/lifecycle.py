"""The ticket lifecycle as a checked state machine (pure; no I/O, no clock).

::

    pending_review ─confirm─► dispatched ─accept─► accepted ─resolve─► resolved ─close─► closed
          │  └─merge─► closed    │  ▲                │                  │                │
       dismiss              return │dispatch       return            reopen           reopen
          ▼                      ▼  │                 ▼                  ▼                ▼
      dismissed ◄──dismiss── returned ◄──────────── returned          reopened ◄──────────┘
                                                                  (accept / return)
    dispatched / accepted / returned / reopened ─recall─► pending_review
    pending_review, dispatched, returned ─reclassify─► (same, returned → dispatched)

Confirm, dispatch (to another department), recall and reclassify (to another
department) start a new deadline clock for whoever holds the ticket next
(:meth:`ticketing.routing.Rules.start_clock`): a unit's clock starts when the work
reaches it, and the cards of an earlier holder stay on that holder's record. Departments
are checked against the registry (``ActionInvalid`` naming the valid ids).

Every applied action yields :class:`AuditEntry` records (actor, time, note). A refused
action raises :class:`TransitionError` saying why. A ticket returned for the second time
(and every second time after) goes one level up: village → town → district, so a work
order cannot be kicked between departments at the same level for ever. Returning does not
stop the clock: ``due_at`` stays where it was while the same department has it; a
dispatch to another department starts that department's own clock.

>>> from datetime import datetime, UTC
>>> t = make_example_ticket()
>>> [e.action for e in apply_action(t, ActionRequest(Action.ACCEPT), actor="fire",
...                                 at=datetime(2024, 5, 1, 8, tzinfo=UTC), rules=None)]
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

from geo.admin import Level, unit_at
from geo.grid import Cell
from ticketing.departments import UnknownDepartment
from ticketing.models import Origin, Review, ReviewReason, Ticket, TicketStatus
from ticketing.routing import Rules, clock_record

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
    CLOSE = "close"  # operator: the feedback is checked; the assessment (考核) counts it
    REOPEN = "reopen"  # operator: the fix did not hold (reason required)
    RECALL = "recall"  # operator: take a dispatched ticket back to review (reason required)
    RECLASSIFY = "reclassify"  # operator: the kind was wrong (kind required); re-routed


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
    Action.RECALL: {S.DISPATCHED: S.PENDING_REVIEW, S.ACCEPTED: S.PENDING_REVIEW,
                    S.RETURNED: S.PENDING_REVIEW, S.REOPENED: S.PENDING_REVIEW},
    Action.RECLASSIFY: {S.PENDING_REVIEW: S.PENDING_REVIEW, S.DISPATCHED: S.DISPATCHED,
                        S.RETURNED: S.DISPATCHED},
}
"""``TRANSITIONS[action][from_status] -> to_status``; anything absent is refused."""

OPERATOR_ACTIONS = frozenset({Action.CONFIRM, Action.DISMISS, Action.MERGE, Action.DISPATCH,
                              Action.CLOSE, Action.REOPEN, Action.RECALL,
                              Action.RECLASSIFY})
# actions that hand the ticket to a new holder and so need the routing rules
CLOCK_ACTIONS = frozenset({Action.CONFIRM, Action.DISPATCH, Action.RECALL,
                           Action.RECLASSIFY})
DEPARTMENT_ACTIONS = frozenset({Action.ACCEPT, Action.RETURN, Action.RESOLVE})

RETURNS_PER_LEVEL = 2


class TransitionError(Exception):
    """The action is not allowed from the ticket's current state (HTTP 409)."""


class ActionInvalid(ValueError):
    """The action lacks something it needs, e.g. a reason, or names an unknown
    department or kind (HTTP 422); ``field`` is the request field at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One action with its arguments; which are required depends on the action."""

    action: Action
    note: str | None = None
    reason: str | None = None
    department: str | None = None  # dispatch / confirm: where to
    level: Level | None = None  # dispatch / confirm: optionally a different level
    into: str | None = None  # merge: the ticket that absorbs this one
    kind: str | None = None  # reclassify: the right kind


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


def allowed_actions(status: TicketStatus) -> list[Action]:
    """The actions that the state machine allows from ``status``."""
    return [a for a, edges in TRANSITIONS.items() if status in edges]


def _require(value: str | None, what: str, action: Action) -> str:
    if value is None or not value.strip():
        raise ActionInvalid(f"{action.value} needs a {what}")
    return value.strip()


def apply_action(ticket: Ticket, request: ActionRequest, *, actor: str, at: datetime,
                 rules: Rules | None, load: Callable[[str], Ticket] | None = None,
                 ) -> list[AuditEntry]:
    """Apply ``request`` to ``ticket`` in place and return the audit entries.

    Args:
        ticket: the ticket as it is now; changed in place (version is the store's job).
        request: the action and its arguments.
        actor: who does it (a token's name); recorded in the audit log.
        at: when (the caller's clock; the API's wall clock, a test's fixed time).
        rules: routing and deadlines (departments, policies); needed by the actions that
            hand the ticket to a new holder (confirm, dispatch, recall, reclassify).
        load: for ``merge``, loads the target ticket (the store locks and saves it).

    Raises:
        TransitionError: not allowed from the current state, or a merge target that is
            not open / is the ticket itself.
        ActionInvalid: a required argument (reason, department, into, note, kind) is
            missing, or a department / kind is unknown.
    """
    action = request.action
    if action in CLOCK_ACTIONS and rules is None:
        raise TypeError(f"{action.value} needs the routing rules (rules=Rules(...))")
    if (request.department is not None or request.level is not None) and \
            action not in CLOCK_ACTIONS:
        raise ActionInvalid(f"{action.value} takes no department or level (confirm, "
                            f"dispatch, recall and reclassify do)", field="department")
    before_kind = ticket.kind
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
        assert rules is not None
        data["sources"] = list(ticket.source_ids)
        if request.department is not None or request.level is not None:
            _reroute(ticket, request, rules, data)
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
        assert rules is not None
        _require(request.department, "department", action)
        previous = ticket.department
        _reroute(ticket, request, rules, data)
        if ticket.department == previous:
            # back to the unit that returned it (at its level or higher): its clock runs
            # on, so returning cannot buy time (no kicking the ball)
            data["clock"] = clock_record(ticket)
    elif action is Action.RECALL:
        assert rules is not None
        reason = _require(request.reason, "reason", action)
        data.update(reason=reason, department_from=ticket.department)
        if request.department is not None or request.level is not None:
            _reroute(ticket, request, rules, data)  # where it should go after review
        ticket.review_reason = ReviewReason.RECALLED
        note = note or reason
    elif action is Action.RECLASSIFY:
        assert rules is not None
        kind = _require(request.kind, "kind", action)
        if kind not in rules.policies.kinds:
            raise ActionInvalid(
                f"unknown kind {kind!r} (valid: {', '.join(sorted(rules.policies.kinds))})",
                field="kind")
        if request.department is not None:
            _department(ticket, request.department, rules)  # refused before any change
        policy = rules.policies.for_kind(kind)
        route = rules.route(kind, _cell_of(ticket))
        previous = ticket.department
        ticket.kind, ticket.label, ticket.priority = kind, policy.label, policy.priority
        ticket.level, ticket.unit, ticket.department = (route.level.value, route.unit,
                                                        route.department)
        if request.department is not None or request.level is not None:
            _reroute(ticket, request, rules, data)  # the operator overrides the route
        data.update(kind_from=before_kind, kind_to=kind,
                    department_from=previous, department_to=ticket.department,
                    priority_to=policy.priority)
        moved = after is S.DISPATCHED and ticket.department != previous
        if not moved:
            rules.reprice(ticket)  # the same holder: the same clock, the new kind's time
            data["clock"] = clock_record(ticket)
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
            new = old.above()
            if new is not old:
                ticket.level = new.value
                ticket.unit = unit_at(ticket, new)
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
    if action in CLOCK_ACTIONS and "clock" not in data:
        assert rules is not None
        if after is S.DISPATCHED:
            ticket.accepted_at = None  # the new unit accepts for itself
        data["clock"] = rules.start_clock(ticket, at)
    if at > ticket.updated_at:
        ticket.updated_at = at
    entries.insert(0, AuditEntry(ticket_id=ticket.ticket_id, at=at, actor=actor,
                                 action=action.value, from_status=before.value,
                                 to_status=after.value, note=note, data=data))
    return entries


def _reroute(ticket: Ticket, request: ActionRequest, rules: Rules,
             data: dict[str, Any]) -> None:
    """Send the ticket to ``request.department`` (a registered one) and/or level."""
    if request.department is not None:
        ticket.department = _department(ticket, request.department, rules)
    if request.level is not None:
        ticket.level = request.level.value
        ticket.unit = unit_at(ticket, request.level)
    data.update(department=ticket.department, level=ticket.level, unit=ticket.unit)


def _department(ticket: Ticket, department: str, rules: Rules) -> str:
    """``department`` if it is registered and serves one of the ticket's units."""
    try:
        department = rules.department(department.strip())
    except UnknownDepartment as exc:
        raise ActionInvalid(str(exc), field="department") from None
    serves = rules.settings.departments[department].serves
    units = [u for u in (ticket.village, ticket.town, ticket.district) if u]
    if serves and not set(units) & set(serves):
        raise ActionInvalid(
            f"department {department!r} does not serve {' / '.join(units) or 'this cell'}"
            f" (it serves: {', '.join(serves)})", field="department")
    return department


def _cell_of(ticket: Ticket) -> Cell:
    return Cell(cell_id=ticket.cell_id, district=ticket.district, town=ticket.town,
                village=ticket.village)


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
