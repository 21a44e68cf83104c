"""ticketing/lifecycle.py: every allowed edge, every refused one, and their side effects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from geo.admin import Level
from tests.ticketing.builders import RULES, T0, make_ticket
from ticketing.lifecycle import (
    TRANSITIONS,
    Action,
    ActionInvalid,
    ActionRequest,
    TransitionError,
    apply_action,
)
from ticketing.models import TicketStatus

S = TicketStatus
AT = T0 + timedelta(minutes=10)
ARGS = {Action.DISMISS: {"reason": "camera glare"}, Action.RETURN: {"reason": "not ours"},
        Action.RESOLVE: {"note": "fixed"}, Action.REOPEN: {"reason": "smoke again"},
        Action.DISPATCH: {"department": "community_security"}, Action.MERGE: {"into": "GW-target"},
        Action.RECALL: {"reason": "wrong unit"}, Action.RECLASSIFY: {"kind": "door_forced"}}

ALLOWED = [(a, s, to) for a, edges in TRANSITIONS.items() for s, to in edges.items()]
REFUSED = [(a, s) for a in Action for s in S if s not in TRANSITIONS[a]]


def _request(action: Action) -> ActionRequest:
    return ActionRequest(action, **ARGS.get(action, {}))  # type: ignore[arg-type]


@pytest.mark.parametrize(("action", "before", "after"), ALLOWED,
                         ids=[f"{a.value}:{s.value}" for a, s, _ in ALLOWED])
def test_every_allowed_edge(action: Action, before: S, after: S) -> None:
    ticket = make_ticket(status=before)
    target = make_ticket(ticket_id="GW-target", status=S.DISPATCHED)
    entries = apply_action(ticket, _request(action), actor="tester", at=AT,
                           load=lambda _id: target, rules=RULES)
    assert ticket.status is after
    first = entries[0]
    assert (first.action, first.from_status, first.to_status, first.actor, first.at) == (
        action.value, before.value, after.value, "tester", AT)


@pytest.mark.parametrize(("action", "before"), REFUSED,
                         ids=[f"{a.value}:{s.value}" for a, s in REFUSED])
def test_every_refused_edge_says_why(action: Action, before: S) -> None:
    ticket = make_ticket(status=before)
    with pytest.raises(TransitionError, match=f"cannot {action.value} a ticket that is "
                                              f"{before.value}"):
        apply_action(ticket, _request(action), actor="t", at=AT, rules=RULES)
    assert ticket.status is before


@pytest.mark.parametrize(("action", "status", "missing"), [
    (Action.DISMISS, S.PENDING_REVIEW, "reason"),
    (Action.RETURN, S.DISPATCHED, "reason"),
    (Action.RESOLVE, S.ACCEPTED, "note"),
    (Action.REOPEN, S.CLOSED, "reason"),
    (Action.DISPATCH, S.RETURNED, "department"),
    (Action.MERGE, S.PENDING_REVIEW, "into"),
])
def test_required_arguments(action: Action, status: S, missing: str) -> None:
    ticket = make_ticket(status=status)
    with pytest.raises(ActionInvalid, match=missing):
        apply_action(ticket, ActionRequest(action), actor="t", at=AT, rules=RULES)
    assert ticket.status is status


def test_returned_twice_goes_up_a_level_and_keeps_the_deadline() -> None:
    ticket = make_ticket(status=S.DISPATCHED)
    due = ticket.due_at
    levels = []
    for _ in range(4):
        entries = apply_action(ticket, ActionRequest(Action.RETURN, reason="not ours"),
                               actor="d", at=AT, rules=RULES)
        levels.append((ticket.level, ticket.unit, entries[0].data.get("level_to")))
        apply_action(ticket, ActionRequest(Action.DISPATCH, department="fire_rescue"),
                     actor="o", at=AT, rules=RULES)
    assert levels == [("village", "V0", None), ("town", "TownA", "town"),
                      ("town", "TownA", None), ("district", "D1", "district")]
    assert ticket.returned_count == 4
    assert ticket.due_at == due


def test_dispatch_to_another_level_sets_its_unit() -> None:
    ticket = make_ticket(status=S.RETURNED)
    apply_action(ticket, ActionRequest(Action.DISPATCH, department="urban_management",
                                       level=Level.DISTRICT),
                 actor="o", at=AT, rules=RULES)
    assert (ticket.department, ticket.level, ticket.unit) == ("urban_management", "district", "D1")


def test_merge_moves_evidence_into_the_target() -> None:
    source = make_ticket(status=S.PENDING_REVIEW, snapshot_urls=["s.jpg"])
    target = make_ticket(status=S.DISPATCHED)
    entries = apply_action(source, ActionRequest(Action.MERGE, into=target.ticket_id),
                           actor="o", at=AT, load=lambda _id: target, rules=RULES)
    assert (source.status, source.merged_into) == (S.CLOSED, target.ticket_id)
    assert source.event_ids[0] in target.event_ids
    assert source.source_ids[0] in target.source_ids
    assert target.snapshot_urls == ["s.jpg"]
    assert [e.action for e in entries] == ["merge", "absorb"]


@pytest.mark.parametrize(("into_status", "into_self", "error"), [
    (S.CLOSED, False, "not open"),
    (S.DISPATCHED, True, "into itself"),
])
def test_merge_refusals(into_status: S, into_self: bool, error: str) -> None:
    source = make_ticket(status=S.PENDING_REVIEW)
    target = make_ticket(status=into_status)
    into = source.ticket_id if into_self else target.ticket_id
    with pytest.raises(TransitionError, match=error):
        apply_action(source, ActionRequest(Action.MERGE, into=into), actor="o", at=AT,
                     load=lambda _id: target, rules=RULES)


def test_a_merged_ticket_cannot_be_reopened() -> None:
    ticket = make_ticket(status=S.CLOSED, merged_into="GW-x")
    with pytest.raises(TransitionError, match="merged into GW-x"):
        apply_action(ticket, ActionRequest(Action.REOPEN, reason="r"), actor="o", at=AT,
                     rules=RULES)


def test_resolve_records_time_and_whether_on_time() -> None:
    ticket = make_ticket(status=S.ACCEPTED)
    late = ticket.due_at + timedelta(seconds=1)
    entries = apply_action(ticket, ActionRequest(Action.RESOLVE, note="done"), actor="d",
                           at=late, rules=RULES)
    assert ticket.resolved_at == late
    assert entries[0].data == {"on_time": False}


@pytest.mark.parametrize("request_", [
    ActionRequest(Action.RECLASSIFY, kind="door_forced", department="no_such_dept"),
    ActionRequest(Action.RECLASSIFY, kind="parking"),
    ActionRequest(Action.DISPATCH, department="no_such_dept"),
    ActionRequest(Action.CONFIRM, department="no_such_dept"),
])
def test_a_refused_reroute_leaves_the_ticket_as_it_was(request_: ActionRequest) -> None:
    status = S.PENDING_REVIEW if request_.action is Action.CONFIRM else S.RETURNED
    ticket = make_ticket(status=status)
    before = ticket.copy()
    with pytest.raises(ActionInvalid):
        apply_action(ticket, request_, actor="o", at=AT, rules=RULES)
    assert ticket == before
