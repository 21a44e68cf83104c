"""Inference backends: frames in, :class:`~detectors.core.Detections` out.

Config models live here (pure pydantic, no heavy imports); each backend module imports
OpenCV / ONNX Runtime / ultralytics only when a backend is built.

* ``motion``: weight-free, OpenCV background subtraction; one class, ``moving_object``.
* ``onnx`` (default for models): YOLO-format ONNX models on ONNX Runtime.
* ``ultralytics`` (optional extra): ``.pt`` files through the ultralytics package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from detectors.core import Detections
from detectors.roles import ClassKey, normalise_class_map

MOVING_OBJECT = "moving_object"


class InferenceBackend(Protocol):
    """A detector model (or a weight-free substitute) behind one interface."""

    #: role id → role (``Detections.class_id`` carries role ids), from the class map.
    class_names: dict[int, str]

    def infer(self, frame: np.ndarray) -> Detections:
        """Boxes in ``frame`` pixels for one BGR ``uint8`` frame."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


class _BackendBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MotionBackendConfig(_BackendBase):
    """Weight-free moving-object boxes (MOG2 background subtraction).

    Attributes:
        process_width: frames are downscaled to this width before subtraction (speed).
        history: frames the background model remembers.
        var_threshold: MOG2 variance threshold; higher ignores more noise.
        min_area_px: smallest blob kept, in full-frame square pixels.
        max_area_fraction: blobs bigger than this share of the frame are dropped
            (lighting changes, camera shake).
        warmup_frames: frames used only to learn the background.
    """

    type: Literal["motion"] = "motion"
    process_width: int = Field(default=480, ge=64)
    history: int = Field(default=300, ge=1)
    var_threshold: float = Field(default=32.0, gt=0)
    min_area_px: float = Field(default=150.0, ge=0)
    max_area_fraction: float = Field(default=0.5, gt=0, le=1)
    warmup_frames: int = Field(default=5, ge=0)


class _ModelBackendBase(_BackendBase):
    model_path: Path
    classes: dict[ClassKey, str] = Field(min_length=1)
    confidence_threshold: float = Field(default=0.25, ge=0, le=1)
    iou_threshold: float = Field(default=0.45, ge=0, le=1)

    @field_validator("classes")
    @classmethod
    def _class_roles(cls, value: dict[ClassKey, str]) -> dict[ClassKey, str]:
        return normalise_class_map(value)


class OnnxBackendConfig(_ModelBackendBase):
    """A YOLO-format detection model exported to ONNX.

    Attributes:
        model_path: the ``.onnx`` file (yours; nothing is downloaded).
        classes: model class → GridWatch role, ``{index or model name: role}``, many to
            one allowed (``{Normal: person, Fall: person}``); classes not listed are
            ignored (see :mod:`detectors.roles`).
        confidence_threshold: candidates below it are dropped before NMS; the tracker's
            thresholds follow it unless set.
        input_size_hw: network input ``[h, w]``; read from the model when it is static.
        output_format: ``yolov8`` (``(1, 4+nc, N)``, also YOLO11), ``yolov5``
            (``(1, N, 5+nc)``), ``end2end`` (``(1, N, 6)`` boxes after NMS), or ``auto``.
            A forced format that does not fit the model's output is a start-up error.
        threads: ONNX Runtime intra-op threads (1 suits several cameras on a small box).
    """

    type: Literal["onnx"] = "onnx"
    input_size_hw: tuple[int, int] | None = None
    output_format: Literal["auto", "yolov8", "yolov5", "end2end"] = "auto"
    threads: int = Field(default=1, ge=1)


class UltralyticsBackendConfig(_ModelBackendBase):
    """A ``.pt`` model through the optional ``ultralytics`` extra (runs offline)."""

    type: Literal["ultralytics"] = "ultralytics"
    image_size: int = Field(default=640, ge=32)


BackendConfig = Annotated[
    MotionBackendConfig | OnnxBackendConfig | UltralyticsBackendConfig,
    Field(discriminator="type"),
]


def build_backend(config: MotionBackendConfig | OnnxBackendConfig | UltralyticsBackendConfig
                  ) -> InferenceBackend:
    """Build the backend a config describes.

    Raises:
        ValueError: a missing model file, a class map that does not match the model, or
            a missing optional dependency, said in one line.
    """
    if isinstance(config, MotionBackendConfig):
        from detectors.backends.motion import MotionBackend

        return MotionBackend(config)
    if isinstance(config, OnnxBackendConfig):
        from detectors.backends.onnx import OnnxYoloBackend

        return OnnxYoloBackend(config)
    from detectors.backends.ultralytics import UltralyticsBackend

    return UltralyticsBackend(config)
