"""ticketing/deliveries.py: which receivers a committed change is written for (the centre and
the departments it concerns), their keys, and migration 9 (rows before it are the
centre's). Delivery itself: tests/ticketing/test_webhooks.py."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from tests.ticketing.builders import RULES, T0, make_ticket
from ticketing import migrations
from ticketing.config import TicketingSettings, WebhookSettings
from ticketing.deliveries import CENTRE, DeliveryTargets, as_targets
from ticketing.departments import DEFAULT_DEPARTMENTS
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.models import TicketStatus
from ticketing.store import SqlTicketStore

FIRE, SECURITY = "department/fire_rescue", "department/community_security"
BOTH = DeliveryTargets(centre=True, departments=frozenset({"fire_rescue",
                                                         "community_security"}))


def _act(store: SqlTicketStore, ticket_id: str, request: ActionRequest) -> None:
    store.modify(ticket_id, lambda t, load: apply_action(t, request, actor="ops", at=T0,
                                                         load=load, rules=RULES),
                 expected_version=None)


def _rows(store: SqlTicketStore, destination: str) -> list[tuple[str, str]]:
    """(event key, payload type) of a receiver's pending rows, oldest first."""
    items = store.claim_deliveries(now=T0, lease_s=1, worker="test", limit=100,
                               destination=destination)
    for item in items:
        assert json.loads(item.payload)["event_key"] == item.event_key
        assert item.destination == destination
    return [(i.event_key, i.event_type) for i in items]


def test_each_receiver_gets_its_own_row_and_key(store_factory) -> None:  # type: ignore[no-untyped-def]
    store = store_factory(webhooks=BOTH)
    ticket = make_ticket()  # fire_rescue's
    store.save(ticket)
    t = ticket.ticket_id
    assert _rows(store, CENTRE) == [(f"{t}:1:created", "ticket.created")]
    assert _rows(store, FIRE) == [(f"{t}:1:created:fire_rescue", "ticket.created")]
    assert _rows(store, SECURITY) == []  # not its ticket
    assert store.delivery_counts() == {"pending": 2, "delivered": 0, "failed": 0}
    assert store.delivery_counts(destination=FIRE)["pending"] == 1


def test_a_re_dispatch_goes_to_the_old_and_the_new_department(store_factory) -> None:  # type: ignore[no-untyped-def]
    store = store_factory(webhooks=BOTH)
    ticket = make_ticket()
    store.save(ticket)
    t = ticket.ticket_id
    _act(store, t, ActionRequest(Action.RETURN, reason="not a fire"))
    _act(store, t, ActionRequest(Action.DISPATCH, department="community_security"))
    _act(store, t, ActionRequest(Action.ACCEPT))
    assert [k for k, _ in _rows(store, FIRE)] == [
        f"{t}:1:created:fire_rescue", f"{t}:2:return:fire_rescue",
        f"{t}:3:dispatch:fire_rescue"]  # it hears that the ticket left, then no more
    assert [k for k, _ in _rows(store, SECURITY)] == [
        f"{t}:3:dispatch:community_security", f"{t}:4:accept:community_security"]
    assert [k for k, _ in _rows(store, CENTRE)] == [
        f"{t}:1:created", f"{t}:2:return", f"{t}:3:dispatch", f"{t}:4:accept"]


@pytest.mark.parametrize(("request_", "old_hears", "new_hears"), [
    # a reclassify to another department's kind re-routes it: both hear of it
    (ActionRequest(Action.RECLASSIFY, kind="door_forced"), True, True),
    # a recall that names where it goes after review: both
    (ActionRequest(Action.RECALL, reason="wrong unit", department="community_security"),
     True, True),
    # a recall alone keeps the department (it still sees the ticket, in review)
    (ActionRequest(Action.RECALL, reason="check it"), True, False),
])
def test_a_change_that_takes_the_ticket_away_reaches_the_department_it_leaves(  # type: ignore[no-untyped-def]
        store_factory, request_, old_hears, new_hears) -> None:
    store = store_factory(webhooks=BOTH)
    ticket = make_ticket()
    store.save(ticket)
    _rows(store, FIRE)  # the creation's row, claimed out of the way
    _act(store, ticket.ticket_id, request_)
    action = request_.action.value
    assert [k for k, _ in _rows(store, FIRE)] == (
        [f"{ticket.ticket_id}:2:{action}:fire_rescue"] if old_hears else [])
    assert [k for k, _ in _rows(store, SECURITY)] == (
        [f"{ticket.ticket_id}:2:{action}:community_security"] if new_hears else [])


def test_a_department_without_a_webhook_and_an_off_centre_get_no_rows(store_factory) -> None:  # type: ignore[no-untyped-def]
    store = store_factory(webhooks=DeliveryTargets(centre=False,
                                               departments=frozenset({"fire_rescue"})))
    store.save(make_ticket(department="community_security"))
    store.save(make_ticket())
    assert _rows(store, CENTRE) == [] and _rows(store, SECURITY) == []
    assert len(_rows(store, FIRE)) == 1


@pytest.mark.parametrize(("webhooks", "expected"), [
    (False, None), (None, None), (True, DeliveryTargets()),
    (DeliveryTargets(centre=False), None),  # no receiver: no rows at all
    (BOTH, BOTH),
])
def test_the_store_argument(webhooks, expected) -> None:  # type: ignore[no-untyped-def]
    assert as_targets(webhooks) == expected


def test_targets_come_from_the_centre_url_and_the_department_urls() -> None:
    departments = dict(DEFAULT_DEPARTMENTS)
    departments["fire_rescue"] = departments["fire_rescue"].model_copy(
        update={"webhook_url": "http://fire.example/hook"})
    off = DeliveryTargets.from_settings(TicketingSettings())
    assert not off.enabled
    only_fire = DeliveryTargets.from_settings(TicketingSettings(departments=departments))
    assert only_fire == DeliveryTargets(centre=False, departments=frozenset({"fire_rescue"}))
    assert only_fire.enabled
    both = DeliveryTargets.from_settings(TicketingSettings(
        departments=departments, webhook=WebhookSettings(url="http://centre/hook")))
    assert both == DeliveryTargets(centre=True, departments=frozenset({"fire_rescue"}))


def test_rows_written_before_migration_9_are_the_centres(  # type: ignore[no-untyped-def]
        store_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS",
                        tuple(m for m in migrations.MIGRATIONS if m.version < 9))
    old = store_factory(webhooks=False)
    ticket = make_ticket()
    old.save(ticket)
    with old.transaction() as conn:  # what the store of migration 8 wrote
        conn.execute(text(
            "INSERT INTO outbox (event_key, event_type, ticket_id, payload, created_at,"
            " next_attempt_at) VALUES ('k1', 'ticket.created', :t, '{\"event_key\": \"k1\"}',"
            " '2026-05-04T06:00:00.000000Z', '2026-05-04T06:00:00.000000Z')"),
            {"t": ticket.ticket_id})
    monkeypatch.undo()
    upgraded = store_factory(webhooks=True)
    assert 9 in upgraded.applied_migrations
    assert _rows(upgraded, CENTRE) == [("k1", "ticket.created")]
    assert _rows(upgraded, FIRE) == []


def test_a_confirm_to_the_routed_department_reaches_it_alone(store_factory) -> None:  # type: ignore[no-untyped-def]
    store = store_factory(webhooks=BOTH)
    ticket = make_ticket(status=TicketStatus.PENDING_REVIEW)
    store.save(ticket)
    _act(store, ticket.ticket_id, ActionRequest(Action.CONFIRM))
    assert [k for k, _ in _rows(store, FIRE)] == [
        f"{ticket.ticket_id}:1:created:fire_rescue", f"{ticket.ticket_id}:2:confirm:fire_rescue"]
    assert _rows(store, SECURITY) == []
