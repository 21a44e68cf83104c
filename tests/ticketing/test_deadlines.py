"""One deadline rule and clocks that start when a unit receives the work: the desk, API
create and PATCH, recall, reclassify and re-dispatch (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from geo.admin import Level
from stream.policy import KindPolicy, PolicyBook
from stream.types import Incident, IncidentEvent
from tests.builders import make_grid
from tests.ticketing.builders import (
    RULES,
    T0,
    Headers,
    api_act_ok,
    api_create,
    make_policies,
    make_ticket,
)
from ticketing.config import EscalationSettings, TicketingSettings
from ticketing.desk import TicketDesk
from ticketing.escalation import Escalator
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.models import ReviewReason, TicketStatus
from ticketing.routing import due_at, sla_s
from ticketing.store import MemoryTicketStore

S = TicketStatus
M = timedelta(minutes=1)






def _t(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.mark.parametrize(("kind_sla", "kind_priority", "priority", "expected"), [
    (1800, "P1", "P1", 1800),  # the kind's own time while it keeps the kind's priority
    (1800, "P1", "P2", 86400),  # a changed priority: the priority's time
    (None, "P3", "P3", 259200),
    (None, "P3", "P1", 7200),
])
def test_one_rule_for_the_time_allowed(kind_sla: int | None, kind_priority: str,
                                       priority: str, expected: int) -> None:
    policy = KindPolicy(sla_s=kind_sla, priority=kind_priority)  # type: ignore[arg-type]
    assert sla_s(priority, policy, TicketingSettings()) == expected
    assert due_at(T0, priority, policy, TicketingSettings()) == T0 + timedelta(
        seconds=expected)


def test_create_and_patch_use_the_desks_rule(client: TestClient, as_role: Headers,
                                             clock) -> None:  # type: ignore[no-untyped-def]
    policy = make_policies().for_kind("smoke")
    created = api_create(client, as_role)
    assert _t(created["due_at"]) == due_at(T0, "P1", policy, TicketingSettings())
    assert _t(created["due_at"]) == T0 + 30 * M  # the kind's sla_s, as the desk's
    desk = TicketDesk(policies=make_policies(), settings=TicketingSettings(),
                      grid=make_grid(), store=MemoryTicketStore())
    from_desk = desk.apply(_incident(T0))
    assert from_desk.due_at == _t(created["due_at"])
    clock.now = T0 + 5 * M
    ops = as_role["operator"]
    patched = client.patch(f"/tickets/{created['ticket_id']}", headers=ops,
                           json={"version": created["version"], "priority": "P2"})
    assert patched.status_code == 200, patched.text
    # from the unit's clock start (dispatch at T0), by the P2 time
    assert _t(patched.json()["due_at"]) == due_at(T0, "P2", policy, TicketingSettings())
    back = client.patch(f"/tickets/{created['ticket_id']}", headers=ops,
                        json={"version": patched.json()["version"], "priority": "P1"})
    assert _t(back.json()["due_at"]) == T0 + 30 * M


def test_an_old_observation_reported_now_is_not_overdue(client: TestClient,
                                                        as_role: Headers, store) -> None:  # type: ignore[no-untyped-def]
    seen = T0 - timedelta(days=3)
    ticket = api_create(client, as_role, observed_at=seen.isoformat())
    assert _t(ticket["opened_at"]) == seen  # when it was seen
    assert _t(ticket["received_at"]) == T0 == _t(ticket["dispatched_at"])
    assert _t(ticket["due_at"]) == T0 + 30 * M
    worker = Escalator(store=store, settings=EscalationSettings(remind_before_s=600))
    assert worker.run_once(now=T0 + M) == []
    assert [r.stage.value for r in worker.run_once(now=T0 + 31 * M)] == ["yellow"]


def _incident(opened_at: datetime, *, confidence: float = 0.9,
              last_at: datetime | None = None, opened: bool = True) -> IncidentEvent:
    incident = Incident(incident_id="i1", kind="smoke", cell_id="C00", opened_at=opened_at,
                        last_at=last_at or opened_at, lon=0.5, lat=0.5,
                        max_confidence=confidence, event_ids=["e1"],
                        source_ids=["st1/smoke-1"], detection_count=1)
    return IncidentEvent(incident=incident, opened=opened,
                         new_event_ids=("e1" if opened else "e2",), confidence=confidence,
                         source_type="smoke_sensor")


def test_the_live_desk_starts_the_clock_on_receipt_replay_on_event_time() -> None:
    seen = T0 - timedelta(hours=5)  # an edge box's backlog after an outage
    now = T0
    live = TicketDesk(policies=make_policies(), settings=TicketingSettings(),
                      grid=make_grid(), store=MemoryTicketStore(), received=lambda: now)
    ticket = live.apply(_incident(seen))
    assert (ticket.opened_at, ticket.received_at, ticket.dispatched_at) == (seen, now, now)
    assert ticket.due_at == now + 30 * M
    replay = TicketDesk(policies=make_policies(), settings=TicketingSettings(),
                        grid=make_grid(), store=MemoryTicketStore())
    again = replay.apply(_incident(seen))
    assert (again.received_at, again.dispatched_at, again.due_at) == (seen, seen,
                                                                      seen + 30 * M)


@pytest.mark.parametrize(("policies", "confidence", "reason"), [
    (make_policies(), 0.1, ReviewReason.LOW_CONFIDENCE),
    (PolicyBook(), 0.9, ReviewReason.UNKNOWN_KIND),
    (PolicyBook(kinds={"smoke": KindPolicy(department="fire_rescue")}), 0.9,
     ReviewReason.AUTO_DISPATCH_OFF),
    (make_policies(), 0.9, None),
])
def test_the_desk_records_why_a_ticket_goes_to_review(policies: PolicyBook,
                                                      confidence: float,
                                                      reason: ReviewReason | None) -> None:
    desk = TicketDesk(policies=policies, settings=TicketingSettings(review_sla_s=900),
                      grid=make_grid(), store=MemoryTicketStore())
    ticket = desk.apply(_incident(T0, confidence=confidence))
    assert ticket.review_reason is reason
    if reason is None:
        assert (ticket.status, ticket.dispatched_at) == (S.DISPATCHED, T0)
    else:  # the review target, not the unit's deadline
        assert (ticket.status, ticket.dispatched_at) == (S.PENDING_REVIEW, None)
        assert ticket.due_at == T0 + 15 * M


def test_a_later_confident_detection_starts_the_units_clock_then() -> None:
    desk = TicketDesk(policies=make_policies(), settings=TicketingSettings(),
                      grid=make_grid(), store=MemoryTicketStore())
    first = desk.apply(_incident(T0, confidence=0.1))
    assert first.status is S.PENDING_REVIEW
    later = desk.apply(_incident(T0, confidence=0.95, last_at=T0 + 20 * M, opened=False))
    assert (later.status, later.dispatched_at) == (S.DISPATCHED, T0 + 20 * M)
    assert later.due_at == T0 + 50 * M and later.clock_seq == 2


def test_confirm_starts_the_units_clock_at_confirmation() -> None:
    ticket = make_ticket(status=S.PENDING_REVIEW, review_reason=ReviewReason.LOW_CONFIDENCE)
    at = T0 + 50 * M  # long after the unit's deadline would have been from opened_at
    entries = apply_action(ticket, ActionRequest(Action.CONFIRM), actor="ops", at=at,
                           rules=RULES)
    assert (ticket.status, ticket.dispatched_at, ticket.due_at) == (S.DISPATCHED, at,
                                                                   at + 30 * M)
    assert entries[0].data["clock"]["phase"] == "unit"
    assert ticket.review_reason is ReviewReason.LOW_CONFIDENCE  # why it went to review


def test_recall_and_reclassify_over_the_api(client: TestClient, as_role: Headers,
                                            clock) -> None:  # type: ignore[no-untyped-def]
    ops = as_role["operator"]
    ticket = api_create(client, as_role)
    accepted = api_act_ok(client, as_role["fire"], ticket, "accept")
    clock.now = T0 + 10 * M
    recalled = api_act_ok(client, ops, accepted, "recall", reason="it is a forced door")
    assert (recalled["status"], recalled["review_reason"], recalled["dispatched_at"],
            recalled["accepted_at"]) == ("pending_review", "recalled", None,
                                         accepted["accepted_at"])
    assert _t(recalled["due_at"]) == clock.now + timedelta(seconds=1800)  # review target
    queue = client.get("/review/queue", headers=ops).json()
    assert [(i["ticket"]["ticket_id"], i["ticket"]["review_reason"])
            for i in queue["items"]] == [(ticket["ticket_id"], "recalled")]
    clock.now = T0 + 15 * M
    moved = api_act_ok(client, ops, recalled, "reclassify", kind="door_forced")
    assert (moved["kind"], moved["department"], moved["level"], moved["unit"],
            moved["priority"], moved["label"], moved["status"]) == (
        "door_forced", "community_security", "village", "V0", "P2", "Door forced open",
        "pending_review")
    clock.now = T0 + 20 * M
    sent = api_act_ok(client, ops, moved, "confirm")
    assert (sent["status"], sent["accepted_at"]) == ("dispatched", None)
    assert _t(sent["dispatched_at"]) == clock.now
    assert _t(sent["due_at"]) == clock.now + timedelta(days=1)  # P2, door_forced
    # reclassifying a dispatched ticket re-routes it and starts the new unit's clock
    clock.now = T0 + 30 * M
    back = api_act_ok(client, ops, sent, "reclassify", kind="smoke")
    assert (back["department"], back["status"], back["clock_seq"]) == (
        "fire_rescue", "dispatched", sent["clock_seq"] + 1)
    assert _t(back["due_at"]) == clock.now + 30 * M
    audit = client.get(f"/tickets/{ticket['ticket_id']}/audit", headers=ops).json()
    assert [e["action"] for e in audit] == ["create", "accept", "recall", "reclassify",
                                            "confirm", "reclassify"]
    assert audit[2]["data"]["reason"] == "it is a forced door"
    assert audit[3]["data"]["kind_from"] == "smoke"


def test_re_dispatch_starts_a_new_clock_only_for_a_new_department() -> None:
    ticket = make_ticket(status=S.DISPATCHED)  # fire_rescue, due T0 + 30 min
    apply_action(ticket, ActionRequest(Action.RETURN, reason="not ours"), actor="fire",
                 at=T0 + 5 * M, rules=RULES)
    apply_action(ticket, ActionRequest(Action.DISPATCH, department="fire_rescue",
                                       level=Level.TOWN), actor="ops", at=T0 + 10 * M,
                 rules=RULES)
    assert (ticket.due_at, ticket.clock_seq) == (T0 + 30 * M, 1)  # returning buys no time
    apply_action(ticket, ActionRequest(Action.RETURN, reason="still not ours"),
                 actor="fire", at=T0 + 12 * M, rules=RULES)
    apply_action(ticket, ActionRequest(Action.DISPATCH, department="community_security"),
                 actor="ops", at=T0 + 14 * M, rules=RULES)
    assert (ticket.dispatched_at, ticket.due_at, ticket.clock_seq) == (
        T0 + 14 * M, T0 + 44 * M, 2)
