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
from detectors.core import Detections, non_max_suppression
from detectors.roles import ClassRoles


def from_ultralytics(result: Any, class_ids: set[int] | None = None,
                     roles: ClassRoles | None = None) -> Detections:
    """Adapter: one ultralytics ``Results`` (``result.boxes``) → :class:`Detections`
    (class ids become role ids with ``roles``; unmapped classes are dropped)."""
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
    if roles is not None:
        keep, role_ids = roles.remap(detections.class_id)
        kept = detections[keep]
        detections = Detections(kept.xyxy, kept.confidence, role_ids)
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
        task = getattr(self._model, "task", "detect")
        if task != "detect":
            raise ValueError(f"{config.model_path}: the model's task is {task!r}, not "
                             "'detect': use a detection model here")
        names = getattr(self._model, "names", None)
        self.model_names = {int(k): str(v) for k, v in names.items()} if names else None
        self.roles = ClassRoles.resolve(
            config.classes, model_names=self.model_names,
            n_classes=len(self.model_names) if self.model_names else None,
            source=str(config.model_path))
        self.class_names = dict(self.roles.class_names)
        self.last_inference_s = 0.0
        from detectors.backends.onnx import synthetic_frame

        try:
            self.infer(synthetic_frame())
        except Exception as exc:
            raise ValueError(f"{config.model_path}: the model fails on a test frame: "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                             ) from None

    def infer(self, frame: np.ndarray) -> Detections:
        """Detections in ``frame`` pixels (class ids are role ids)."""
        import time

        started = time.perf_counter()
        results = self._model.predict(
            frame, conf=self.config.confidence_threshold, iou=self.config.iou_threshold,
            imgsz=self.config.image_size, device="cpu", verbose=False,
        )
        self.last_inference_s = time.perf_counter() - started
        detections = from_ultralytics(results[0], roles=self.roles)
        if len(detections) > 1:  # two model classes of one role must not give two boxes
            detections = detections[non_max_suppression(
                detections.xyxy, detections.confidence, detections.class_id,
                self.config.iou_threshold)]
        return detections

    def close(self) -> None:
        """Drop the model."""
        self._model = None
