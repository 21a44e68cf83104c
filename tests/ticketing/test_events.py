"""Live updates: server-sent events in one process, and across two API replicas fanned
out through a real Redis (department scoping applies to events too)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from fastapi.testclient import TestClient

from tests.builders import make_grid
from tests.ticketing.builders import TOKENS, make_auth, make_policies
from ticketing.api.app import create_app
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
