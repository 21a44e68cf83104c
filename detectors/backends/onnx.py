"""ONNX Runtime backend for YOLO-format detection models, plus a crop classifier.

Pre- and post-processing are plain functions (:func:`letterbox`, :func:`decode_yolo`,
:func:`from_onnx`) so they are tested without a real model.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from detectors.backends import OnnxBackendConfig
from detectors.core import Detections, non_max_suppression

logger = logging.getLogger(__name__)

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxInfo:
    """How a frame was fitted into the network input: ``input = frame * scale + pad``."""

    scale: float
    pad_x: float
    pad_y: float
    frame_hw: tuple[int, int]


def letterbox(frame: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize keeping the aspect ratio, pad to ``input_hw`` with grey, make an NCHW tensor.

    Returns:
        ``(tensor, info)``: a ``(1, 3, h, w)`` float32 RGB tensor in ``[0, 1]`` and what
        :func:`from_onnx` needs to map boxes back.
    """
    frame_h, frame_w = frame.shape[:2]
    in_h, in_w = input_hw
    scale = min(in_h / frame_h, in_w / frame_w)
    new_w, new_h = round(frame_w * scale), round(frame_h * scale)
    resized = (
        cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if (new_w, new_h) != (frame_w, frame_h)
        else frame
    )
    pad_x, pad_y = (in_w - new_w) / 2, (in_h - new_h) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    canvas = cv2.copyMakeBorder(
        resized, top, in_h - new_h - top, left, in_w - new_w - left,
        cv2.BORDER_CONSTANT, value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    tensor = cv2.dnn.blobFromImage(canvas, scalefactor=1 / 255.0, swapRB=True)
    return tensor, LetterboxInfo(scale, float(left), float(top), (frame_h, frame_w))


def decode_yolo(
    output: npt.NDArray[np.float32],
    output_format: str,
    confidence_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw YOLO output → ``(xyxy, confidence, class_id)`` in network-input pixels.

    Args:
        output: the model's first output, batch size 1.
        output_format: ``yolov8`` ``(1, 4+nc, N)``, ``yolov5`` ``(1, N, 5+nc)``,
            ``end2end`` ``(1, N, 6)`` as ``x1, y1, x2, y2, score, class``, or ``auto``
            (``yolov8`` when the channel axis is the shorter one, else ``yolov5``).
        confidence_threshold: candidates below it are dropped before NMS.
    """
    raw = np.asarray(output, dtype=np.float32)
    if raw.ndim != 3 or raw.shape[0] != 1:
        raise ValueError(f"expected a (1, ., .) YOLO output, got shape {raw.shape}")
    fmt = output_format
    if fmt == "auto":
        fmt = "yolov8" if raw.shape[1] < raw.shape[2] else "yolov5"
    if fmt == "end2end":
        rows = raw[0]
        keep = rows[:, 4] >= confidence_threshold
        rows = rows[keep]
        return rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64)
    if fmt == "yolov8":
        rows = raw[0].T  # (N, 4 + nc)
        scores_all = rows[:, 4:]
    elif fmt == "yolov5":
        rows = raw[0]
        scores_all = rows[:, 5:] * rows[:, 4:5]
    else:
        raise ValueError(f"unknown output_format {output_format!r}")
    if scores_all.shape[1] == 0:
        raise ValueError(f"YOLO output {raw.shape} has no class channels for {fmt}")
    class_id = scores_all.argmax(axis=1)
    confidence = scores_all[np.arange(len(rows)), class_id]
    keep = confidence >= confidence_threshold
    cxcywh = rows[keep, :4]
    xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2],
                          axis=1)
    return xyxy, confidence[keep], class_id[keep].astype(np.int64)


def number_of_classes(output_shape: tuple[Any, ...], output_format: str) -> int | None:
    """Classes a YOLO output carries, from its static shape (``None`` when unknown)."""
    if len(output_shape) != 3 or not all(isinstance(d, int) for d in output_shape[1:]):
        return None
    fmt = output_format
    if fmt == "auto":
        fmt = "yolov8" if output_shape[1] < output_shape[2] else "yolov5"
    if fmt == "yolov8":
        return int(output_shape[1]) - 4
    if fmt == "yolov5":
        return int(output_shape[2]) - 5
    return None


def from_onnx(
    output: npt.NDArray[np.float32],
    info: LetterboxInfo,
    *,
    output_format: str = "auto",
    confidence_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    class_ids: set[int] | None = None,
) -> Detections:
    """Adapter: raw YOLO output of one letterboxed frame → :class:`Detections` in frame
    pixels, after the class filter and class-aware NMS."""
    xyxy, confidence, class_id = decode_yolo(output, output_format, confidence_threshold)
    if class_ids is not None:
        mask = np.isin(class_id, sorted(class_ids))
        xyxy, confidence, class_id = xyxy[mask], confidence[mask], class_id[mask]
    if output_format != "end2end" and len(xyxy):
        keep = non_max_suppression(xyxy, confidence, class_id, iou_threshold)
        xyxy, confidence, class_id = xyxy[keep], confidence[keep], class_id[keep]
    if not len(xyxy):
        return Detections.empty()
    xyxy = xyxy.copy()
    xyxy[:, [0, 2]] = (xyxy[:, [0, 2]] - info.pad_x) / info.scale
    xyxy[:, [1, 3]] = (xyxy[:, [1, 3]] - info.pad_y) / info.scale
    frame_h, frame_w = info.frame_hw
    xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, frame_w)
    xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, frame_h)
    return Detections(xyxy=xyxy, confidence=np.clip(confidence, 0, 1), class_id=class_id)


def _session(model_path: Path, threads: int) -> Any:
    if not model_path.is_file():
        raise ValueError(f"model file not found: {model_path} (models are never downloaded)")
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError("the onnx backend needs onnxruntime: pip install 'gridwatch[vision]'"
                         ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ValueError(f"cannot load ONNX model {model_path}: {exc}") from exc


def model_class_names(session: Any) -> dict[int, str] | None:
    """Class names from the model's metadata (``names``, as ultralytics writes it)."""
    meta = session.get_modelmeta().custom_metadata_map
    raw = meta.get("names")
    if not raw:
        return None
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    if isinstance(names, list):
        names = dict(enumerate(names))
    return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else None


def check_class_map(
    classes: dict[int, str], model_names: dict[int, str] | None, n_classes: int | None,
    model_path: Path,
) -> None:
    """Refuse a class map that cannot belong to this model.

    Raises:
        ValueError: an index the model does not have, or a name that disagrees with the
            model's own metadata.
    """
    if n_classes is not None:
        outside = sorted(k for k in classes if k >= n_classes)
        if outside:
            raise ValueError(
                f"class map of {model_path} lists indices {outside} but the model has "
                f"{n_classes} classes (0..{n_classes - 1})"
            )
    if model_names:
        wrong = {k: (v, model_names.get(k)) for k, v in classes.items()
                 if model_names.get(k) != v}
        if wrong:
            detail = ", ".join(f"{k}: config {a!r} vs model {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(f"class map does not match the names in {model_path}: {detail}")


class OnnxYoloBackend:
    """A YOLO detection model on ONNX Runtime (CPU)."""

    def __init__(self, config: OnnxBackendConfig) -> None:
        self.config = config
        self._session = _session(config.model_path, config.threads)
        inputs = self._session.get_inputs()
        self._input_name = inputs[0].name
        shape = inputs[0].shape
        if config.input_size_hw is not None:
            self.input_hw = config.input_size_hw
        elif len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            self.input_hw = (int(shape[2]), int(shape[3]))
        else:
            raise ValueError(
                f"{config.model_path} has a dynamic input size; set input_size_hw: [h, w]"
            )
        out_shape = tuple(self._session.get_outputs()[0].shape)
        check_class_map(
            config.classes,
            model_class_names(self._session),
            number_of_classes(out_shape, config.output_format),
            config.model_path,
        )
        self.class_names = dict(config.classes)
        self._class_ids = set(config.classes)
        self.last_inference_s = 0.0

    def infer(self, frame: np.ndarray) -> Detections:
        """Detections in ``frame`` pixels (letterbox → run → decode → NMS)."""
        import time

        tensor, info = letterbox(frame, self.input_hw)
        started = time.perf_counter()
        output = self._session.run(None, {self._input_name: tensor})[0]
        self.last_inference_s = time.perf_counter() - started
        return from_onnx(
            output, info,
            output_format=self.config.output_format,
            confidence_threshold=self.config.confidence_threshold,
            iou_threshold=self.config.iou_threshold,
            class_ids=self._class_ids,
        )

    def close(self) -> None:
        """Drop the session."""
        self._session = None


class OnnxClassifier:
    """An image classifier on ONNX Runtime for crops (e.g. helmet / no helmet on heads).

    The model takes ``(1, 3, h, w)`` RGB in ``[0, 1]`` and returns ``(1, n_classes)``
    scores (softmax applied here when they are not probabilities already).
    """

    def __init__(self, model_path: Path, classes: dict[int, str], threads: int = 1) -> None:
        self._session = _session(model_path, threads)
        inp = self._session.get_inputs()[0]
        if not (isinstance(inp.shape[2], int) and isinstance(inp.shape[3], int)):
            raise ValueError(f"{model_path} must have a static input size")
        self.input_hw = (int(inp.shape[2]), int(inp.shape[3]))
        self._input_name = inp.name
        out_shape = tuple(self._session.get_outputs()[0].shape)
        n_classes = out_shape[-1] if isinstance(out_shape[-1], int) else None
        check_class_map(classes, model_class_names(self._session), n_classes, model_path)
        self.class_names = dict(classes)

    def classify(self, crop: np.ndarray) -> tuple[str | None, float]:
        """``(class name, probability)`` of a BGR crop; name ``None`` if unmapped."""
        if crop.size == 0:
            return None, 0.0
        h, w = self.input_hw
        tensor = cv2.dnn.blobFromImage(crop, 1 / 255.0, (w, h), swapRB=True)
        scores = np.asarray(self._session.run(None, {self._input_name: tensor})[0])[0]
        if scores.min() < 0 or abs(float(scores.sum()) - 1.0) > 1e-3:
            exp = np.exp(scores - scores.max())
            scores = exp / exp.sum()
        index = int(scores.argmax())
        return self.class_names.get(index), float(scores[index])

    def close(self) -> None:
        """Drop the session."""
        self._session = None
