from __future__ import annotations

import numpy as np
import pytest

from detectors.core import Detections, box_iou, non_max_suppression

from .builders import make_detections


@pytest.mark.parametrize(
    ("xyxy", "confidence", "class_id", "tracker_id", "error"),
    [
        ([[0, 0, 1, 1]], [0.5], [0], None, None),
        ([[0, 0, 1, 1]], [0.5, 0.6], [0], None, "confidence"),
        ([[0, 0, 1, 1]], [0.5], [0, 1], None, "class_id"),
        ([[0, 0, 1, 1]], [0.5], [0], [1, 2], "tracker_id"),
        ([[5, 0, 1, 1]], [0.5], [0], None, "x1 <= x2"),
        (np.zeros((0, 4)), [], [], None, None),
    ],
)
def test_detections_are_validated_once(xyxy, confidence, class_id, tracker_id, error) -> None:
    if error is None:
        batch = Detections(np.asarray(xyxy), np.asarray(confidence), np.asarray(class_id),
                           None if tracker_id is None else np.asarray(tracker_id))
        assert batch.xyxy.dtype == np.float32 and batch.class_id.dtype == np.int64
    else:
        with pytest.raises(ValueError, match=error):
            Detections(np.asarray(xyxy), np.asarray(confidence), np.asarray(class_id),
                       None if tracker_id is None else np.asarray(tracker_id))


def test_mask_filtering_keeps_columns_aligned() -> None:
    batch = make_detections((0, 0, 10, 10, 0.9, 0, 7), (0, 0, 4, 4, 0.2, 1, 8),
                            (2, 2, 6, 9, 0.7, 2, 9))
    kept = batch[batch.confidence > 0.5]
    assert kept.tracker_id.tolist() == [7, 9]
    assert kept.class_id.tolist() == [0, 2]
    assert kept.bottom_center.tolist() == [[5, 10], [4, 9]]
    assert len(batch[1]) == 1 and batch[1].tracker_id.tolist() == [8]


def test_supervision_round_trip() -> None:
    batch = make_detections((0, 0, 10, 10, 0.9, 3, 4))
    back = Detections.from_supervision(batch.to_supervision())
    assert back.xyxy.tolist() == batch.xyxy.tolist()
    assert back.class_id.tolist() == [3] and back.tracker_id.tolist() == [4]


def test_iou_and_class_aware_nms() -> None:
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]],
                    dtype=np.float32)
    assert box_iou(xyxy[:1], xyxy[1:2])[0, 0] == pytest.approx(81 / 119)
    confidence = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    keep = non_max_suppression(xyxy, confidence, np.array([0, 0, 1, 0]), 0.5)
    # box 1 is suppressed by box 0 (same class); box 2 survives (other class)
    assert keep.tolist() == [0, 2, 3]
    assert non_max_suppression(xyxy, confidence, None, 0.5).tolist() == [0, 3]
