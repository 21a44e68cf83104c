"""ticketing/webhooks.py: webhook delivery against a local receiver that fails, then
succeeds; HMAC signatures; idempotency keys; backoff; giving up; department webhooks
beside the centre's (their own key, old and new holder, a failing one alone, once each
across two dispatchers, keys checked at start-up)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.ticketing.builders import RULES, T0, make_auth, make_policies, make_ticket
from ticketing.api.app import create_app
from ticketing.config import TicketingSettings, WebhookSettings
from ticketing.deliveries import DeliveryTargets
from ticketing.departments import DEFAULT_DEPARTMENTS
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.store import SqlTicketStore
from ticketing.webhooks import (
    WebhookDispatcher,
    backoff_s,
    dispatchers_from_settings,
    verify_signature,
)

SECRET = b"test-secret"


class Receiver:
    """A local HTTP receiver answering the scripted statuses, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body})
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500, 503])
    yield r
    r.close()


def test_retries_with_backoff_until_the_receiver_accepts(store, receiver) -> None:  # type: ignore[no-untyped-def]
    store.save(make_ticket())
    dispatcher = WebhookDispatcher(store=store, url=receiver.url, secret=SECRET,
                                   backoff_base_s=10, max_attempts=5)
    first = dispatcher.run_once(now=T0)
    assert [(r.delivered, r.status_code, r.attempt) for r in first] == [(False, 500, 1)]
    assert dispatcher.run_once(now=T0 + timedelta(seconds=5)) == []  # not due yet
    retry_at = first[0].retry_at
    assert retry_at is not None and timedelta(seconds=10) <= retry_at - T0 <= timedelta(
        seconds=11)
    second = dispatcher.run_once(now=retry_at)
    assert [(r.delivered, r.status_code, r.attempt) for r in second] == [(False, 503, 2)]
    assert second[0].retry_at - retry_at >= timedelta(seconds=20)  # type: ignore[operator]
    third = dispatcher.run_once(now=second[0].retry_at)  # type: ignore[arg-type]
    assert [(r.delivered, r.status_code, r.attempt) for r in third] == [(True, 200, 3)]
    assert dispatcher.run_once(now=T0 + timedelta(days=1)) == []
    assert store.delivery_counts() == {"pending": 0, "delivered": 1, "failed": 0}

    keys = {r["headers"]["Idempotency-Key"] for r in receiver.received}
    assert len(receiver.received) == 3 and len(keys) == 1
    for request in receiver.received:
        headers = request["headers"]
        assert verify_signature(SECRET, headers["X-GridWatch-Timestamp"], request["body"],
                                headers["X-GridWatch-Signature"])
        assert not verify_signature(b"other", headers["X-GridWatch-Timestamp"],
                                    request["body"], headers["X-GridWatch-Signature"])
    payload = json.loads(receiver.received[-1]["body"])
    assert payload["type"] == "ticket.created" and payload["ticket"]["version"] == 1


def test_gives_up_after_max_attempts(store) -> None:  # type: ignore[no-untyped-def]
    failing = Receiver([500] * 10)
    try:
        store.save(make_ticket())
        dispatcher = WebhookDispatcher(store=store, url=failing.url, secret=SECRET,
                                       backoff_base_s=1, max_attempts=2)
        now = T0
        results = dispatcher.run_once(now=now) + dispatcher.run_once(now=now + timedelta(
            hours=1))
        assert [(r.attempt, r.retry_at is None) for r in results] == [(1, False), (2, True)]
        assert store.delivery_counts() == {"pending": 0, "delivered": 0, "failed": 1}
    finally:
        failing.close()


def test_an_unreachable_receiver_is_retried(store) -> None:  # type: ignore[no-untyped-def]
    store.save(make_ticket())
    dispatcher = WebhookDispatcher(store=store, url="http://127.0.0.1:9/none", secret=SECRET,
                                   timeout_s=1)
    [result] = dispatcher.run_once(now=T0)
    assert not result.delivered and result.error and result.retry_at is not None


def test_two_dispatchers_do_not_send_the_same_item_at_once(store_factory, receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.statuses.clear()
    a, b = store_factory(webhooks=True), store_factory(webhooks=True)
    for _ in range(10):
        a.save(make_ticket())
    sent = []
    for s in (a, b):
        dispatcher = WebhookDispatcher(store=s, url=receiver.url, secret=SECRET, lease_s=60,
                                       client=None)
        sent.append(s.claim_deliveries(now=T0, lease_s=60, worker=dispatcher.worker, limit=6))
    ids = [i.id for batch in sent for i in batch]
    assert len(ids) == 10 and len(set(ids)) == 10


@pytest.mark.parametrize(("env", "error"), [
    ({}, "GRIDWATCH_WEBHOOK_SECRET"),
    ({"GRIDWATCH_WEBHOOK_SECRET": ""}, "unset or empty"),
])
def test_the_secret_comes_from_the_environment(store, env, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=error):
        WebhookDispatcher.from_settings(store=store, settings=WebhookSettings(
            url="http://x"), environ=env)


def test_backoff_doubles_and_is_capped() -> None:
    delays = [backoff_s(n, base_s=5, max_s=60, key="k") for n in range(1, 7)]
    assert [int(d // 1) for d in delays][:3] >= [5, 10, 20]
    assert all(60 <= d <= 66 for d in delays[4:])


# -- department webhooks ------------------------------------------------------------

CENTRE_KEY, FIRE_KEY = b"centre-key", b"fire-key"
ENVIRON = {"GRIDWATCH_WEBHOOK_SECRET": CENTRE_KEY.decode(),
           "FIRE_HOOK_KEY": FIRE_KEY.decode()}  # security uses the central variable's key


def _settings(*, centre: str, fire: str, security: str | None = None,
              fire_secret_env: str | None = "FIRE_HOOK_KEY") -> TicketingSettings:
    departments = dict(DEFAULT_DEPARTMENTS)
    departments["fire_rescue"] = departments["fire_rescue"].model_copy(update={
        "webhook_url": fire, "webhook_secret_env": fire_secret_env})
    departments["community_security"] = departments["community_security"].model_copy(
        update={"webhook_url": security})
    return TicketingSettings(departments=departments, webhook=WebhookSettings(
        url=centre, backoff_base_s=10, max_attempts=5))


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {name: Receiver([]) for name in ("centre", "fire", "security")}
    yield made
    for r in made.values():
        r.close()


def _dispatchers(store: SqlTicketStore, settings: TicketingSettings) -> dict[
        str, WebhookDispatcher]:
    return {d.destination: d for d in dispatchers_from_settings(
        store=store, settings=settings, environ=ENVIRON)}


def _keys(receiver: Receiver) -> list[str]:
    return [r["headers"]["Idempotency-Key"] for r in receiver.received]


def _act(store: SqlTicketStore, ticket_id: str, request: ActionRequest) -> None:
    store.modify(ticket_id, lambda t, load: apply_action(t, request, actor="ops", at=T0,
                                                         load=load, rules=RULES),
                 expected_version=None)


def test_the_department_and_the_centre_each_get_the_change_signed_with_their_key(  # type: ignore[no-untyped-def]
        store_factory, receivers) -> None:
    settings = _settings(centre=receivers["centre"].url, fire=receivers["fire"].url)
    store = store_factory(webhooks=DeliveryTargets.from_settings(settings))
    ticket = make_ticket()  # fire_rescue's
    store.save(ticket)
    dispatchers = _dispatchers(store, settings)
    assert sorted(dispatchers) == ["centre", "department/fire_rescue"]
    for dispatcher in dispatchers.values():
        assert [r.delivered for r in dispatcher.run_once(now=T0)] == [True]
    t = ticket.ticket_id
    assert _keys(receivers["centre"]) == [f"{t}:1:created"]
    assert _keys(receivers["fire"]) == [f"{t}:1:created:fire_rescue"]
    [request] = receivers["fire"].received
    headers, body = request["headers"], request["body"]
    assert verify_signature(FIRE_KEY, headers["X-GridWatch-Timestamp"], body,
                            headers["X-GridWatch-Signature"])
    assert not verify_signature(CENTRE_KEY, headers["X-GridWatch-Timestamp"], body,
                                headers["X-GridWatch-Signature"])
    payload = json.loads(body)
    assert payload["event_key"] == f"{t}:1:created:fire_rescue"
    assert payload["ticket"]["department"] == "fire_rescue"
    [central] = receivers["centre"].received
    assert verify_signature(CENTRE_KEY, central["headers"]["X-GridWatch-Timestamp"],
                            central["body"], central["headers"]["X-GridWatch-Signature"])
    assert store.delivery_counts() == {"pending": 0, "delivered": 2, "failed": 0}


def test_a_re_dispatch_notifies_the_old_and_the_new_department(store_factory, receivers) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(centre=receivers["centre"].url, fire=receivers["fire"].url,
                         security=receivers["security"].url)
    store = store_factory(webhooks=DeliveryTargets.from_settings(settings))
    ticket = make_ticket()
    store.save(ticket)
    _act(store, ticket.ticket_id, ActionRequest(Action.RETURN, reason="not a fire"))
    _act(store, ticket.ticket_id, ActionRequest(Action.DISPATCH,
                                                department="community_security"))
    for dispatcher in _dispatchers(store, settings).values():
        assert all(r.delivered for r in dispatcher.run_once(now=T0))
    types = {name: [json.loads(r["body"])["type"] for r in receiver.received]
             for name, receiver in receivers.items()}
    assert types == {
        "centre": ["ticket.created", "ticket.return", "ticket.dispatch"],
        "fire": ["ticket.created", "ticket.return", "ticket.dispatch"],
        "security": ["ticket.dispatch"]}
    [handed] = receivers["security"].received  # no webhook_secret_env: the central key
    assert verify_signature(CENTRE_KEY, handed["headers"]["X-GridWatch-Timestamp"],
                            handed["body"], handed["headers"]["X-GridWatch-Signature"])
    left = json.loads(receivers["fire"].received[-1]["body"])
    assert left["ticket"]["department"] == "community_security"


def test_a_failing_department_endpoint_is_retried_without_holding_up_the_others(  # type: ignore[no-untyped-def]
        store_factory, receivers) -> None:
    receivers["fire"].statuses[:] = [500, 500]
    settings = _settings(centre=receivers["centre"].url, fire=receivers["fire"].url,
                         security=receivers["security"].url)
    store = store_factory(webhooks=DeliveryTargets.from_settings(settings))
    fire_ticket, security_ticket = make_ticket(), make_ticket(
        department="community_security")
    store.save(fire_ticket)
    store.save(security_ticket)
    dispatchers = _dispatchers(store, settings)
    fire = dispatchers.pop("department/fire_rescue")
    failed = fire.run_once(now=T0)
    assert [(r.delivered, r.status_code) for r in failed] == [(False, 500)]
    for dispatcher in dispatchers.values():  # the fire endpoint's failure is its own
        assert [r.delivered for r in dispatcher.run_once(now=T0)] in ([True], [True, True])
    assert len(receivers["centre"].received) == 2 and len(receivers["security"].received) == 1
    assert store.delivery_counts(destination="department/fire_rescue") == {
        "pending": 1, "delivered": 0, "failed": 0}
    # a dead endpoint (nothing listening) is retried too, and the rest still go out
    dead = WebhookDispatcher(store=store, url="http://127.0.0.1:9/none", secret=FIRE_KEY,
                             destination="department/fire_rescue", timeout_s=1)
    retry_at = failed[0].retry_at
    assert retry_at is not None
    [unreachable] = dead.run_once(now=retry_at)
    assert not unreachable.delivered and unreachable.error and unreachable.attempt == 2
    store.save(make_ticket(department="urban_management"))  # the centre's alone
    assert [r.delivered for r in dispatchers["centre"].run_once(now=retry_at)] == [True]
    later = fire.run_once(now=unreachable.retry_at)  # type: ignore[arg-type]
    assert [(r.delivered, r.attempt) for r in later] == [(False, 3)]  # the second 500
    final = fire.run_once(now=T0 + timedelta(days=1))
    assert [(r.delivered, r.attempt) for r in final] == [(True, 4)]
    keys = _keys(receivers["fire"])
    assert keys[0] == keys[1] == keys[2] == f"{fire_ticket.ticket_id}:1:created:fire_rescue"


def test_two_dispatchers_of_one_department_deliver_each_change_once(  # type: ignore[no-untyped-def]
        store_factory, receivers) -> None:
    settings = _settings(centre=receivers["centre"].url, fire=receivers["fire"].url)
    targets = DeliveryTargets.from_settings(settings)
    a, b = store_factory(webhooks=targets), store_factory(webhooks=targets)  # two replicas
    for _ in range(12):
        a.save(make_ticket())
    replicas = [_dispatchers(s, settings)["department/fire_rescue"] for s in (a, b)]
    results: list[list[object]] = [[], []]
    barrier = threading.Barrier(2)

    def drain(n: int) -> None:
        barrier.wait()
        for _ in range(4):
            results[n] += replicas[n].run_once(now=T0, limit=3)

    threads = [threading.Thread(target=drain, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = _keys(receivers["fire"])
    assert len(keys) == 12 and len(set(keys)) == 12  # every change once, none twice
    assert len(results[0]) + len(results[1]) == 12
    assert receivers["centre"].received == []  # the centre's rows are its own dispatcher's
    assert a.delivery_counts(destination="centre")["pending"] == 12


@pytest.mark.parametrize(("environ", "error"), [
    ({"GRIDWATCH_WEBHOOK_SECRET": "k"},
     r"\$FIRE_HOOK_KEY \(the HMAC key of department 'fire_rescue'\)"),
    ({"FIRE_HOOK_KEY": "k"},
     r"\$GRIDWATCH_WEBHOOK_SECRET \(the HMAC key of ticketing.webhook\)"),
    ({"GRIDWATCH_WEBHOOK_SECRET": "k", "FIRE_HOOK_KEY": ""}, r"FIRE_HOOK_KEY.*empty"),
])
def test_a_missing_department_key_fails_naming_the_variable_and_the_department(  # type: ignore[no-untyped-def]
        store, environ, error) -> None:
    settings = _settings(centre="http://centre/hook", fire="http://fire/hook")
    with pytest.raises(ValueError, match=error):
        dispatchers_from_settings(store=store, settings=settings, environ=environ)


def test_the_app_checks_the_keys_at_start_up(store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FIRE_HOOK_KEY", raising=False)
    settings = _settings(centre="http://centre/hook", fire="http://fire/hook")
    with pytest.raises(ValueError, match="FIRE_HOOK_KEY.*fire_rescue"):
        create_app(store=store, settings=settings, policies=make_policies(),
                   auth=make_auth(), run_workers=True)
    create_app(store=store, settings=settings, policies=make_policies(), auth=make_auth())


def test_a_store_that_does_not_write_a_departments_rows_is_refused(store) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(centre="http://centre/hook", fire="http://fire/hook")
    assert store.webhooks == DeliveryTargets()  # the fixture's webhooks=True: the centre alone
    with pytest.raises(ValueError, match="department/fire_rescue.*DeliveryTargets"):
        dispatchers_from_settings(store=store, settings=settings, environ=ENVIRON)


def test_a_round_stops_at_the_first_failure_and_gives_the_rest_back_untried(store) -> None:  # type: ignore[no-untyped-def]
    tickets = [make_ticket() for _ in range(3)]
    for ticket in tickets:
        store.save(ticket)
    dead = WebhookDispatcher(store=store, url="http://127.0.0.1:9/none", secret=SECRET,
                             timeout_s=1, lease_s=600)
    [first] = dead.run_once(now=T0)  # one try against a dead endpoint, not three
    assert not first.delivered and first.event_key == f"{tickets[0].ticket_id}:1:created"
    # the other two are due again at once, by anyone, with no attempt counted
    again = store.claim_deliveries(now=T0, lease_s=60, worker="other")
    assert [(i.event_key, i.attempts) for i in again] == [
        (f"{t.ticket_id}:1:created", 0) for t in tickets[1:]]
