"""A camera end to end: video file → reader → CameraPipeline → outbox → private Mosquitto.

The synthetic sample video has one e-bike going the right way and one going the wrong way
in a bike lane. The agent, configured by a station.yaml with that video as a camera (and
a second camera that cannot be opened), must publish exactly the one ``wrong_way_ebike``
detection the offline runner finds in the same file, byte for byte.
OpenCV is required (the ``vision`` extra): without it this test fails, it never skips.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2  # noqa: F401  -- a missing OpenCV must fail this module loudly
import pytest
import yaml

from configs.reader import ConfigFileError
from detectors.camera import load_camera_config
from detectors.sample import render_sample_video, run_video
from detectors.schema import parse_detection
from edge.agent import AgentStartupError, EdgeAgent
from edge.config import load_station_config
from tests.edge.helpers import listening, unique
from tests.support.mosquitto import MosquittoProcess
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEMO_CAMERA = ROOT / "sample_data" / "cameras" / "demo_camera.yaml"
START = "2026-05-04T08:00:00+08:00"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    with MosquittoProcess(tmp_path / "broker") as b:
        yield b


def camera_yaml(tmp_path: Path, station: str, source: str, **changes: Any) -> Path:
    """The demo camera's YAML with this test's ids (and ``changes``), in ``tmp_path``."""
    data = yaml.safe_load(DEMO_CAMERA.read_text(encoding="utf-8"))
    data.update({"station_id": station, "source_id": source, **changes})
    path = tmp_path / "cameras" / f"{source}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def station_yaml(tmp_path: Path, station: str, port: int, cameras: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(
        f"station_id: {station}\n"
        "state_dir: state\n"
        f"uplink: {{port: {port}, reconnect_min_s: 1, reconnect_max_s: 1}}\n"
        "metrics: {port: 0}\n"
        f"sources:\n{cameras}", encoding="utf-8")
    return path


def test_the_sample_video_gives_exactly_one_wrong_way_detection_over_mqtt(
        tmp_path: Path, broker: MosquittoProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    station = unique("st")
    video = render_sample_video(tmp_path / "sample.avi")
    cam_yaml = camera_yaml(tmp_path, station, "cam-lane")
    camera_yaml(tmp_path, station, "cam-dead")
    config_path = station_yaml(tmp_path, station, broker.port, (
        "  - type: camera\n"
        "    id: cam-lane\n"
        "    url: sample.avi\n"  # relative to station.yaml
        "    camera_config: cameras/cam-lane.yaml\n"
        "    lon: 113.1515\n    lat: 23.0405\n"
        "    max_fps: 30\n"  # the video's 10 fps: every frame
        "    file_pace: fast\n"
        f"    start: '{START}'\n"
        "  - type: camera\n"
        "    id: cam-dead\n"
        "    url: rtsp://127.0.0.1:1/none\n"  # nothing listens on port 1
        "    camera_config: cameras/cam-dead.yaml\n"
        "    lon: 113.1515\n    lat: 23.0405\n"
        "    reopen_min_s: 0.1\n    reopen_max_s: 0.4\n"))
    config = load_station_config(config_path)
    expected = list(run_video(video, load_camera_config(cam_yaml),
                              start=datetime.fromisoformat(START)))
    assert [d.kind for d in expected] == ["wrong_way_ebike"]  # the sample's premise

    agent = EdgeAgent(config)
    cam = agent.cameras["cam-lane"]
    with listening(broker.url, f"gridwatch/v1/{station}/+/detection") as uplink:
        agent.start()
        try:
            assert wait_until(lambda: cam.finished.is_set()
                              and cam.frames_processed == cam.frames_read == 80, 20), (
                agent.status()["cameras"])
            assert wait_until(lambda: agent.outbox.pending == 0 and len(uplink.snapshot()) >= 1,
                              10)
            assert wait_until(lambda: agent.cameras["cam-dead"].open_failures >= 2, 10)
            time.sleep(0.3)  # anything else published would have arrived by now
            payloads = uplink.snapshot()
            topics = list(uplink.topics)
            status = agent.status()
        finally:
            agent.stop()

    assert len(payloads) == 1, payloads
    assert topics == [f"gridwatch/v1/{station}/cam-lane/detection"]
    detection = parse_detection(payloads[0])  # valid detection v1, or this raises
    assert payloads[0].decode() == expected[0].to_json()  # same as `gridwatch detect`
    assert detection.kind == "wrong_way_ebike"
    assert (detection.station_id, detection.source_id) == (station, "cam-lane")
    assert detection.source_type == "camera"
    assert json.loads(payloads[0])["schema"] == "gridwatch.detection/1"
    # event time: frame time from the configured start, within the wrong-way rider's pass
    # (frames 48-75 of the 10 fps sample)
    seconds = (detection.observed_at - datetime.fromisoformat(START)).total_seconds()
    assert 4.8 <= seconds <= 7.5
    # on the ground the camera's four calibration points span
    pairs = yaml.safe_load(cam_yaml.read_text())["ground"]["pixel_lon_lat_pairs"]
    lons = [lon for _, (lon, _lat) in pairs]
    lats = [lat for _, (_lon, lat) in pairs]
    assert min(lons) <= detection.lon <= max(lons)
    assert min(lats) <= detection.lat <= max(lats)

    # the dead camera: reported with station and camera id, retried, nobody restarted
    dead = [r.getMessage() for r in caplog.records
            if f"station {station} camera cam-dead: cannot open" in r.getMessage()]
    assert len(dead) >= 2
    assert status["cameras"]["cam-dead"]["open_failures"] >= 2
    assert status["cameras"]["cam-lane"] == {
        "frames_read": 80, "frames_processed": 80, "frames_dropped": 0,
        "detector_errors": 0, "open_failures": 0, "end_of_file": True,
        "healthy": True, "last_error": None}
    assert agent.metrics.registry.get_sample_value("gridwatch_edge_camera_healthy",
                                                   {"source": "cam-lane"}) == 1.0
    assert set(status["restarts"].values()) == {0}
    assert all(status["workers"].values())
    frames = agent.metrics.registry.get_sample_value("gridwatch_edge_camera_frames_total",
                                                     {"source": "cam-lane"})
    assert frames == 80


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"station_id": "someone-else"}, "station_id/source_id are someone-else/cam-1"),
        ({"detectors": [{"type": "wrong_way_ebike",
                         "backend": {"type": "onnx", "model_path": "/nonexistent/riders.onnx",
                                     "classes": {0: "bicycle"}}}]},
         "riders.onnx"),
        ({"frame_rat": 10}, "frame_rat: Extra inputs are not permitted"),
    ],
)
def test_a_bad_camera_stops_the_agent_at_start_up(tmp_path: Path, changes: dict[str, Any],
                                                   message: str) -> None:
    station = unique("st")
    camera_yaml(tmp_path, station, "cam-1", **changes)
    config_path = station_yaml(tmp_path, station, 1883, (
        "  - {type: camera, id: cam-1, url: none.avi, camera_config: cameras/cam-1.yaml,"
        " lon: 113.15, lat: 23.04}\n"))
    with pytest.raises((AgentStartupError, ConfigFileError), match=message):
        EdgeAgent(load_station_config(config_path))


def test_a_model_that_cannot_work_stops_the_agent_in_one_line(tmp_path: Path) -> None:
    """Regression (issue 14): a classifier used as the detector passed start-up, then
    failed on every frame with a traceback."""
    import numpy as np

    from tests.support.onnx_models import make_constant_classifier_onnx

    model = make_constant_classifier_onnx(tmp_path / "cls.onnx", np.array([[0.2, 0.8]]))
    station = unique("st")
    camera_yaml(tmp_path, station, "cam-1", detectors=[{
        "type": "wrong_way_ebike",
        "backend": {"type": "onnx", "model_path": str(model), "classes": {0: "bicycle"}}}])
    config_path = station_yaml(tmp_path, station, 1883, (
        "  - {type: camera, id: cam-1, url: none.avi, camera_config: cameras/cam-1.yaml,"
        " lon: 113.15, lat: 23.04}\n"))
    with pytest.raises(AgentStartupError) as info:
        EdgeAgent(load_station_config(config_path))
    message = str(info.value)
    assert "\n" not in message
    assert "detectors.0 (wrong_way_ebike)" in message and "is not a detection output" in message
