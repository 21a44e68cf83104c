"""Uplink and centre ingest over TLS with a login, against a real private Mosquitto.

The broker (tests.support.mosquitto.MosquittoProcess) gets a TLS listener with a certificate from a
throwaway CA made for each test (tests.support.mosquitto.make_tls_files) and a password file; every
client must log in. Passwords reach the agent and the ingest only through the environment
variables their configs name, as in production; with ``isolate`` the ingest's MQTT client
runs in a child process, which must find the CA file and the variable by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from configs.mqtt import MqttConnection, TlsSettings
from edge.agent import EdgeAgent
from edge.config import MetricsSettings, StationConfig, UplinkSettings
from tests.edge.helpers import Centre, spread_detection, unique
from tests.support.mosquitto import MosquittoProcess, TlsFiles, make_tls_files
from tests.support.waiting import wait_until

EDGE_USER, EDGE_PASSWORD_ENV = "st-test", "GRIDWATCH_TEST_UPLINK_PASSWORD"
CENTRE_USER, CENTRE_PASSWORD_ENV = "centre", "GRIDWATCH_TEST_CENTRE_PASSWORD"
PASSWORDS = {EDGE_USER: "edge-s3cret", CENTRE_USER: "centre-s3cret"}


@pytest.fixture
def pki(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "pki")


@pytest.fixture
def broker(tmp_path: Path, pki: TlsFiles,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[MosquittoProcess]:
    monkeypatch.setenv(EDGE_PASSWORD_ENV, PASSWORDS[EDGE_USER])
    monkeypatch.setenv(CENTRE_PASSWORD_ENV, PASSWORDS[CENTRE_USER])
    with MosquittoProcess(tmp_path / "broker", certfile=pki.cert_file, keyfile=pki.key_file,
                          cafile=pki.ca_file, users=PASSWORDS) as b:
        yield b


def uplink(port: int | None, ca_file: Path, **overrides: object) -> UplinkSettings:
    assert port is not None
    settings: dict[str, object] = {
        "host": "127.0.0.1", "port": port, "username": EDGE_USER,
        "password_env": EDGE_PASSWORD_ENV, "reconnect_max_s": 1,
        "tls": TlsSettings(enabled=True, ca_file=ca_file)}
    return UplinkSettings.model_validate({**settings, **overrides})


def centre_connection(broker: MosquittoProcess, ca_file: Path) -> MqttConnection:
    assert broker.tls_port is not None
    # "localhost" checks the certificate's DNS name, the uplink (127.0.0.1) its IP address
    return MqttConnection(host="localhost", port=broker.tls_port, username=CENTRE_USER,
                          password_env=CENTRE_PASSWORD_ENV, reconnect_max_s=1,
                          tls=TlsSettings(enabled=True, ca_file=ca_file))


def edge_agent(state_dir: Path, station: str, settings: UplinkSettings) -> EdgeAgent:
    return EdgeAgent(StationConfig(station_id=station, state_dir=state_dir, uplink=settings,
                                   metrics=MetricsSettings(port=0)))


def sink_detections(agent: EdgeAgent, station: str, n: int) -> list[str]:
    batch = [spread_detection(i, station=station) for i in range(n)]
    agent.sink(batch)
    return [d.event_id for d in batch]


def warnings_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in list(caplog.records)
            if r.name == logger and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("isolate", [True, False], ids=["process", "thread"])
def test_tls_and_login_deliver_every_detection_to_tickets_exactly_once(
        tmp_path: Path, broker: MosquittoProcess, pki: TlsFiles, isolate: bool) -> None:
    n = 300
    station = unique("st")
    centre = Centre(tmp_path / "centre", connection=centre_connection(broker, pki.ca_file),
                    isolate=isolate).start()
    agent = edge_agent(tmp_path / "edge", station, uplink(broker.tls_port, pki.ca_file))
    agent.start()
    try:
        ids = sink_detections(agent, station, n)
        assert wait_until(lambda: agent.outbox.depth == 0, 10), agent.status()
        assert agent.status()["uplink"]["connected"] is True
        assert wait_until(lambda: centre.ingest.stats()["committed"] >= n, 10), \
            centre.ingest.stats()
        counts = centre.ticket_event_ids()
        assert set(counts) == set(ids)
        assert max(counts.values()) == 1
        assert centre.ingest.stats()["mqtt_process_restarts"] == 0
    finally:
        agent.stop()
        centre.close()


def test_wrong_password_is_reported_and_nothing_is_lost_once_fixed(
        tmp_path: Path, broker: MosquittoProcess, pki: TlsFiles,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.publisher")
    station = unique("st")
    centre = Centre(tmp_path / "centre", connection=centre_connection(broker, pki.ca_file),
                    isolate=True).start()
    state_dir = tmp_path / "edge"
    monkeypatch.setenv(EDGE_PASSWORD_ENV, "not-the-password")
    agent = edge_agent(state_dir, station, uplink(broker.tls_port, pki.ca_file))
    agent.start()
    try:
        ids = sink_detections(agent, station, 50)

        def refused() -> bool:
            return any("refused: Not authorized" in m
                       for m in warnings_of(caplog, "edge.publisher"))

        assert wait_until(refused, 5), warnings_of(caplog, "edge.publisher")
        (message, *_) = [m for m in warnings_of(caplog, "edge.publisher") if "refused" in m]
        assert station in message
        assert f"check username '{EDGE_USER}' and the password: ${EDGE_PASSWORD_ENV}" \
            in message
        status = agent.status()
        assert status["uplink"]["connected"] is False
        assert "Not authorized" in status["uplink"]["last_error"]
        assert status["outbox"]["depth"] == 50
        assert status["restarts"].get("publisher", 0) == 0  # refused, not crashed
    finally:
        agent.stop()
    assert centre.ingest.stats()["received"] == 0

    monkeypatch.setenv(EDGE_PASSWORD_ENV, PASSWORDS[EDGE_USER])
    fixed = edge_agent(state_dir, station, uplink(broker.tls_port, pki.ca_file))
    assert fixed.outbox.depth == 50  # the same outbox, all of it still there
    fixed.start()
    try:
        assert wait_until(lambda: fixed.outbox.depth == 0, 10), fixed.status()
        assert wait_until(lambda: centre.ingest.stats()["committed"] >= 50, 10)
        counts = centre.ticket_event_ids()
        assert set(counts) == set(ids)
        assert max(counts.values()) == 1
        assert fixed.outbox.dropped == 0
    finally:
        fixed.stop()
        centre.close()


def test_a_ca_that_did_not_sign_the_broker_fails_verification_visibly(
        tmp_path: Path, broker: MosquittoProcess, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.WARNING, logger="edge.publisher")
    stranger = make_tls_files(tmp_path / "other-pki")  # a CA of its own
    station = unique("st")
    agent = edge_agent(tmp_path / "edge", station, uplink(broker.tls_port, stranger.ca_file))
    centre = Centre(tmp_path / "centre", connection=centre_connection(broker, stranger.ca_file),
                    isolate=True)
    agent.start()
    centre.ingest.start()  # the MQTT client in a child process: its log goes to stderr
    stderr: list[str] = []

    def child_logged(text: str) -> bool:
        stderr.append(capfd.readouterr().err)
        return text in "".join(stderr)

    try:
        sink_detections(agent, station, 10)

        def verify_failed() -> bool:
            return any("CERTIFICATE_VERIFY_FAILED" in m
                       for m in warnings_of(caplog, "edge.publisher"))

        assert wait_until(verify_failed, 5), warnings_of(caplog, "edge.publisher")
        (message, *_) = [m for m in warnings_of(caplog, "edge.publisher")
                         if "CERTIFICATE_VERIFY_FAILED" in m]
        assert f"station {station}: uplink 127.0.0.1:{broker.tls_port} cannot connect" \
            in message
        assert "retrying" in message
        assert wait_until(lambda: child_logged("CERTIFICATE_VERIFY_FAILED"), 10), stderr
        assert f"cannot connect to localhost:{broker.tls_port}" in "".join(stderr)

        status = agent.status()
        assert status["uplink"]["connected"] is False
        assert "CERTIFICATE_VERIFY_FAILED" in status["uplink"]["last_error"]
        assert status["outbox"]["depth"] == 10
        assert status["workers"]["publisher"] is True
        assert status["restarts"].get("publisher", 0) == 0
        assert not centre.ingest.subscribed
        assert centre.ingest.stats()["mqtt_process_restarts"] == 0
    finally:
        started = time.monotonic()
        agent.stop()
        centre.close()
        assert time.monotonic() - started < 5, "stopping must not hang on the failed link"


def test_hostname_mismatch_fails_unless_tls_insecure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``tls.insecure`` skips only the host name check: the CA is still verified."""
    caplog.set_level(logging.WARNING, logger="edge.publisher")
    pki = make_tls_files(tmp_path / "pki", hosts=["broker.gridwatch.test"])
    monkeypatch.setenv(EDGE_PASSWORD_ENV, PASSWORDS[EDGE_USER])
    station = unique("st")
    with MosquittoProcess(tmp_path / "broker", certfile=pki.cert_file, keyfile=pki.key_file,
                          users=PASSWORDS) as broker:
        strict = edge_agent(tmp_path / "edge", station, uplink(broker.tls_port, pki.ca_file))
        strict.start()
        try:
            sink_detections(strict, station, 5)
            assert wait_until(lambda: any(
                "mismatch" in m for m in warnings_of(caplog, "edge.publisher")), 5)
            assert strict.outbox.depth == 5
        finally:
            strict.stop()
        relaxed = edge_agent(tmp_path / "edge", station, uplink(
            broker.tls_port, pki.ca_file,
            tls=TlsSettings(enabled=True, ca_file=pki.ca_file, insecure=True)))
        relaxed.start()
        try:
            # no centre here: the broker's PUBACK is as far as it goes
            assert wait_until(lambda: relaxed.outbox.pending == 0, 5), relaxed.status()
        finally:
            relaxed.stop()


def test_client_certificate_logs_in_where_the_broker_requires_one(
        tmp_path: Path, pki: TlsFiles) -> None:
    station = unique("st")
    with MosquittoProcess(tmp_path / "broker", certfile=pki.cert_file, keyfile=pki.key_file,
                          cafile=pki.ca_file, require_certificate=True) as broker:
        agent = edge_agent(tmp_path / "edge", station, uplink(
            broker.tls_port, pki.ca_file, username=None, password_env=None,
            tls=TlsSettings(enabled=True, ca_file=pki.ca_file, cert_file=pki.client_cert_file,
                            key_file=pki.client_key_file)))
        agent.start()
        try:
            sink_detections(agent, station, 5)
            # no centre here: the broker's PUBACK is as far as it goes
            assert wait_until(lambda: agent.outbox.pending == 0, 5), agent.status()
        finally:
            agent.stop()


ACL = Path(__file__).resolve().parents[2] / "configs" / "mosquitto.acl"


def test_the_documented_acl_keeps_each_station_under_its_own_topics(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    users = {"st-a": "pa", "st-b": "pb", "centre": "pc"}
    own, spoof = "gridwatch/v1/st-a/smoke-1/detection", "gridwatch/v1/st-b/smoke-1/detection"

    def client(user: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique(user))
        c.username_pw_set(user, users[user])
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        assert wait_until(c.is_connected, 10)
        return c

    with MosquittoProcess(tmp_path / "acl-broker", users=users, acl_file=ACL) as broker:
        got: list[tuple[str, bytes]] = []
        subscribed: list[object] = []
        centre = client("centre")
        centre.on_subscribe = lambda c, u, mid, codes, p: subscribed.extend(codes)
        centre.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        centre.subscribe("gridwatch/v1/+/+/detection", qos=1)
        assert wait_until(lambda: bool(subscribed), 10)
        assert not any(code.is_failure for code in subscribed)  # type: ignore[attr-defined]
        station = client("st-a")
        try:
            station.publish(own, b"1", qos=1).wait_for_publish(10)
            assert wait_until(lambda: (own, b"1") in got, 10), got
            # Mosquitto 2 drops a publish its ACL denies and disconnects the client
            station.publish(spoof, b"spoof", qos=1)
            assert wait_until(lambda: not station.is_connected(), 10)
            station.loop_stop()
            station = client("st-a")  # a later message of A's: the spoof would be ahead
            station.publish(own, b"2", qos=1).wait_for_publish(10)
            assert wait_until(lambda: (own, b"2") in got, 10), got
            assert got == [(own, b"1"), (own, b"2")]
        finally:
            for c in (station, centre):
                c.loop_stop()
                c.disconnect()


def test_a_station_logged_in_under_another_name_keeps_its_detections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a box whose MQTT user is not its station_id: the ACL denies every publish, Mosquitto
    # drops the connection, and the detections stay in the outbox (nothing acknowledged)
    users = {"st-other": "po", "centre": "pc"}
    monkeypatch.setenv("GRIDWATCH_TEST_OTHER_PASSWORD", "po")
    monkeypatch.setenv(CENTRE_PASSWORD_ENV, "pc")
    with MosquittoProcess(tmp_path / "acl-broker", users=users, acl_file=ACL) as broker:
        centre = Centre(tmp_path / "centre", isolate=True, connection=MqttConnection(
            port=broker.port, username="centre", password_env=CENTRE_PASSWORD_ENV,
            reconnect_max_s=1)).start()
        station = unique("st")
        agent = edge_agent(tmp_path / "edge", station, UplinkSettings(
            host="127.0.0.1", port=broker.port, username="st-other",
            password_env="GRIDWATCH_TEST_OTHER_PASSWORD", reconnect_max_s=1))
        agent.start()
        try:
            sink_detections(agent, station, 20)

            assert wait_until(lambda: agent.status()["uplink"]["drops"] >= 2, 20), \
                agent.status()["uplink"]
            assert agent.outbox.depth == 20
            assert "ACL may deny this station's topics" in agent.status()["uplink"]["last_drop"]
        finally:
            agent.stop()
            centre.close()
        assert centre.ingest.stats()["received"] == 0


def test_the_documented_acl_lets_only_the_centre_write_receipts_and_each_station_read_its_own(
        tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from detectors.topics import receipt_topic

    users = {"st-a": "pa", "st-b": "pb", "centre": "pc"}
    mine, theirs = receipt_topic("gridwatch/v1", "st-a"), receipt_topic("gridwatch/v1", "st-b")

    def client(user: str) -> tuple[mqtt.Client, list[tuple[str, bytes]], list[object]]:
        got: list[tuple[str, bytes]] = []
        codes: list[object] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique(user))
        c.username_pw_set(user, users[user])
        c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
        c.on_subscribe = lambda cl, u, mid, reason_codes, p: codes.extend(reason_codes)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        assert wait_until(c.is_connected, 10)
        return c, got, codes

    with MosquittoProcess(tmp_path / "acl-broker", users=users, acl_file=ACL) as broker:
        station, got, codes = client("st-a")
        centre, _, _ = client("centre")
        other, _, _ = client("st-b")
        try:
            station.subscribe(mine, qos=1)
            # another station's receipts: Mosquitto 2.0 grants the subscription and then
            # withholds every message the ACL does not let this user read
            station.subscribe(theirs, qos=1)
            assert wait_until(lambda: len(codes) == 2, 10)
            centre.publish(theirs, b"for-b", qos=1).wait_for_publish(10)
            centre.publish(mine, b"for-a", qos=1).wait_for_publish(10)
            assert wait_until(lambda: (mine, b"for-a") in got, 10), got
            # a forged receipt from another station, and the station's own: both denied
            # (Mosquitto drops the publish and the connection)
            other.publish(mine, b"forged-by-b", qos=1)
            assert wait_until(lambda: not other.is_connected(), 10)
            station.publish(mine, b"forged-by-a", qos=1)
            assert wait_until(lambda: not station.is_connected(), 10)
            station.loop_stop()
            station, got2, codes2 = client("st-a")
            station.subscribe(mine, qos=1)
            assert wait_until(lambda: len(codes2) == 1, 10)
            centre.publish(mine, b"later", qos=1).wait_for_publish(10)
            assert wait_until(lambda: (mine, b"later") in got2, 10), got2
            assert got == [(mine, b"for-a")] and got2 == [(mine, b"later")]
        finally:
            for c in (station, centre, other):
                c.loop_stop()
                c.disconnect()
