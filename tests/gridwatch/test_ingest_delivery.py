"""Edge → Mosquitto → centre ingest → tickets, against real brokers (no mocks).

(a) 10,000 detections while the broker is stopped for part of the run and restarted: each
    event id lands on exactly one ticket, once.
(c) 1,000 malformed payloads: each dead-lettered with its reason; valid traffic between
    them is ticketed.

Both use a private Mosquitto (tests.support.mosquitto.MosquittoProcess) because (a) must stop and
restart it, and because the shared broker's default ``max_queued_messages 1000`` would drop
QoS 1 messages under this bulk load (a broker setting, documented in docs/edge.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.agent import EdgeAgent
from edge.config import MetricsSettings, StationConfig, UplinkSettings
from tests.edge.helpers import Centre, listening, spread_detection, unique
from tests.support.mosquitto import MosquittoProcess
from tests.support.waiting import wait_until


@pytest.fixture(params=[False, True], ids=["thread", "process"])
def isolate(request: pytest.FixtureRequest) -> bool:
    """The MQTT client in the ingest's thread, or in a child process (``serve``'s way)."""
    return bool(request.param)


@pytest.fixture
def broker(tmp_path: Path) -> MosquittoProcess:
    with MosquittoProcess(tmp_path / "broker") as b:
        yield b


def edge_agent(tmp_path: Path, port: int, station: str) -> EdgeAgent:
    config = StationConfig(station_id=station, state_dir=tmp_path / "edge",
                           uplink=UplinkSettings(port=port, reconnect_max_s=2),
                           metrics=MetricsSettings(port=0))
    return EdgeAgent(config)


def test_10k_detections_across_a_broker_restart_reach_tickets_exactly_once(
        tmp_path: Path, broker: MosquittoProcess, isolate: bool) -> None:
    n = 10_000
    station = unique("st")
    centre = Centre(tmp_path, broker.url, isolate=isolate).start()
    agent = edge_agent(tmp_path, broker.port, station)
    agent.start()
    try:
        ids = []
        for start in range(0, n, 100):
            batch = [spread_detection(i, station=station) for i in range(start, start + 100)]
            agent.sink(batch)
            ids += [d.event_id for d in batch]
            if start == 3000:
                broker.stop()  # uplink and centre both lose the broker mid-stream
            if start == 6000:
                assert agent.outbox.depth > 2000, "detections must pile up in the outbox"
                broker.start()
            time.sleep(0.005)
        assert wait_until(lambda: agent.outbox.depth == 0, 60), agent.status()
        # wait for the tickets themselves: "committed" also counts acknowledged repeats,
        # so it can reach n while the last ids are still on their way into tickets
        assert wait_until(lambda: centre.pipeline.stats()["processed"] >= n, 90,
                          interval_s=0.2), (centre.ingest.stats(), centre.pipeline.stats())
        counts = centre.ticket_event_ids()
        assert set(counts) == set(ids)
        assert max(counts.values()) == 1
        assert centre.pipeline.stats()["processed"] == n
        assert agent.outbox.dropped == 0
    finally:
        agent.stop()
        centre.close()


def test_malformed_payloads_are_dead_lettered_and_valid_traffic_flows(
        tmp_path: Path, broker: MosquittoProcess, isolate: bool) -> None:
    station = unique("st")
    centre = Centre(tmp_path, broker.url, isolate=isolate).start()
    bad_kinds = [
        b"{not json",
        b"[1, 2, 3]",
        b'{"schema": "gridwatch.detection/1"}',
        b"\xff\xfe\x00binary",
        b"",
    ]
    sent_bad = 0
    valid_ids = []
    with listening(broker.url, "gridwatch/v1/deadletter") as dead:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        pub.max_inflight_messages_set(100)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            infos = []
            for i in range(1000):
                if i % 200 == 0:
                    # a structurally valid detection under the wrong station's topic
                    d = spread_detection(i, station=station)
                    payload = d.to_json().encode()
                    topic = f"gridwatch/v1/other-station/{d.source_id}/detection"
                elif i % 100 == 1:
                    payload = json.dumps({**spread_detection(i, station=station).to_wire(),
                                          "confidence": 7}).encode()
                    topic = f"gridwatch/v1/{station}/door-1/detection"
                else:
                    payload = bad_kinds[i % len(bad_kinds)]
                    topic = f"gridwatch/v1/{station}/door-{i % 7}/detection"
                infos.append(pub.publish(topic, payload, qos=1))
                sent_bad += 1
                if i % 10 == 5:  # valid traffic in between
                    d = spread_detection(10_000 + i, station=station)
                    valid_ids.append(d.event_id)
                    infos.append(pub.publish(f"gridwatch/v1/{station}/{d.source_id}/detection",
                                             d.to_json().encode(), qos=1))
            for info in infos:
                info.wait_for_publish(10)
        finally:
            pub.disconnect()
            pub.loop_stop()
        assert wait_until(lambda: len(dead.snapshot()) >= sent_bad, 60)
        assert wait_until(lambda: centre.ingest.stats()["committed"] >= len(valid_ids), 60)
        records = [json.loads(p) for p in dead.snapshot()]
    stats = centre.ingest.stats()
    centre_ids = centre.ticket_event_ids()
    centre.close()

    assert len(records) == sent_bad == stats["deadlettered"] == 1000
    assert all(r["reason"] and r["code"] and r["topic"].endswith("/detection") for r in records)
    codes = {r["code"] for r in records}
    assert {"invalid_json", "not_an_object", "missing_field", "out_of_range",
            "topic_mismatch"} <= codes
    binary = [r for r in records if r.get("payload_encoding") == "base64"]
    assert binary and all(r["code"] == "invalid_json" for r in binary)
    assert set(centre_ids) == set(valid_ids)
    assert stats["accepted"] == len(valid_ids) == 100


def test_ingest_survives_its_own_restart_without_losing_queued_detections(
        tmp_path: Path, broker: MosquittoProcess, isolate: bool) -> None:
    """The persistent session: what arrives while the centre is down is delivered later."""
    station = unique("st")
    client_id = unique("centre")
    first = Centre(tmp_path / "a", broker.url, client_id=client_id, isolate=isolate).start()
    first.ingest.stop()  # the broker now queues for this session
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    ids = []
    for i in range(300):
        d = spread_detection(i, station=station)
        ids.append(d.event_id)
        pub.publish(f"gridwatch/v1/{station}/{d.source_id}/detection", d.to_json(),
                    qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    first.pipeline.close()
    second = Centre(tmp_path / "b", broker.url, client_id=client_id, isolate=isolate).start()
    try:
        assert wait_until(lambda: second.ingest.stats()["committed"] >= 300, 30)
        assert set(second.ticket_event_ids()) == set(ids)
    finally:
        second.close()


def test_metrics_count_what_the_ingest_did(tmp_path: Path, broker: MosquittoProcess,
                                           isolate: bool) -> None:
    from prometheus_client import generate_latest

    station = unique("st")
    centre = Centre(tmp_path, broker.url, isolate=isolate).start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    d = spread_detection(1, station=station)
    topic = f"gridwatch/v1/{station}/{d.source_id}/detection"
    for payload in (d.to_json(), d.to_json(), "nope"):
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    assert wait_until(lambda: centre.ingest.stats()["received"] >= 3, 10)
    centre.pipeline.drain(10)
    text = generate_latest(centre.ingest.metrics.registry).decode()
    centre.close()
    assert "gridwatch_ingest_received_total 3.0" in text
    assert "gridwatch_ingest_mqtt_process_restarts_total 0.0" in text
    assert "gridwatch_ingest_duplicates_total 1.0" in text
    assert 'gridwatch_ingest_deadlettered_total{code="invalid_json"} 1.0' in text
    (seen,) = [line for line in text.splitlines()
               if line.startswith("gridwatch_ingest_source_last_seen_timestamp_seconds{")]
    assert f'station="{station}"' in seen and f'source="{d.source_id}"' in seen


def test_bad_clocks_and_store_refusals_are_dead_lettered_and_the_rest_ticketed(
        tmp_path: Path, broker: MosquittoProcess, isolate: bool) -> None:
    """Issue 12 parts 2-3 through real Mosquitto: a year-8999 and a 1970 detection are
    dead-lettered as clock_skew, one the store refuses as store_refused with the store's
    reason; the valid smoke alarms around them are all ticketed and acknowledged, and the
    counters add up."""
    from datetime import UTC, datetime, timedelta

    from prometheus_client import generate_latest

    from tests.edge.helpers import T0
    from tests.ticketing.builders import refuse_poison

    station = unique("st")
    centre = Centre(tmp_path, broker.url, isolate=isolate,
                    skew_clock=lambda: T0 + timedelta(hours=1)).start()
    refuse_poison(centre.store)
    valid = [spread_detection(i, station=station, kind="smoke") for i in range(10)]
    bad = [
        spread_detection(100, station=station, kind="smoke").model_copy(
            update={"observed_at": datetime(8999, 1, 1, tzinfo=UTC)}),
        spread_detection(101, station=station, kind="smoke").model_copy(
            update={"observed_at": datetime(1970, 1, 1, tzinfo=UTC)}),
        spread_detection(102, station=station, kind="smoke").model_copy(
            update={"event_id": f"poison-{station}"}),
    ]
    with listening(broker.url, "gridwatch/v1/deadletter") as dead:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            for d in [*valid[:5], *bad, *valid[5:]]:
                pub.publish(f"gridwatch/v1/{station}/{d.source_id}/detection",
                            d.to_json().encode(), qos=1).wait_for_publish(10)
        finally:
            pub.disconnect()
            pub.loop_stop()
        assert wait_until(lambda: len(dead.snapshot()) >= 3, 30)
        assert wait_until(lambda: centre.ingest.stats()["committed"] >= 10, 30)
        records = [json.loads(p) for p in dead.snapshot()]
    stats = centre.ingest.stats()
    pipeline_stats = centre.pipeline.stats()
    ids = centre.ticket_event_ids()
    text = generate_latest(centre.ingest.metrics.registry).decode()
    centre.close()
    assert sorted(r["code"] for r in records) == ["clock_skew", "clock_skew", "store_refused"]
    [refused] = [r for r in records if r["code"] == "store_refused"]
    assert "IntegrityError" in refused["reason"]
    assert json.loads(refused["payload"])["event_id"] == f"poison-{station}"
    assert all("centre's clock" in r["reason"] for r in records if r["code"] == "clock_skew")
    assert set(ids) == {d.event_id for d in valid}
    assert stats["committed"] == 10 and stats["deadlettered_by_code"] == {
        "clock_skew": 2, "store_refused": 1}
    assert pipeline_stats["clock_skew_by_source"] == {
        f"{station}/{bad[0].source_id}": 1, f"{station}/{bad[1].source_id}": 1}
    assert 'gridwatch_ingest_deadlettered_total{code="clock_skew"} 2.0' in text
