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
from detectors.roles import ClassKey, ClassRoles

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
    fmt = resolve_format(tuple(raw.shape), output_format)
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


def resolve_format(output_shape: tuple[Any, ...], output_format: str) -> str:
    """The concrete format: ``auto`` is ``yolov8`` when the channel axis is the shorter."""
    if output_format != "auto":
        return output_format
    if len(output_shape) == 3 and all(isinstance(d, int) for d in output_shape[1:]):
        return "yolov8" if output_shape[1] < output_shape[2] else "yolov5"
    return "auto"


def number_of_classes(output_shape: tuple[Any, ...], output_format: str) -> int | None:
    """Classes a YOLO output carries, from its static shape (``None`` when unknown)."""
    if len(output_shape) != 3 or not all(isinstance(d, int) for d in output_shape[1:]):
        return None
    fmt = resolve_format(output_shape, output_format)
    if fmt == "yolov8":
        return int(output_shape[1]) - 4
    if fmt == "yolov5":
        return int(output_shape[2]) - 5
    return None


def output_fit_error(
    output_shape: tuple[Any, ...], output_format: str, n_model_names: int | None = None,
    task: str | None = None,
) -> str | None:
    """Why a detection output of this shape cannot be decoded as ``output_format``.

    ``None`` when it fits. Dynamic dimensions (strings or ``None``) are not judged; the
    start-up probe checks the real output instead. ``n_model_names`` is the class count
    the model's metadata gives, ``task`` its ``task`` entry (ultralytics writes both).
    """
    shape = tuple(output_shape)
    what = f"output {list(shape)}"
    if task and task != "detect":
        return (f"the model's metadata says task {task!r}, not 'detect': use a detection "
                "model here")
    if len(shape) != 3:
        hint = " (a classifier's (1, k) scores?)" if len(shape) == 2 else ""
        return (f"{what} is not a detection output{hint}: expected (1, 4+nc, N) yolov8, "
                "(1, N, 5+nc) yolov5 or (1, N, 6) end2end")
    if isinstance(shape[0], int) and shape[0] != 1:
        return f"{what}: batch size must be 1"
    _, a, b = shape
    if not (isinstance(a, int) and isinstance(b, int)):
        return None
    fmt = resolve_format(shape, output_format)
    if fmt == "end2end":
        if b != 6:
            return (f"{what} does not fit output_format end2end, which is (1, N, 6) as "
                    "x1 y1 x2 y2 score class")
        return None
    if fmt == "yolov8":
        nc, candidates, layout = a - 4, b, "(1, 4+nc, N)"
    elif fmt == "yolov5":
        nc, candidates, layout = b - 5, a, "(1, N, 5+nc)"
    else:
        return f"unknown output_format {output_format!r}"
    if nc < 1 or candidates <= nc:
        return (f"{what} does not fit output_format {fmt} {layout}: that reading gives "
                f"{nc} classes over {candidates} candidates"
                + (" (try output_format: auto)" if output_format != "auto" else ""))
    if n_model_names is not None and nc != n_model_names:
        return (f"{what} read as {fmt} has {nc} classes but the model's metadata names "
                f"{n_model_names}" + (" (wrong output_format?)" if output_format != "auto"
                                       else ""))
    return None


def _input_dtype(onnx_type: str, model_path: Path) -> Any:
    if onnx_type == "tensor(float)":
        return np.float32
    if onnx_type == "tensor(float16)":
        return np.float16
    raise ValueError(f"{model_path}: input type {onnx_type} is not supported "
                     "(float32 or float16 images expected)")


def from_onnx(
    output: npt.NDArray[np.float32],
    info: LetterboxInfo,
    *,
    output_format: str = "auto",
    confidence_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    class_ids: set[int] | None = None,
    roles: ClassRoles | None = None,
) -> Detections:
    """Adapter: raw YOLO output of one letterboxed frame → :class:`Detections` in frame
    pixels, after the class filter and class-aware NMS.

    With ``roles`` the model's classes become role ids (unmapped classes dropped) before
    NMS, so two model classes of one role never give two boxes for one object.
    """
    xyxy, confidence, class_id = decode_yolo(output, output_format, confidence_threshold)
    if class_ids is not None:
        mask = np.isin(class_id, sorted(class_ids))
        xyxy, confidence, class_id = xyxy[mask], confidence[mask], class_id[mask]
    if roles is not None:
        mask, class_id = roles.remap(class_id)
        xyxy, confidence = xyxy[mask], confidence[mask]
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


def _metadata(session: Any) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def model_class_names(session: Any) -> dict[int, str] | None:
    """Class names from the model's metadata (``names``, as ultralytics writes it)."""
    return parse_names(_metadata(session).get("names"))


def parse_names(raw: Any) -> dict[int, str] | None:
    """``{index: name}`` from a ``names`` metadata entry (dict or list, as text or not)."""
    if not raw:
        return None
    names = raw
    if isinstance(raw, str):
        try:
            names = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
    if isinstance(names, list | tuple):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        return None
    try:
        return {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        return None


def synthetic_frame(frame_hw: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A deterministic BGR frame for start-up checks: a road, a few blocks, noise."""
    h, w = frame_hw
    rng = np.random.default_rng(0)
    frame = rng.integers(60, 140, size=(h, w, 3), dtype=np.uint8)
    for i in range(3):
        x, y = (i + 1) * w // 4, h // 2
        frame[max(0, y - h // 6):y + h // 6, max(0, x - w // 20):x + w // 20] = (
            40 + 60 * i, 90, 200 - 50 * i)
    return frame


class OnnxYoloBackend:
    """A YOLO detection model on ONNX Runtime (CPU).

    At construction the model's input and output are checked and one synthetic frame is
    run through pre-processing, the model, decoding and NMS, so a model that cannot work
    fails here with one line naming the cause, not on every frame.
    """

    def __init__(self, config: OnnxBackendConfig) -> None:
        self.config = config
        path = config.model_path
        self._session = _session(path, config.threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one image input, the model has "
                             f"{[i.name for i in inputs]}")
        self._input_name = inputs[0].name
        self._input_dtype = _input_dtype(inputs[0].type, path)
        shape = inputs[0].shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ValueError(f"{path}: input {list(shape)} is not a (1, 3, h, w) image")
        if config.input_size_hw is not None:
            self.input_hw = config.input_size_hw
        elif isinstance(shape[2], int) and isinstance(shape[3], int):
            self.input_hw = (int(shape[2]), int(shape[3]))
        else:
            raise ValueError(f"{path} has a dynamic input size; set input_size_hw: [h, w]")
        output = self._session.get_outputs()[0]
        if output.type not in ("tensor(float)", "tensor(float16)"):
            raise ValueError(f"{path}: output type {output.type} is not a float tensor")
        meta = _metadata(self._session)
        self.model_names = parse_names(meta.get("names"))
        out_shape = tuple(output.shape)
        n_meta = len(self.model_names) if self.model_names else None
        problem = output_fit_error(out_shape, config.output_format, n_meta, meta.get("task"))
        if problem:
            raise ValueError(f"{path}: {problem}")
        n_classes = number_of_classes(out_shape, config.output_format) or n_meta
        self.roles = ClassRoles.resolve(config.classes, model_names=self.model_names,
                                        n_classes=n_classes, source=str(path))
        self.class_names = dict(self.roles.class_names)
        self.last_inference_s = 0.0
        self._probe(n_meta)
        logger.info("%s: classes %s", path, self.roles.describe(self.model_names))

    def _run(self, frame: np.ndarray) -> tuple[np.ndarray, LetterboxInfo]:
        tensor, info = letterbox(frame, self.input_hw)
        if self._input_dtype is not np.float32:
            tensor = tensor.astype(self._input_dtype)
        output = self._session.run(None, {self._input_name: tensor})[0]
        return np.asarray(output), info

    def _probe(self, n_meta: int | None) -> None:
        """One synthetic frame through the whole model path; raises one-line errors."""
        path = self.config.model_path
        try:
            output, info = self._run(synthetic_frame())
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"{path}: the model fails on a {self.input_hw[0]}x"
                             f"{self.input_hw[1]} image: {type(exc).__name__}: {first}"
                             ) from None
        problem = output_fit_error(tuple(output.shape), self.config.output_format, n_meta)
        if problem:
            raise ValueError(f"{path}: {problem}")
        if not np.all(np.isfinite(output.astype(np.float32))):
            raise ValueError(f"{path}: the model's output has NaN or infinite values "
                             "on a plain image")
        fmt = resolve_format(tuple(output.shape), self.config.output_format)
        if fmt == "end2end":
            classes = output[0][:, 5]
            n = n_meta or number_of_classes(tuple(output.shape), fmt)
            if np.any(classes != np.round(classes)) or np.any(classes < 0) or (
                    n is not None and np.any(classes >= n)):
                raise ValueError(f"{path}: output {list(output.shape)} read as end2end has "
                                 "class column values that are not class indices "
                                 "(wrong output_format?)")
        try:
            from_onnx(output, info, output_format=self.config.output_format,
                      confidence_threshold=self.config.confidence_threshold,
                      iou_threshold=self.config.iou_threshold, roles=self.roles)
        except ValueError as exc:
            raise ValueError(f"{path}: output {list(output.shape)} does not decode as "
                             f"{fmt}: {exc}") from None

    def infer(self, frame: np.ndarray) -> Detections:
        """Detections in ``frame`` pixels (letterbox → run → decode → roles → NMS)."""
        import time

        started = time.perf_counter()
        output, info = self._run(frame)
        self.last_inference_s = time.perf_counter() - started
        return from_onnx(
            output, info,
            output_format=self.config.output_format,
            confidence_threshold=self.config.confidence_threshold,
            iou_threshold=self.config.iou_threshold,
            roles=self.roles,
        )

    def close(self) -> None:
        """Drop the session."""
        self._session = None


class OnnxClassifier:
    """An image classifier on ONNX Runtime for crops (e.g. helmet / no helmet on heads).

    The model takes ``(1, 3, h, w)`` RGB in ``[0, 1]`` (float32 or float16) and returns
    ``(1, n_classes)`` scores (softmax applied here when they are not probabilities).
    ``classes`` maps its classes (index or metadata name) to roles, as for detectors.
    """

    def __init__(self, model_path: Path, classes: dict[ClassKey, str], threads: int = 1
                 ) -> None:
        self._session = _session(model_path, threads)
        inp = self._session.get_inputs()[0]
        if len(inp.shape) != 4 or not (isinstance(inp.shape[2], int)
                                       and isinstance(inp.shape[3], int)):
            raise ValueError(f"{model_path} must have a static (1, 3, h, w) input, got "
                             f"{list(inp.shape)}")
        self.input_hw = (int(inp.shape[2]), int(inp.shape[3]))
        self._input_name = inp.name
        self._input_dtype = _input_dtype(inp.type, model_path)
        meta = _metadata(self._session)
        out_shape = tuple(self._session.get_outputs()[0].shape)
        task = meta.get("task")
        if (task and task != "classify") or len(out_shape) != 2:
            raise ValueError(
                f"{model_path}: output {list(out_shape)} is not a classifier's (1, k) scores"
                + (f" (metadata task {task!r}); a head detector goes in head_detector"
                   if task else "; a detection model goes in head_detector")
            )
        n_classes = out_shape[-1] if isinstance(out_shape[-1], int) else None
        names = parse_names(meta.get("names"))
        self.roles = ClassRoles.resolve(classes, model_names=names, n_classes=n_classes,
                                        source=str(model_path))
        self.class_names = dict(self.roles.role_of_class)
        try:
            self.classify(synthetic_frame((64, 64)))
        except Exception as exc:
            raise ValueError(f"{model_path}: the classifier fails on a test crop: "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                             ) from None

    def classify(self, crop: np.ndarray) -> tuple[str | None, float]:
        """``(role, probability)`` of a BGR crop; role ``None`` if its class is unmapped."""
        if crop.size == 0:
            return None, 0.0
        h, w = self.input_hw
        tensor = cv2.dnn.blobFromImage(crop, 1 / 255.0, (w, h), swapRB=True)
        if self._input_dtype is not np.float32:
            tensor = tensor.astype(self._input_dtype)
        scores = np.asarray(self._session.run(None, {self._input_name: tensor})[0],
                            dtype=np.float32).reshape(-1)
        if scores.min() < 0 or abs(float(scores.sum()) - 1.0) > 1e-3:
            exp = np.exp(scores - scores.max())
            scores = exp / exp.sum()
        index = int(scores.argmax())
        return self.class_names.get(index), float(scores[index])

    def close(self) -> None:
        """Drop the session."""
        self._session = None
