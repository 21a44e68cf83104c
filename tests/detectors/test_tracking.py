"""ByteTrack settings: thresholds follow the detector's unless set."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.core import Detections
from detectors.tracking import ByteTracker, TrackerConfig


@pytest.mark.parametrize(
    ("config", "detector_threshold", "expected"),
    [
        ({}, 0.25, (0.25, 0.25)),
        ({}, 0.4, (0.4, 0.4)),
        ({"activation_threshold": 0.5}, 0.25, (0.5, 0.5)),
        ({"activation_threshold": 0.3, "high_confidence_threshold": 0.6}, 0.25, (0.3, 0.6)),
        ({}, None, (0.5, 0.6)),  # the motion backend keeps ByteTrack's fixed defaults
    ],
)
def test_thresholds_follow_the_detector(config, detector_threshold, expected) -> None:
    resolved = TrackerConfig(**config).resolved(detector_threshold)
    assert (resolved.activation_threshold, resolved.high_confidence_threshold) == expected


def walk(tracker: ByteTracker, confidence: float, frames: int = 6) -> set[int]:
    ids: set[int] = set()
    for i in range(frames):
        box = np.array([[10 + 5 * i, 10, 40 + 5 * i, 80]], np.float32)
        out = tracker.update(Detections(box, [confidence], [0]), i / 10)
        ids |= set(out.tracker_id.tolist())
    return ids


def test_a_person_the_detector_keeps_is_tracked() -> None:
    """Regression (issue 14): people scored 0.27–0.6 were never tracked with the fixed
    0.5 / 0.6 thresholds above the detector's 0.25."""
    following = ByteTracker(TrackerConfig().resolved(0.25), 10)
    assert len(walk(following, 0.3)) == 1
    fixed = ByteTracker(TrackerConfig(activation_threshold=0.5,
                                      high_confidence_threshold=0.6), 10)
    assert walk(fixed, 0.3) == set()
