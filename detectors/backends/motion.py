"""Weight-free backend: moving blobs from OpenCV background subtraction.

A camera without a model still sees *that* something moves and *where*; with tracking
and a lane that is enough to catch wrong-way movement in a bike lane.
"""

from __future__ import annotations

import cv2
import numpy as np

from detectors.backends import MOVING_OBJECT, MotionBackendConfig
from detectors.core import Detections


class MotionBackend:
    """MOG2 foreground → morphology → contours → boxes (class 0, ``moving_object``).

    Confidence is the blob's foreground fill ratio, so a solid object scores higher than
    a sparse flicker.
    """

    def __init__(self, config: MotionBackendConfig) -> None:
        self.config = config
        self.class_names = {0: MOVING_OBJECT}
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=config.history, varThreshold=config.var_threshold, detectShadows=True
        )
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._frames = 0

    def infer(self, frame: np.ndarray) -> Detections:
        """Moving-object boxes in ``frame`` pixels."""
        height, width = frame.shape[:2]
        scale = min(1.0, self.config.process_width / width)
        small = (
            cv2.resize(frame, (round(width * scale), round(height * scale)),
                       interpolation=cv2.INTER_AREA)
            if scale < 1.0
            else frame
        )
        small = cv2.GaussianBlur(small, (5, 5), 0)
        # Auto learning rate (1/frames) while warming up, then a fixed 1/history: with the
        # auto rate a rider who stops early in a stream would melt into the background.
        rate = -1.0 if self._frames < self.config.warmup_frames else 1.0 / self.config.history
        mask = self._subtractor.apply(small, learningRate=rate)
        self._frames += 1
        if self._frames <= self.config.warmup_frames:
            return Detections.empty()
        # 127 marks shadows in MOG2; only confident foreground counts.
        _, mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        mask = cv2.dilate(mask, self._kernel, iterations=2)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._kernel, iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_area = self.config.min_area_px * scale * scale
        max_area = self.config.max_area_fraction * small.shape[0] * small.shape[1]
        boxes: list[list[float]] = []
        scores: list[float] = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            box_area = float(w * h)
            if box_area < min_area or box_area > max_area:
                continue
            fill = float(cv2.contourArea(contour)) / max(box_area, 1.0)
            boxes.append([x / scale, y / scale, (x + w) / scale, (y + h) / scale])
            scores.append(min(1.0, 0.5 + 0.5 * fill))
        if not boxes:
            return Detections.empty()
        xyxy = np.asarray(boxes, dtype=np.float32)
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, width)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, height)
        # Stable order (top-left first) keeps the whole pipeline deterministic.
        order = np.lexsort((xyxy[:, 0], xyxy[:, 1]))
        return Detections(
            xyxy=xyxy[order],
            confidence=np.asarray(scores, dtype=np.float32)[order],
            class_id=np.zeros(len(boxes), dtype=np.int64),
        )

    def close(self) -> None:
        """Nothing to release."""
