"""Camera evidence end to end through a real Mosquitto: the snapshot an edge camera takes
for a detection reaches the centre through the outbox (also after the uplink was down),
is stored once, and is viewable through its ticket by whoever may read that ticket; bad
evidence messages are dead-lettered, counted, and never stop the ingest.

OpenCV is required (the camera test renders and reads the sample video): without it this
module fails, it never skips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2  # noqa: F401  -- a missing OpenCV must fail this module loudly
import paho.mqtt.client as mqtt
import pytest
import yaml
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from detectors.evidence_message import encode_evidence, parse_evidence
from detectors.sample import render_sample_video
from detectors.schema import Detection
from edge.agent import EdgeAgent
from edge.config import load_station_config
from gridwatch.config import GridWatchConfig
from stream.policy import KindPolicy
from tests.edge.helpers import Centre, listening, unique
from tests.support.mosquitto import MosquittoProcess
from tests.support.waiting import wait_until
from ticketing.api.app import create_app
from ticketing.auth import Principal, Role, TokenAuth
from ticketing.evidence import DirectoryBlobStore, EvidenceSettings, evidence_path

ROOT = Path(__file__).resolve().parents[2]
DEMO_CAMERA = ROOT / "sample_data" / "cameras" / "demo_camera.yaml"
START = "2026-05-04T08:00:00+08:00"
# the demo camera looks at 113.1200..113.1212 E, 23.0553..23.0557 N
CAMERA_AREA = (113.11, 23.05, 113.13, 23.06)
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 8

TOKENS = {"operator": "t-ops", "traffic": "t-traffic", "security": "t-security"}


def evidence_centre_config() -> GridWatchConfig:
    """Wrong-way e-bikes as an incident kind, so one camera detection opens a ticket."""
    incident = {"mode": "incident", "window_s": 300, "auto_dispatch": True,
                "review_below_confidence": 0.1}
    return GridWatchConfig(kinds={
        "wrong_way_ebike": KindPolicy(**incident, department="traffic_police"),
        "door_forced": KindPolicy(**incident, department="community_security"),
    })


def api(centre: Centre) -> TestClient:
    auth = TokenAuth.from_mapping({
        TOKENS["operator"]: Principal("ops", Role.OPERATOR),
        TOKENS["traffic"]: Principal("department/traffic_police", Role.DEPARTMENT,
                                     "traffic_police"),
        TOKENS["security"]: Principal("department/community_security", Role.DEPARTMENT,
                                      "community_security"),
    })
    return TestClient(create_app(store=centre.store, policies=centre.config.policies,
                                 grid=centre.grid, auth=auth, evidence=centre.evidence))


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def station_with_camera(tmp_path: Path, station: str, port: int) -> Path:
    """A station.yaml whose camera plays the rendered sample video and writes snapshots."""
    render_sample_video(tmp_path / "sample.avi")
    camera = yaml.safe_load(DEMO_CAMERA.read_text(encoding="utf-8"))
    camera.update({"station_id": station, "source_id": "cam-lane",
                   "snapshot_dir": str(tmp_path / "snapshots")})
    (tmp_path / "cameras").mkdir()
    (tmp_path / "cameras" / "cam-lane.yaml").write_text(yaml.safe_dump(camera))
    path = tmp_path / "station.yaml"
    path.write_text(
        f"station_id: {station}\n"
        "state_dir: state\n"
        f"uplink: {{port: {port}, reconnect_min_s: 1, reconnect_max_s: 1}}\n"
        "metrics: {port: 0}\n"
        "sources:\n"
        "  - type: camera\n"
        "    id: cam-lane\n"
        "    url: sample.avi\n"
        "    camera_config: cameras/cam-lane.yaml\n"
        "    lon: 113.1206\n    lat: 23.0555\n"
        "    max_fps: 30\n"
        "    file_pace: fast\n"
        f"    start: '{START}'\n", encoding="utf-8")
    return path


def test_a_snapshot_taken_while_the_uplink_is_down_is_viewable_through_its_ticket(
        tmp_path: Path) -> None:
    station = unique("st")
    broker = MosquittoProcess(tmp_path / "broker")  # not started: the uplink is down
    agent = EdgeAgent(load_station_config(station_with_camera(tmp_path, station,
                                                              broker.port)))
    cam = agent.cameras["cam-lane"]
    centre = None
    agent.start()
    try:
        # the camera sees the wrong-way rider; detection and snapshot wait in the outbox
        assert wait_until(lambda: cam.finished.is_set() and agent.outbox.depth == 2, 30), (
            agent.status())
        assert not agent.publisher or not agent.publisher.connected
        rows = agent.outbox.fetch_after(0, limit=10)
        assert [r.topic for r in rows] == [f"gridwatch/v1/{station}/cam-lane/detection",
                                           f"gridwatch/v1/{station}/cam-lane/evidence"]
        detection = Detection.model_validate_json(rows[0].payload)
        header, snapshot = parse_evidence(rows[1].payload)
        assert header.event_id == detection.event_id
        assert header.content_type == "image/jpeg" and snapshot[:3] == b"\xff\xd8\xff"
        assert detection.evidence is not None and detection.evidence.snapshot_url
        local = Path(detection.evidence.snapshot_url.removeprefix("file://"))
        assert local.parent == tmp_path / "snapshots"
        assert not local.exists()  # the outbox holds the image now (keep_local: false)

        # the uplink comes back: both arrive, the centre stores and links them
        broker.start()
        centre = Centre(tmp_path / "centre", broker.url, config=evidence_centre_config(),
                        area=CAMERA_AREA, evidence=EvidenceSettings()).start()
        evidence = centre.evidence
        assert evidence is not None
        assert wait_until(lambda: agent.outbox.depth == 0
                          and evidence.get(detection.event_id) is not None
                          and centre.ticket_event_ids()[detection.event_id] == 1, 30)
    finally:
        agent.stop()
        if centre is not None:
            centre.close()
        broker.stop()

    tickets = [t for t in centre.store.all() if detection.event_id in t.event_ids]
    assert len(tickets) == 1
    ticket = tickets[0]
    assert (ticket.kind, ticket.department) == ("wrong_way_ebike", "traffic_police")
    link = evidence_path(detection.event_id)
    assert ticket.snapshot_urls == [link]  # the centre's copy, never the edge's file
    with api(centre) as client:
        listed = client.get(f"/tickets/{ticket.ticket_id}", headers=bearer("traffic"))
        assert listed.status_code == 200
        assert listed.json()["snapshot_urls"] == [link]
        for who in ("traffic", "operator"):
            image = client.get(link, headers=bearer(who))
            assert image.status_code == 200, (who, image.text)
            assert image.headers["content-type"] == "image/jpeg"
            assert image.content == snapshot
        # a department that does not own the ticket: as if there were no such evidence
        other = client.get(link, headers=bearer("security"))
        assert other.status_code == 404
        assert "no evidence for detection" in other.json()["detail"]
        unknown = client.get(evidence_path(f"{station}:cam-lane:nothing"),
                             headers=bearer("operator"))
        assert unknown.status_code == 404


@pytest.fixture(params=[False, True], ids=["thread", "mqtt-process"])
def centre(tmp_path: Path, mqtt_url: str, request: pytest.FixtureRequest) -> Iterator[Centre]:
    """A centre keeping evidence (4 KiB per image at most), with its MQTT client in a
    thread or, as ``gridwatch serve`` runs it, in a process of its own."""
    c = Centre(tmp_path, mqtt_url, config=evidence_centre_config(), isolate=request.param,
               evidence=EvidenceSettings(max_bytes=1024 * 1024, max_item_bytes=4096)).start()
    try:
        yield c
    finally:
        c.close()


def publisher(url: str) -> mqtt.Client:
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("edge"))
    client.connect(host, int(port))
    client.loop_start()
    return client


def send(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(10)


def door(station: str, event_id: str) -> Detection:
    return Detection.new(
        event_id=event_id, observed_at=datetime.fromisoformat(START), station_id=station,
        source_id="door-1", source_type="access_control", kind="door_forced",
        confidence=0.9, lon=113.021, lat=23.021,
        evidence={"snapshot_url": "file:///var/lib/gridwatch/snap/door-1/1.jpg"})


def test_evidence_before_its_detection_repeats_and_bad_payloads(
        centre: Centre, mqtt_url: str) -> None:
    station = unique("st")
    evidence_topic = f"gridwatch/v1/{station}/door-1/evidence"
    first, second = f"{station}:e1", f"{station}:e2"
    good = encode_evidence(event_id=first, content_type="image/jpeg", image=JPEG)
    good_header = good.split(b"\n", 1)[0]
    bad: dict[str, bytes] = {
        "evidence_malformed": b"\xff\xd8\xff no header at all",
        "evidence_checksum": good_header + b"\n" + JPEG[:-1] + b"?",
        "evidence_not_an_image": encode_evidence(event_id=f"{station}:gif",
                                                 content_type="image/gif",
                                                 image=b"GIF89a" + bytes(100)),
        "evidence_content_type_mismatch": encode_evidence(
            event_id=f"{station}:png", content_type="image/png", image=JPEG),
        "evidence_too_large": encode_evidence(event_id=f"{station}:big",
                                              content_type="image/jpeg",
                                              image=JPEG[:4] + bytes(8192)),
    }
    evidence = centre.evidence
    assert evidence is not None
    client = publisher(mqtt_url)
    with listening(mqtt_url, "gridwatch/v1/deadletter") as dead:
        try:
            send(client, evidence_topic, good)  # the image first ...
            send(client, evidence_topic, good)  # ... twice (a re-send after a lost PUBACK)
            for payload in bad.values():
                send(client, evidence_topic, payload)
            # ... then its detection, and a second image after its detection
            send(client, f"gridwatch/v1/{station}/door-1/detection",
                 door(station, first).to_json().encode())
            send(client, f"gridwatch/v1/{station}/door-1/detection",
                 door(station, second).to_json().encode())
            send(client, evidence_topic,
                 encode_evidence(event_id=second, content_type="image/jpeg",
                                 image=JPEG[:200]))
            assert wait_until(lambda: evidence.get(second) is not None
                              and centre.ticket_event_ids()[second] == 1, 30)

            def mine() -> list[dict[str, Any]]:
                return [r for r in map(json.loads, dead.snapshot())
                        if r["topic"] == evidence_topic]
            assert wait_until(lambda: len(mine()) == len(bad), 15), mine()
        finally:
            client.loop_stop()
            client.disconnect()

    records = {r["code"]: r for r in mine()}
    assert set(records) == set(bad)
    assert "expected at most 4096 bytes" in records["evidence_too_large"]["reason"]
    # the dead letter carries the header, not the image
    big = records["evidence_too_large"]
    assert big["payload_truncated"] is True and big["payload_bytes"] == len(
        bad["evidence_too_large"])
    assert json.loads(big["payload"])["event_id"] == f"{station}:big"
    for event_id in (f"{station}:gif", f"{station}:png", f"{station}:big"):
        assert evidence.get(event_id) is None

    stats = evidence.stats()
    assert (stats["stored"], stats["duplicates"]) == (2, 1)
    assert evidence.read(first) == JPEG
    registry = centre.ingest.metrics.registry
    for code in ("malformed", "checksum", "not_an_image", "content_type_mismatch",
                 "too_large"):
        assert registry.get_sample_value("gridwatch_ingest_evidence_rejected_total",
                                         {"code": code}) == 1, code
    assert registry.get_sample_value("gridwatch_evidence_stored_total") == 2
    assert registry.get_sample_value("gridwatch_evidence_duplicates_total") == 1
    assert registry.get_sample_value("gridwatch_ingest_evidence_received_total") == 8

    # both orders give a working link on the ticket (one door ticket holds both)
    tickets = [t for t in centre.store.all() if first in t.event_ids]
    assert len(tickets) == 1
    assert tickets[0].snapshot_urls == [evidence_path(first), evidence_path(second)]
    with api(centre) as client_api:
        for event_id, expected in ((first, JPEG), (second, JPEG[:200])):
            response = client_api.get(evidence_path(event_id), headers=bearer("security"))
            assert response.status_code == 200 and response.content == expected
        assert client_api.get(evidence_path(first), headers=bearer("traffic")).status_code == 404


class FullDisk(DirectoryBlobStore):
    """The evidence folder on a disk that is full for the first ``failures`` writes."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put(self, key: str, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        super().put(key, data)


def test_evidence_is_acknowledged_only_once_stored(tmp_path: Path, mqtt_url: str) -> None:
    centre = Centre(tmp_path, mqtt_url, config=evidence_centre_config(),
                    evidence=EvidenceSettings())
    evidence = centre.evidence
    assert evidence is not None
    disk = FullDisk(tmp_path / "full", failures=2)
    evidence.blobs = disk
    centre.ingest.retry_after_s = 0.2
    centre.start()
    station = unique("st")
    client = publisher(mqtt_url)
    try:
        send(client, f"gridwatch/v1/{station}/door-1/evidence",
             encode_evidence(event_id=f"{station}:e1", content_type="image/jpeg", image=JPEG))
        # not acknowledged while the disk is full: the broker sends it again after the
        # ingest reconnects, until it is written
        assert wait_until(lambda: evidence.get(f"{station}:e1") is not None, 30)
    finally:
        client.loop_stop()
        client.disconnect()
        centre.close()
    assert disk.failures == 0
    assert evidence.read(f"{station}:e1") == JPEG
    assert centre.ingest.stats()["reconnects_for_redelivery"] >= 2
    assert evidence.stats()["stored"] == 1
