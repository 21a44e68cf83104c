"""What the demo's people did: the sample's tickets worked the way a district works them.

After the sample (shifted to end now) has flowed through the pipeline, the demo's
departments and its operator act on the tickets at plausible times after each was
opened, and the escalator runs along that timeline, so the database holds the closed loop
in every state: pending review, dispatched, accepted, overdue with yellow and red cards
(recorded against the unit that held the ticket), returned and re-dispatched, recalled
and re-routed, resolved and closed. Every action is a real lifecycle action through
``ticketing.service.act`` by a named demo account, so the audit log and the 考核 report
read as they would in a centre. Nothing here runs outside ``gridwatch demo``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ticketing.config import EscalationSettings
from ticketing.escalation import Escalator
from ticketing.lifecycle import Action, ActionRequest
from ticketing.models import Ticket, TicketStatus
from ticketing.routing import Rules
from ticketing.service import act
from ticketing.store import SqlTicketStore
from ticketing.users import UserStore

# (username, display name, role, department)
ACCOUNTS = (
    ("demo.operator", "值班员 Demo Operator", "operator", None),
    ("demo.supervisor", "督办 Demo Supervisor", "supervisor", None),
    ("demo.fire", "消防 Demo Fire", "department", "fire_rescue"),
    ("demo.security", "治安 Demo Security", "department", "community_security"),
    ("demo.property", "物业 Demo Property", "department", "property_management"),
    ("demo.traffic", "交警 Demo Traffic", "department", "traffic_police"),
)
STAFF = {department: username for username, _, _, department in ACCOUNTS if department}
OPERATOR = "demo.operator"


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a person does to one ticket, ``after`` its ``opened_at``."""

    after: timedelta
    action: Action
    actor: str | None = None  # None: the ticket's department's staff at that moment
    reason: str | None = None
    note: str | None = None
    department: str | None = None


def _m(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


def stories(tickets: list[Ticket]) -> dict[str, list[Step]]:
    """Which ticket gets which steps: by kind, in the order they were opened (the sample
    is fixed, so the same tickets get the same story every run)."""
    by_kind: dict[str, list[Ticket]] = {}
    for t in sorted(tickets, key=lambda t: (t.opened_at, t.ticket_id)):
        if t.status is not TicketStatus.PENDING_REVIEW:
            by_kind.setdefault(t.kind, []).append(t)
    plans: dict[str, list[list[Step]]] = {
        "smoke": [[  # on time: accepted in minutes, the cause found and fixed
            Step(_m(6), Action.ACCEPT),
            Step(_m(24), Action.RESOLVE, note="Kitchen smoke on 3F, no fire; detector "
                                              "cleaned and tested"),
        ]],
        "door_forced": [
            [Step(_m(50), Action.ACCEPT),
             Step(_m(300), Action.RESOLVE, note="Lock repaired; CCTV checked, no intruder"),
             Step(_m(360), Action.CLOSE, actor=OPERATOR)],
            [Step(_m(120), Action.ACCEPT)],  # accepted, never resolved: yellow, then red
            [Step(_m(30), Action.RETURN, reason="The gate belongs to the property company, "
                                                "not to public security"),
             Step(_m(55), Action.DISPATCH, actor=OPERATOR, department="property_management"),
             Step(_m(90), Action.ACCEPT),
             Step(_m(240), Action.RESOLVE, note="Gate closer replaced")],
            # nobody acts until the operator notices, recalls it and routes it afresh:
            # the cards stay with community_security, property_management starts a clock
            [Step(timedelta(0), Action.RECALL, actor=OPERATOR,
                  reason="Mis-routed: a fire door of the residential block"),
             Step(timedelta(minutes=2), Action.CONFIRM, actor=OPERATOR,
                  department="property_management")],
        ],
        "door_held_open": [[  # accepted, resolved late (a yellow card first)
            Step(_m(35), Action.ACCEPT),
            Step(_m(290), Action.RESOLVE, note="Wedge removed; residents told, sign put up"),
        ]],
        "wrong_way_ebike": [[Step(_m(180), Action.ACCEPT)]],  # accepted, in time
        "helmetless_rider": [[Step(_m(180), Action.ACCEPT)]],
    }
    out: dict[str, list[Step]] = {}
    for kind, group in by_kind.items():
        for ticket, steps in zip(group, plans.get(kind, []), strict=False):
            out[ticket.ticket_id] = steps
    return out


def play(store: SqlTicketStore, rules: Rules, escalation: EscalationSettings,
         *, now: datetime) -> dict[str, int]:
    """Apply :func:`stories` along one timeline, the escalator running before each step
    and at ``now``; the last story of ``door_forced`` (the recall) happens just before
    ``now``. Returns how many steps and cards were applied."""
    tickets = list(store.all())
    plan = stories(tickets)
    opened = {t.ticket_id: t.opened_at for t in tickets}
    recall_at = now - timedelta(minutes=10)
    timeline: list[tuple[datetime, str, Step]] = []
    for ticket_id, steps in plan.items():
        for step in steps:
            at = (recall_at + step.after if step.action in (Action.RECALL, Action.CONFIRM)
                  else opened[ticket_id] + step.after)
            timeline.append((min(at, now), ticket_id, step))
    timeline.sort(key=lambda item: (item[0], item[1]))
    escalator = Escalator(store=store, settings=escalation)
    cards = 0
    for at, ticket_id, step in timeline:
        cards += len(escalator.run_once(now=at))
        ticket = store.get(ticket_id)
        assert ticket is not None
        actor = step.actor or STAFF.get(ticket.department, OPERATOR)
        act(store=store, rules=rules, ticket_id=ticket_id,
            request=ActionRequest(step.action, note=step.note, reason=step.reason,
                                  department=step.department),
            expected_version=ticket.version, actor=actor, at=at, visible=_everyone)
    cards += len(escalator.run_once(now=now))
    return {"steps": len(timeline), "cards": cards}


def _everyone(_ticket: Ticket) -> bool:
    return True


def add_accounts(users: UserStore, *, now: datetime,
                 password: Callable[[], str] = lambda: secrets.token_urlsafe(9)) -> str:
    """The demo's named accounts, all with one fresh password (returned, to print)."""
    shared = password()
    for username, display, role, department in ACCOUNTS:
        users.add(username=username, password=shared, role=role, department=department,
                  display_name=display, now=now)
    return shared
