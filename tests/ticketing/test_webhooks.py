"""ticketing/webhooks.py: outbox delivery against a local receiver that fails, then
succeeds; HMAC signatures; idempotency keys; backoff; giving up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.ticketing.builders import T0, make_ticket
from ticketing.config import WebhookSettings
from ticketing.webhooks import WebhookDispatcher, backoff_s, verify_signature

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
    assert store.outbox_status() == {"pending": 0, "delivered": 1, "failed": 0}

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
        assert store.outbox_status() == {"pending": 0, "delivered": 0, "failed": 1}
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
    a, b = store_factory(outbox=True), store_factory(outbox=True)
    for _ in range(10):
        a.save(make_ticket())
    sent = []
    for s in (a, b):
        dispatcher = WebhookDispatcher(store=s, url=receiver.url, secret=SECRET, lease_s=60,
                                       client=None)
        sent.append(s.claim_outbox(now=T0, lease_s=60, worker=dispatcher.worker, limit=6))
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
