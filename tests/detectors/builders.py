"""Small builders for detector tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from detectors.core import Detections
from detectors.inference import TrackedFrame

T0 = datetime.fromisoformat("2026-01-01T08:00:00+08:00")
VTEST_AVI = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
HELMET_CLASSES = {0: "person", 1: "bicycle", 2: "helmet", 3: "no_helmet"}


def at(index: int, fps: float = 10.0) -> datetime:
    """Event time of frame ``index``."""
    return T0 + timedelta(seconds=index / fps)


def make_detections(*rows: tuple[Any, ...], tracked: bool = True) -> Detections:
    """``make_detections((x1, y1, x2, y2, conf, class_id, track_id), ...)``."""
    if not rows:
        empty = Detections.empty()
        return empty.with_tracker_id([]) if tracked else empty
    arr = np.asarray(rows, dtype=np.float64)
    return Detections(
        xyxy=arr[:, :4], confidence=arr[:, 4], class_id=arr[:, 5].astype(int),
        tracker_id=arr[:, 6].astype(int) if tracked else None,
    )


def make_tracked(*rows: tuple[Any, ...], names: dict[int, str] | None = None) -> TrackedFrame:
    """A tracked frame for decision-logic tests."""
    return TrackedFrame(make_detections(*rows), names or HELMET_CLASSES)


def camera_dict(**overrides: Any) -> dict[str, Any]:
    """A valid camera config (320×240, one lane left → right, motion wrong-way)."""
    data: dict[str, Any] = {
        "station_id": "st-1",
        "source_id": "cam-1",
        "frame_rate": 10,
        "ground": {"fixed_lon_lat": [113.15, 23.04]},
        "lanes": [{"name": "bike", "polygon_xy": [[0, 120], [320, 120], [320, 215], [0, 215]],
                   "direction_xy": [[0, 168], [320, 168]]}],
        "detectors": [{"type": "wrong_way_ebike", "backend": {"type": "motion",
                                                             "warmup_frames": 2}}],
    }
    data.update(overrides)
    return data
