"""ONNX pre/post-processing on tiny graphs built by the test."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.backends import OnnxBackendConfig, build_backend
from detectors.backends.onnx import LetterboxInfo, decode_yolo, from_onnx, letterbox
from detectors.testing.models import make_constant_yolo_onnx


def yolov8_output(boxes_cxcywh, scores) -> np.ndarray:
    """(1, 4 + nc, N) from per-candidate cxcywh and class-score rows."""
    rows = np.concatenate([np.asarray(boxes_cxcywh, np.float32),
                           np.asarray(scores, np.float32)], axis=1)
    return rows.T[None]


def test_letterbox_keeps_aspect_and_pads_centrally() -> None:
    frame = np.full((100, 200, 3), 255, np.uint8)
    tensor, info = letterbox(frame, (64, 64))
    assert tensor.shape == (1, 3, 64, 64) and tensor.dtype == np.float32
    assert info.scale == pytest.approx(0.32)
    assert (info.pad_x, info.pad_y) == (0.0, 16.0)
    assert tensor[0, :, 0, 0] == pytest.approx([114 / 255] * 3)   # grey pad
    assert tensor[0, :, 32, 32] == pytest.approx([1.0] * 3)       # the image


def test_letterbox_swaps_bgr_to_rgb() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR
    tensor, _ = letterbox(frame, (64, 64))
    assert tensor[0, 2, 10, 10] == pytest.approx(1.0) and tensor[0, 0, 10, 10] == 0


@pytest.mark.parametrize("fmt", ["yolov8", "yolov5", "auto"])
def test_decode_formats(fmt: str) -> None:
    boxes = [[32, 32, 20, 10], [10, 10, 4, 4]]
    scores = [[0.1, 0.9], [0.05, 0.1]]
    if fmt == "yolov5":
        out = np.concatenate([np.asarray(boxes, np.float32), np.ones((2, 1), np.float32),
                              np.asarray(scores, np.float32)], axis=1)[None]
    else:  # padded to N = 8 candidates > 6 channels, as real models are ("auto")
        out = yolov8_output(boxes + [[0, 0, 1, 1]] * 6, scores + [[0, 0]] * 6)
    xyxy, conf, cls = decode_yolo(out, fmt, 0.25)
    assert xyxy.tolist() == [[22, 27, 42, 37]]
    assert conf.tolist() == pytest.approx([0.9]) and cls.tolist() == [1]


def test_from_onnx_nms_class_filter_and_unletterbox() -> None:
    out = yolov8_output(
        [[32, 32, 20, 10], [33, 32, 20, 10], [10, 40, 8, 8], [50, 40, 8, 8]],
        [[0.9, 0.0, 0.0], [0.8, 0.0, 0.0], [0.0, 0.7, 0.0], [0.0, 0.0, 0.95]],
    )
    info = LetterboxInfo(scale=0.32, pad_x=0.0, pad_y=16.0, frame_hw=(100, 200))
    dets = from_onnx(out, info, output_format="yolov8", class_ids={0, 1}, iou_threshold=0.5)
    assert dets.class_id.tolist() == [0, 1]  # duplicate suppressed, class 2 not mapped
    assert dets.xyxy[0].tolist() == pytest.approx([68.75, 34.375, 131.25, 65.625])


def test_end_to_end_on_a_tiny_onnx_graph(tmp_path) -> None:
    out = yolov8_output([[32, 32, 16, 16], [8, 8, 4, 4]] + [[0, 0, 1, 1]] * 6,
                        [[0.0, 0.8], [0.6, 0.0]] + [[0, 0]] * 6)
    model = make_constant_yolo_onnx(tmp_path / "m.onnx", out, input_hw=(64, 64),
                                    names={0: "person", 1: "bicycle"})
    backend = build_backend(OnnxBackendConfig(model_path=model,
                                              classes={0: "person", 1: "bicycle"}))
    frame = np.zeros((128, 256, 3), np.uint8)  # scale 0.25, pad_y 16
    dets = backend.infer(frame)
    assert dets.class_id.tolist() == [1, 0]
    np.testing.assert_allclose(dets.xyxy, [[96, 32, 160, 96], [24, 0, 40, 0]])
    backend.close()


@pytest.mark.parametrize(
    ("classes", "names", "error"),
    [
        ({0: "person", 5: "bus"}, None, r"indices \[5\] but the model has 2 classes"),
        ({0: "person", 1: "car"}, {0: "person", 1: "bicycle"}, "config 'car' vs model 'bicycle'"),
        ({0: "person"}, {0: "person", 1: "bicycle"}, None),
    ],
)
def test_class_map_is_checked_at_start_up(tmp_path, classes, names, error) -> None:
    model = make_constant_yolo_onnx(tmp_path / "m.onnx", np.zeros((1, 6, 10), np.float32),
                                    names=names)
    config = OnnxBackendConfig(model_path=model, classes=classes)
    if error is None:
        assert build_backend(config).class_names == classes
    else:
        with pytest.raises(ValueError, match=error):
            build_backend(config)


def test_missing_model_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="model file not found: .*never downloaded"):
        build_backend(OnnxBackendConfig(model_path=tmp_path / "yolo11n.onnx",
                                        classes={0: "person"}))


def test_ultralytics_backend_refuses_missing_files(tmp_path) -> None:
    from detectors.backends import UltralyticsBackendConfig

    with pytest.raises(ValueError, match="model file not found"):
        build_backend(UltralyticsBackendConfig(model_path=tmp_path / "yolo11n.pt",
                                               classes={0: "person"}))


def test_from_ultralytics_adapter() -> None:
    from types import SimpleNamespace

    from detectors.backends.ultralytics import from_ultralytics

    boxes = SimpleNamespace(xyxy=np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32),
                            conf=np.array([0.9, 0.4]), cls=np.array([0.0, 2.0]))
    boxes.__len__ = lambda: 2
    result = SimpleNamespace(boxes=type("B", (), {
        "xyxy": boxes.xyxy, "conf": boxes.conf, "cls": boxes.cls, "__len__": lambda s: 2})())
    dets = from_ultralytics(result, class_ids={0})
    assert dets.class_id.tolist() == [0] and dets.xyxy.tolist() == [[1, 2, 3, 4]]
