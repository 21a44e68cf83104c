"""Live updates: server-sent events in one process, and across two API replicas fanned
out through a real Redis (department scoping applies to events too)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.builders import make_grid
from tests.ticketing.builders import T0, TOKENS, make_auth, make_policies
from ticketing.api.app import create_app
from ticketing.changelog import LogWindow
from ticketing.events import RedisBus

FIRE = {"Authorization": f"Bearer {TOKENS['fire']}"}
SECURITY = {"Authorization": f"Bearer {TOKENS['security']}"}
INGEST = {"Authorization": f"Bearer {TOKENS['ingest']}"}


def _listen(client: TestClient, headers: dict[str, str], out: list[dict[str, Any]],
            limit: int = 1) -> threading.Thread:
    def run() -> None:
        with client.stream("GET", f"/events?limit={limit}&idle_timeout_s=20",
                           headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                    out.append(event)
                    event = {}

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for_subscribers(bus: Any, n: int) -> None:
    local = getattr(bus, "local", bus)
    deadline = time.monotonic() + 10
    while local.subscriber_count < n:
        assert time.monotonic() < deadline, "the SSE client did not subscribe"
        time.sleep(0.02)


def test_sse_in_one_process(store, clock) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth(), clock=clock)
    with TestClient(app) as client:
        got: list[dict[str, Any]] = []
        thread = _listen(client, FIRE, got)
        _wait_for_subscribers(app.state.gridwatch.bus, 1)
        created = client.post("/tickets", headers=INGEST,
                              json={"kind": "smoke", "lon": 0.5, "lat": 0.5}).json()
        thread.join(timeout=20)
    assert [(e["event"], e["data"]["ticket_id"], e["data"]["status"]) for e in got] == [
        ("ticket.created", created["ticket_id"], "dispatched")]


def test_two_replicas_fan_out_through_redis(store_factory, redis_url, clock) -> None:  # type: ignore[no-untyped-def]
    channel = f"gridwatch:test:{uuid.uuid4().hex}"
    apps = [create_app(store=store_factory(), policies=make_policies(), grid=make_grid(),
                       auth=make_auth(), clock=clock, bus=RedisBus(redis_url, channel=channel))
            for _ in range(2)]
    with TestClient(apps[0]) as replica_a, TestClient(apps[1]) as replica_b:
        got: list[dict[str, Any]] = []
        thread = _listen(replica_b, SECURITY, got)
        _wait_for_subscribers(apps[1].state.gridwatch.bus, 1)
        fire = replica_a.post("/tickets", headers=INGEST,
                              json={"kind": "smoke", "lon": 0.5, "lat": 0.5}).json()
        door = replica_a.post("/tickets", headers=INGEST,
                              json={"kind": "door_forced", "lon": 0.5, "lat": 0.5}).json()
        thread.join(timeout=20)
    # security never sees fire's ticket; it gets its own, published by the other replica
    assert [e["data"]["ticket_id"] for e in got] == [door["ticket_id"]]
    assert fire["ticket_id"] != door["ticket_id"]


# -- resuming from Last-Event-ID (the change log) ------------------------------------------

def _blocks(text: str) -> list[dict[str, Any]]:
    """Every block of a text/event-stream body as a ``{"event", "id", "data", ...}`` dict
    (comment lines under ``""``)."""
    out = []
    for block in text.strip().split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value
        out.append(event)
    return out


def _events(text: str) -> list[dict[str, Any]]:
    """The events of a text/event-stream body: blocks with data (as EventSource, which
    dispatches no block without data, though it keeps such a block's id)."""
    return [block for block in _blocks(text) if "data" in block]


def _report(client: TestClient, kind: str = "smoke") -> dict[str, Any]:
    response = client.post("/tickets", headers=INGEST,
                           json={"kind": kind, "lon": 0.5, "lat": 0.5})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _resume(client: TestClient, headers: dict[str, str], *, limit: int,
            last_event_id: str | None = None, query: str = "") -> list[dict[str, Any]]:
    """Events of a stream opened with ``Last-Event-ID`` that ends after ``limit`` (all
    of them already in the log, so it ends without waiting)."""
    if last_event_id is not None:
        headers = {**headers, "Last-Event-ID": last_event_id}
    response = client.get(f"/events?limit={limit}&idle_timeout_s=30{query}",
                          headers=headers)
    assert response.status_code == 200, response.text
    return _events(response.text)


def test_a_reconnecting_client_gets_what_changed_while_it_was_away(store, clock) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth(), clock=clock)
    with TestClient(app) as client:
        live: list[dict[str, Any]] = []
        thread = _listen(client, FIRE, live)
        _wait_for_subscribers(app.state.gridwatch.bus, 1)
        first = _report(client)
        thread.join(timeout=20)
        assert [e["data"]["ticket_id"] for e in live] == [first["ticket_id"]]
        seen = str(live[0]["data"]["seq"])
        # disconnected: two changes for fire, one for security meanwhile
        accepted = client.post(f"/tickets/{first['ticket_id']}/actions",
                               headers=FIRE, json={"action": "accept", "version": 1})
        assert accepted.status_code == 200
        _report(client, "door_forced")
        second = _report(client)
        got = _resume(client, FIRE, limit=2, last_event_id=seen)
    assert [(e["event"], e["data"]["ticket_id"], e["data"]["status"]) for e in got] == [
        ("ticket.accept", first["ticket_id"], "accepted"),
        ("ticket.created", second["ticket_id"], "dispatched")]
    # ids are change-log numbers in commit order (the security change is skipped)
    assert [int(e["id"]) for e in got] == [int(seen) + 1, int(seen) + 3]
    assert [e["data"]["seq"] for e in got] == [int(e["id"]) for e in got]


def test_resume_by_query_parameter_and_the_header_wins(client: TestClient) -> None:
    made = [_report(client) for _ in range(3)]
    by_query = _resume(client, FIRE, limit=2, query="&last_event_id=1")
    assert [e["data"]["ticket_id"] for e in by_query] == [t["ticket_id"] for t in made[1:]]
    # a browser reconnecting sends the header with its newest id; the URL keeps the old
    both = _resume(client, FIRE, limit=1, last_event_id="2", query="&last_event_id=0")
    assert [e["data"]["ticket_id"] for e in both] == [made[2]["ticket_id"]]


def test_resume_then_live_events_follow_in_order(store, clock) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth(), clock=clock)
    with TestClient(app) as client:
        old = _report(client)
        got: list[dict[str, Any]] = []

        def run() -> None:
            got.extend(_resume(client, FIRE, limit=2, last_event_id="0"))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        _wait_for_subscribers(app.state.gridwatch.bus, 1)
        new = _report(client)
        thread.join(timeout=20)
    assert [(e["id"], e["data"]["ticket_id"]) for e in got] == [
        ("1", old["ticket_id"]), ("2", new["ticket_id"])]


def test_an_id_older_than_the_log_gets_a_reset(client: TestClient, store) -> None:  # type: ignore[no-untyped-def]
    made = [_report(client) for _ in range(4)]
    assert store.prune_changes(now=T0, retention_s=86400, max_rows=2) == 2
    assert store.change_window() == LogWindow(3, 4)
    # 2 is the newest id the client may have seen and still resume from
    ok = _resume(client, FIRE, limit=2, last_event_id="2")
    assert [e["data"]["ticket_id"] for e in ok] == [t["ticket_id"] for t in made[2:]]
    [reset] = _resume(client, FIRE, limit=1, last_event_id="1")
    assert reset["event"] == "reset" and reset["id"] == "4"  # resume from here on
    assert reset["data"]["oldest_available"] == 3 and reset["data"]["newest"] == 4
    assert "reload" in reset["data"]["reason"]


@pytest.mark.parametrize("last_event_id", ["99", "GW-abc:1:created", "-3"])
def test_an_id_that_is_not_ours_gets_a_reset(client: TestClient, last_event_id: str) -> None:
    _report(client)
    [reset] = _resume(client, FIRE, limit=1, last_event_id=last_event_id)
    assert (reset["event"], reset["id"]) == ("reset", "1")
    assert last_event_id in reset["data"]["reason"]


def test_a_bad_last_event_id_query_is_422(client: TestClient) -> None:
    response = client.get("/events?last_event_id=abc", headers=FIRE)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "last_event_id"]


def test_a_lost_bus_message_is_read_from_the_log(store, clock) -> None:  # type: ignore[no-untyped-def]
    """The bus is only a wake-up: a message that never arrives (a Redis hiccup) is found
    in the log when the next one shows a gap."""
    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth(), clock=clock)
    bus = app.state.gridwatch.bus
    with TestClient(app) as client:
        got: list[dict[str, Any]] = []
        thread = _listen(client, FIRE, got, limit=2)
        _wait_for_subscribers(bus, 1)
        publish = bus.publish
        bus.publish = lambda message: None  # the first change's message is lost
        lost = _report(client)
        bus.publish = publish
        seen = _report(client)
        thread.join(timeout=20)
    assert [e["data"]["ticket_id"] for e in got] == [lost["ticket_id"], seen["ticket_id"]]


def test_a_change_right_after_subscribing_is_delivered(store, clock) -> None:  # type: ignore[no-untyped-def]
    """Regression: the stream read the log's newest id after subscribing, so a change
    committed in between was queued but taken as already examined, and never sent."""
    import contextlib

    from tests.ticketing.builders import make_ticket

    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth(), clock=clock)
    bus = app.state.gridwatch.bus
    subscribe = bus.subscribe
    ticket = make_ticket()

    @contextlib.asynccontextmanager
    async def subscribe_then_write(maxsize: int = 1000):  # type: ignore[no-untyped-def]
        async with subscribe(maxsize) as queue:
            store.save(ticket)  # commits while this client is already subscribed
            yield queue

    bus.subscribe = subscribe_then_write
    with TestClient(app) as client:
        got = _resume(client, FIRE, limit=1)
    assert [(e["event"], e["data"]["ticket_id"]) for e in got] == [
        ("ticket.created", ticket.ticket_id)]


def test_a_backlog_longer_than_a_page_comes_whole_and_in_order(client: TestClient, store,  # type: ignore[no-untyped-def]
                                                               monkeypatch) -> None:
    import ticketing.api.routes.events as events_route
    from tests.ticketing.builders import make_ticket

    monkeypatch.setattr(events_route, "_PAGE", 4)  # the log is read 4 changes at a time
    made = [make_ticket() for _ in range(11)]
    store.save_many([(t, []) for t in made])
    got = _resume(client, FIRE, limit=11, last_event_id="0")
    assert [e["data"]["ticket_id"] for e in got] == [t.ticket_id for t in made]
    assert [e["id"] for e in got] == [str(n) for n in range(1, 12)]


def test_the_api_workers_prune_the_log(store, clock) -> None:  # type: ignore[no-untyped-def]
    from tests.ticketing.builders import make_ticket
    from ticketing.config import ChangeLogSettings, TicketingSettings

    for _ in range(5):
        store.save(make_ticket())
    settings = TicketingSettings(change_log=ChangeLogSettings(max_rows=2,
                                                              prune_interval_s=0.05))
    app = create_app(store=store, settings=settings, policies=make_policies(),
                     grid=make_grid(), auth=make_auth(), clock=clock, run_workers=True)
    with TestClient(app):
        deadline = time.monotonic() + 20
        while store.change_window() != LogWindow(4, 5):
            assert time.monotonic() < deadline, store.change_window()
            time.sleep(0.05)


def test_resume_on_another_replica(store_factory, clock) -> None:  # type: ignore[no-untyped-def]
    """The log is in the ticket database: a client that saw an id on replica A gets what
    changed since from replica B (no shared bus needed for the backlog)."""
    apps = [create_app(store=store_factory(), policies=make_policies(), grid=make_grid(),
                       auth=make_auth(), clock=clock) for _ in range(2)]
    with TestClient(apps[0]) as replica_a, TestClient(apps[1]) as replica_b:
        first = _report(replica_a)
        [seen] = _resume(replica_a, FIRE, limit=1, last_event_id="0")
        later = [_report(replica_a), _report(replica_a)]
        got = _resume(replica_b, FIRE, limit=2, last_event_id=seen["id"])
    assert seen["data"]["ticket_id"] == first["ticket_id"]
    assert [e["data"]["ticket_id"] for e in got] == [t["ticket_id"] for t in later]


def test_a_fresh_stream_starts_with_a_resume_point(client: TestClient, store) -> None:  # type: ignore[no-untyped-def]
    # a browser that saw no change before its connection dropped had no id to resume
    # from, and missed what changed while it reconnected
    from tests.ticketing.builders import make_ticket

    store.save_many([(make_ticket(), []) for _ in range(3)])
    response = client.get("/events?limit=1&idle_timeout_s=1", headers=FIRE)
    assert response.status_code == 200
    first = _blocks(response.text)[0]
    assert first == {"": "resume point", "id": "3", "retry": "2000"}
