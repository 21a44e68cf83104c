"""``gridwatch serve`` as a user runs it: MQTT in (its own process), tickets out of the
API, and a clean stop that takes the MQTT process with it. Real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.publisher import wait_until
from edge.testing import MosquittoProcess, free_port
from geo.grid import Grid
from tests.edge.helpers import unique

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-test-admin-token"


def spawned_children(pid: int) -> list[int]:
    """The ingest's MQTT processes among ``pid``'s children."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [p for p in pids
            if b"gridwatch.mqtt_link" in Path(f"/proc/{p}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def tickets(port: int) -> list[dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/tickets",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.load(response)
    return body["items"] if isinstance(body, dict) else body


@pytest.mark.parametrize("extra", [[], ["--ingest-thread"]], ids=["process", "thread"])
def test_serve_turns_mqtt_detections_into_tickets_and_stops_cleanly(
        tmp_path: Path, extra: list[str]) -> None:
    api_port = free_port()
    station, source = unique("st"), "smoke-1"
    with MosquittoProcess(tmp_path / "broker") as broker:
        env = {**os.environ, "GRIDWATCH_ADMIN_TOKEN": TOKEN}
        serve = subprocess.Popen(
            [sys.executable, "-m", "gridwatch", "serve", "--grid",
             str(ROOT / "sample_data" / "grid.geojson"), "--db", str(tmp_path / "t.db"),
             "--mqtt-url", broker.url, "--client-id", unique("centre"),
             "--port", str(api_port), *extra],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        try:
            def api_up() -> bool:
                try:
                    tickets(api_port)
                    return True
                except OSError:
                    return False

            assert wait_until(api_up, 30), "the API never answered"
            mqtt_children = spawned_children(serve.pid)
            assert len(mqtt_children) == (0 if extra else 1)
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            detection = {
                "schema": "gridwatch.detection/1", "event_id": f"{station}:1",
                # now: serve dead-letters a clock far from its own (clock_skew)
                "observed_at": datetime.now(UTC).isoformat(), "station_id": station,
                "source_id": source, "source_type": "smoke_sensor", "kind": "smoke",
                "confidence": 0.95, "lon": 113.1005, "lat": 23.0045}

            def ticket_for_it() -> bool:
                # the subscription may not be in place yet: publish until a ticket shows
                pub.publish(f"gridwatch/v1/{station}/{source}/detection",
                            json.dumps(detection), qos=1).wait_for_publish(5)
                return any(f"{station}:1" in t.get("event_ids", []) for t in tickets(api_port))

            assert wait_until(ticket_for_it, 30, interval_s=0.5)
            pub.disconnect()
            pub.loop_stop()
            [ticket] = [t for t in tickets(api_port) if t["kind"] == "smoke"]
            cell = Grid.from_file(ROOT / "sample_data" / "grid.geojson").cell_at(113.1005, 23.0045)
            assert ticket["cell_id"] == cell.cell_id
            assert ticket["event_ids"] == [f"{station}:1"]
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(30) == 0, serve.stderr.read() if serve.stderr else ""
            assert wait_until(lambda: not any(alive(p) for p in mqtt_children), 10)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait(10)


def test_unreadable_tls_files_stop_serve_and_edge_at_start_with_the_path(
        tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    serve = subprocess.run(
        [sys.executable, "-m", "gridwatch", "serve", "--grid",
         str(ROOT / "sample_data" / "grid.geojson"), "--db", str(tmp_path / "t.db"),
         "--mqtt-url", "mqtts://127.0.0.1:8883", "--mqtt-ca-file", str(missing)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert serve.returncode != 0
    assert str(missing) in serve.stderr and "ca_file" in serve.stderr
    assert "Traceback" not in serve.stderr
    station = tmp_path / "station.yaml"
    station.write_text(
        f"station_id: st-tls\nstate_dir: {tmp_path / 'edge'}\n"
        f"uplink:\n  port: 8883\n  tls:\n    enabled: true\n    ca_file: {missing}\n",
        encoding="utf-8")
    edge = subprocess.run([sys.executable, "-m", "gridwatch", "edge", "run", "--config",
                           str(station)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert edge.returncode != 0
    assert str(missing) in edge.stderr and "Traceback" not in edge.stderr


def test_serve_uses_the_store_named_by_gridwatch_tickets_url(tmp_path: Path) -> None:
    # the docs say $GRIDWATCH_TICKETS_URL wins; serve used to open its --db file instead,
    # so replicas configured through the environment each wrote their own SQLite file
    api_port = free_port()
    shared, own = tmp_path / "shared.db", tmp_path / "own.db"
    env = {**os.environ, "GRIDWATCH_ADMIN_TOKEN": TOKEN,
           "GRIDWATCH_TICKETS_URL": f"sqlite:///{shared}"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "gridwatch", "serve", "--grid",
         str(ROOT / "sample_data" / "grid.geojson"), "--db", str(own), "--no-mqtt",
         "--port", str(api_port)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        def api_up() -> bool:
            try:
                tickets(api_port)
                return True
            except OSError:
                return False

        assert wait_until(api_up, 30), "the API never answered"
        assert shared.exists() and not own.exists()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
