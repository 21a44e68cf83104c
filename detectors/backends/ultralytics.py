"""Optional backend: ``.pt`` models through the ultralytics package (``gridwatch[ultralytics]``).

Runs offline: ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=0`` are set before import and
the model must be a local file, so nothing is fetched by name.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from detectors.backends import UltralyticsBackendConfig
from detectors.backends.onnx import check_class_map
from detectors.core import Detections


def from_ultralytics(result: Any, class_ids: set[int] | None = None) -> Detections:
    """Adapter: one ultralytics ``Results`` (``result.boxes``) → :class:`Detections`."""
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return Detections.empty()

    def to_numpy(value: Any) -> np.ndarray:
        return np.asarray(value.cpu().numpy() if hasattr(value, "cpu") else value)

    detections = Detections(
        xyxy=to_numpy(boxes.xyxy), confidence=to_numpy(boxes.conf), class_id=to_numpy(boxes.cls)
    )
    if class_ids is not None:
        detections = detections[np.isin(detections.class_id, sorted(class_ids))]
    return detections


class UltralyticsBackend:
    """A ``.pt`` (or any ultralytics-loadable local file) detection model on CPU."""

    def __init__(self, config: UltralyticsBackendConfig) -> None:
        if not config.model_path.is_file():
            raise ValueError(
                f"model file not found: {config.model_path} (models are never downloaded)"
            )
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "0")
        os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "gw-yolo"))
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise ValueError(
                "the ultralytics backend needs the optional extra: "
                "pip install 'gridwatch[ultralytics]' (or export the model to ONNX)"
            ) from exc
        self.config = config
        self._model = YOLO(str(config.model_path), task="detect")
        names = getattr(self._model, "names", None)
        model_names = {int(k): str(v) for k, v in names.items()} if names else None
        check_class_map(config.classes, model_names,
                        len(model_names) if model_names else None, config.model_path)
        self.class_names = dict(config.classes)
        self._class_ids = set(config.classes)

    def infer(self, frame: np.ndarray) -> Detections:
        """Detections in ``frame`` pixels."""
        results = self._model.predict(
            frame, conf=self.config.confidence_threshold, iou=self.config.iou_threshold,
            imgsz=self.config.image_size, device="cpu", verbose=False,
        )
        return from_ultralytics(results[0], self._class_ids)

    def close(self) -> None:
        """Drop the model."""
        self._model = None
