from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from detectors.camera import load_camera_config
from detectors.sample import DEFAULT_START, render_sample_video, run_video

DEMO_CAMERA = Path(__file__).resolve().parents[2] / "sample_data/cameras/demo_camera.yaml"


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory) -> Path:
    return render_sample_video(tmp_path_factory.mktemp("v") / "sample.avi")


def test_demo_camera_finds_exactly_the_wrong_way_rider(sample_video) -> None:
    config = load_camera_config(DEMO_CAMERA)
    assert config.station_id == "st-lishui-01"
    first = [d.to_json() for d in run_video(sample_video, config)]
    again = [d.to_json() for d in run_video(sample_video, config)]
    assert first == again and len(first) == 1  # deterministic; the right-way rider is fine
    (detection,) = list(run_video(sample_video, config))
    assert detection.kind == "wrong_way_ebike"
    assert 113.10 <= detection.lon <= 113.20 and 23.00 <= detection.lat <= 23.08
    # the wrong-way rider enters at frame 48 (4.8 s) and is judged within a second
    assert detection.observed_at.isoformat().startswith("2026-05-22T12:00:05")
    assert detection.evidence.bbox_xyxy[3] >= 185


def test_event_time_comes_from_start(sample_video) -> None:
    config = load_camera_config(DEMO_CAMERA).model_copy(update={"start": None})
    start = datetime.fromisoformat("2026-05-01T12:00:00+08:00")
    (shifted,) = list(run_video(sample_video, config, start=start))
    (default,) = list(run_video(sample_video, config))
    assert shifted.observed_at - start == default.observed_at - DEFAULT_START
    with pytest.raises(ValueError, match="UTC offset"):
        list(run_video(sample_video, config, start=datetime(2026, 1, 1)))


def test_unreadable_video(tmp_path) -> None:
    config = load_camera_config(DEMO_CAMERA)
    (tmp_path / "bad.avi").write_text("not a video")
    with pytest.raises(ValueError, match="video not found"):
        list(run_video(tmp_path / "missing.avi", config))
    with pytest.raises(ValueError, match="cannot open video"):
        list(run_video(tmp_path / "bad.avi", config))
