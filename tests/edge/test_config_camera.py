"""station.yaml camera entries: file paths, file event time, reopen back-off."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from configs.reader import ConfigFileError
from edge.config import CameraSource, load_station_config


def load_camera(tmp_path: Path, fields: str) -> CameraSource:
    path = tmp_path / "station.yaml"
    path.write_text("station_id: s1\nsources:\n"
                    "  - {type: camera, id: c1, camera_config: c1.yaml, lon: 1, lat: 2, "
                    f"{fields}}}\n", encoding="utf-8")
    (cam,) = load_station_config(path).sources
    assert isinstance(cam, CameraSource)
    return cam


@pytest.mark.parametrize(
    ("url", "is_file", "resolved"),
    [
        ("videos/gate.avi", True, "{tmp}/videos/gate.avi"),  # relative to station.yaml
        ("/srv/gate.avi", True, "/srv/gate.avi"),
        ("rtsp://10.0.0.5/stream1", False, "rtsp://10.0.0.5/stream1"),
        ("http://10.0.0.5/mjpeg", False, "http://10.0.0.5/mjpeg"),
        ("0", False, "0"),  # a USB device index
    ],
)
def test_camera_urls(tmp_path: Path, url: str, is_file: bool, resolved: str) -> None:
    cam = load_camera(tmp_path, f"url: '{url}'")
    assert cam.is_file is is_file
    assert cam.url == resolved.format(tmp=tmp_path)


def test_camera_defaults(tmp_path: Path) -> None:
    cam = load_camera(tmp_path, "url: a.avi")
    assert (cam.file_pace, cam.loop_file, cam.start, cam.max_fps, cam.frame_queue) == (
        "realtime", False, None, 5.0, 2)
    assert (cam.reopen_min_s, cam.reopen_max_s) == (1.0, 60.0)


def test_camera_start_is_read_with_its_offset(tmp_path: Path) -> None:
    cam = load_camera(tmp_path, "url: a.avi, start: '2026-05-04T08:00:00+08:00'")
    assert cam.start == datetime.fromisoformat("2026-05-04T08:00:00+08:00")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("url: a.avi, start: '2026-05-04T08:00:00'", "start: Input should have timezone info"),
        ("url: a.avi, file_pace: turbo", "file_pace: Input should be 'realtime' or 'fast'"),
        ("url: a.avi, reopen_min_s: 10, reopen_max_s: 5",
         "reopen_min_s \\(10.0\\) must not exceed reopen_max_s \\(5.0\\)"),
        ("url: a.avi, reopen_min_s: 0", "reopen_min_s: Input should be greater than 0"),
        ("url: a.avi, frame_queue: 0", "frame_queue: Input should be greater than or equal"),
        ("url: a.avi, loop: true", "loop: Extra inputs are not permitted"),
    ],
)
def test_camera_mistakes_name_the_field(tmp_path: Path, fields: str, message: str) -> None:
    with pytest.raises(ConfigFileError, match=message):
        load_camera(tmp_path, fields)


def test_the_commented_camera_examples_are_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "station.example.yaml"
    text = example.read_text(encoding="utf-8")
    head, cameras = text.split("  # Cameras", 1)
    lines = cameras.splitlines()[1:]
    uncommented = [line.replace("  # ", "  ", 1) for line in lines if line.strip() != "#"]
    path = tmp_path / "station.yaml"
    path.write_text(head + "\n".join(uncommented) + "\n", encoding="utf-8")
    cams = [s for s in load_station_config(path).sources if isinstance(s, CameraSource)]
    assert [(c.id, c.is_file) for c in cams] == [("cam-gate", False), ("cam-demo", True)]
    assert cams[1].url == str(tmp_path / "videos" / "sample.avi")
