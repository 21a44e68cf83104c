"""``/metrics`` for Prometheus: a token on the API port, or a loopback-only listener."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from gridwatch.metrics_http import MetricsListener, api_metrics_endpoint, is_loopback
from tests.builders import make_grid
from tests.ticketing.builders import TOKENS, make_auth, make_policies
from ticketing.api.app import create_app
from ticketing.store import SqliteTicketStore


def registry_with_a_count() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("gridwatch_test_things", "things", registry=registry).inc(3)
    return registry


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("centre.example.org", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(("token", "status"), [
    (None, 401), ("not-a-token", 401), (TOKENS["fire"], 403), (TOKENS["ingest"], 403),
    (TOKENS["admin"], 200), (TOKENS["operator"], 200), (TOKENS["integrator"], 200),
])
def test_api_port_metrics_need_a_token_that_reads_everything(
        token: str | None, status: int) -> None:
    app = create_app(store=SqliteTicketStore(":memory:"), policies=make_policies(),
                     grid=make_grid(), auth=make_auth())
    app.add_route("/metrics", api_metrics_endpoint(registry_with_a_count()), methods=["GET"])
    with TestClient(app) as client:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}
                              if token else {})
    assert response.status_code == status, response.text
    if status == 200:
        assert "gridwatch_test_things_total 3.0" in response.text
    elif status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "gridwatch_test" not in response.text
    else:
        role = "department" if token == TOKENS["fire"] else "ingest"
        assert response.json() == {"detail": f"role {role} may not read metrics (expected "
                                             f"one of: admin, integrator, operator, "
                                             f"supervisor)"}


def test_the_loopback_listener_serves_metrics_without_a_token() -> None:
    listener = MetricsListener(registry_with_a_count(), port=0)
    listener.start()
    try:
        base = f"http://127.0.0.1:{listener.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.status == 200
            assert "gridwatch_test_things_total 3.0" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/tickets", timeout=5)
        assert error.value.code == 404
    finally:
        listener.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5"])
def test_the_listener_refuses_an_address_other_hosts_can_reach(host: str) -> None:
    with pytest.raises(ValueError, match="binds only to loopback .* got"):
        MetricsListener(CollectorRegistry(), host=host, port=0)


def test_a_taken_port_fails_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listener = MetricsListener(CollectorRegistry(), port=taken.getsockname()[1])
        with pytest.raises(OSError):
            listener.start()
