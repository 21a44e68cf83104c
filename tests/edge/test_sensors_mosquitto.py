"""(d) Sensor payloads sent with ``mosquitto_pub`` become the right detections and tickets.

Everything runs on the shared broker (``mqtt_url``), isolated by a unique Zigbee2MQTT base
topic and a unique uplink topic prefix: mosquitto_pub → the edge agent (local MQTT input)
→ outbox → MQTT → the centre ingest → pipeline → tickets. A self-test makes no ticket.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from configs.mqtt import MqttConnection
from edge.agent import EdgeAgent
from edge.config import (
    AccessControlSource,
    JsonMapping,
    JsonSmokeSource,
    MetricsSettings,
    StationConfig,
    UplinkSettings,
    WebhookSettings,
    Z2mSmokeSource,
)
from tests.edge.helpers import Centre, forget_session, listening, unique
from tests.support.waiting import wait_until

MOSQUITTO_PUB = shutil.which("mosquitto_pub")


def mosquitto_pub(url: str, topic: str, payload: dict) -> None:
    parts = urlsplit(url)
    subprocess.run([MOSQUITTO_PUB or "mosquitto_pub", "-h", parts.hostname or "127.0.0.1",
                    "-p", str(parts.port or 1883), "-q", "1", "-t", topic,
                    "-m", json.dumps(payload)], check=True, timeout=10)


@pytest.fixture
def station(tmp_path: Path, mqtt_url: str) -> dict:
    assert MOSQUITTO_PUB, "mosquitto_pub is required (apt-get install mosquitto-clients)"
    parts = urlsplit(mqtt_url)
    conn = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 1883}
    station_id = unique("st")
    prefix = f"{unique('gwtest')}/v1"
    base = unique("z2m")
    config = StationConfig(
        station_id=station_id, state_dir=tmp_path / "edge",
        uplink=UplinkSettings(**conn, topic_prefix=prefix),
        local_mqtt=MqttConnection(**conn, client_id=unique("edge-in")),
        metrics=MetricsSettings(port=0), webhook=WebhookSettings(port=0),
        sources=[
            Z2mSmokeSource(type="zigbee2mqtt_smoke", id="smoke-hall", device="hall_smoke",
                           base_topic=base, lon=113.012, lat=23.012),
            JsonSmokeSource(type="mqtt_json_smoke", id="smoke-acme", topic=f"{base}/acme/1",
                            lon=113.033, lat=23.033,
                            mapping=JsonMapping(alarm_field="state.fire",
                                                alarm_values=["ALARM"])),
            AccessControlSource(type="access_control", id="door-east", topic=f"{base}/door",
                                lon=113.041, lat=23.041),
        ])
    agent = EdgeAgent(config)
    centre = Centre(tmp_path, mqtt_url, topic_prefix=prefix).start()
    with listening(mqtt_url, f"{prefix}/{station_id}/+/detection") as uplink:
        agent.start()
        assert wait_until(lambda: bool(agent.publisher and agent.publisher.connected), 10)
        assert wait_until(lambda: agent.workers.alive().get("local-mqtt", False), 10)
        yield {"agent": agent, "centre": centre, "uplink": uplink, "base": base,
               "url": mqtt_url, "station_id": station_id}
        agent.stop()
    centre.close()
    forget_session(config.local_mqtt, str(config.local_mqtt.client_id))


def detections(uplink: object, n: int) -> list[dict]:
    assert wait_until(lambda: len(uplink.snapshot()) >= n, 15), uplink.snapshot()  # type: ignore[attr-defined]
    return [json.loads(p) for p in uplink.snapshot()]  # type: ignore[attr-defined]


def test_zigbee2mqtt_alarm_and_self_test(station: dict) -> None:
    url, base, uplink = station["url"], station["base"], station["uplink"]
    topic = f"{base}/hall_smoke"
    # the local input subscribes asynchronously: wait until a message is seen
    mosquitto_pub(url, topic, {"smoke": False, "battery": 100, "linkquality": 120})
    assert wait_until(lambda: station["agent"].status()["sources"]["smoke-hall"] is not None, 10)
    mosquitto_pub(url, topic, {"smoke": False, "test": True, "battery_low": False,
                               "tamper": False, "linkquality": 118})
    mosquitto_pub(url, topic, {"smoke": False, "test": False, "linkquality": 118})
    mosquitto_pub(url, topic, {"smoke": True, "test": False, "battery_low": True,
                               "tamper": False, "linkquality": 87})
    mosquitto_pub(url, topic, {"smoke": True, "linkquality": 86})  # still burning: no repeat
    got = detections(uplink, 2)
    assert len(got) == 2
    test, alarm = got
    assert test["kind"] == alarm["kind"] == "smoke"
    assert test["attributes"]["test"] is True and test["attributes"]["reason"] == "self_test"
    assert alarm["attributes"] == {"reason": "rising", "battery_low": True, "tamper": False,
                                   "linkquality": 87, "active_since": alarm["observed_at"]
                                   .replace("+00:00", "Z")}
    assert "test" not in alarm["attributes"]
    for d in got:
        assert d["station_id"] == station["station_id"]
        assert d["source_id"] == "smoke-hall" and d["source_type"] == "smoke_sensor"
        assert (d["lon"], d["lat"]) == (113.012, 23.012)

    centre = station["centre"]
    assert wait_until(lambda: centre.ingest.stats()["committed"] >= 2, 15)
    tickets = list(centre.store.all())
    assert [t.event_ids for t in tickets] == [[alarm["event_id"]]]  # the self-test: none
    assert tickets[0].kind == "smoke"
    assert centre.pipeline.stats()["stream"]["self_tests"] == 1


def test_vendor_json_and_door_over_mqtt(station: dict) -> None:
    url, base, uplink = station["url"], station["base"], station["uplink"]
    mosquitto_pub(url, f"{base}/door", {"event": "close"})
    assert wait_until(lambda: station["agent"].status()["sources"]["door-east"] is not None, 10)
    mosquitto_pub(url, f"{base}/acme/1", {"state": {"fire": "ALARM"}})
    mosquitto_pub(url, f"{base}/door", {"event": "forced"})
    mosquitto_pub(url, f"{base}/door", {"event": "teleported"})  # counted, not fatal
    got = detections(uplink, 2)
    assert sorted((d["source_id"], d["kind"]) for d in got) == [
        ("door-east", "door_forced"), ("smoke-acme", "smoke")]
    centre = station["centre"]
    assert wait_until(lambda: centre.ingest.stats()["committed"] >= 2, 15)
    assert sorted(t.kind for t in centre.store.all()) == ["door_forced", "smoke"]
    bad = station["agent"].metrics.bad_payloads.labels("door-east")._value.get()
    assert bad == 1
