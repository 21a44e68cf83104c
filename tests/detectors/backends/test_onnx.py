"""ONNX pre/post-processing on tiny graphs built by the test."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.backends import OnnxBackendConfig, build_backend
from detectors.backends.onnx import LetterboxInfo, decode_yolo, from_onnx, letterbox
from tests.support.onnx_models import make_constant_yolo_onnx


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
    assert [backend.class_names[c] for c in dets.class_id.tolist()] == ["bicycle", "person"]
    np.testing.assert_allclose(dets.xyxy, [[96, 32, 160, 96], [24, 0, 40, 0]])
    backend.close()


@pytest.mark.parametrize(
    ("classes", "names", "roles", "error"),
    [
        ({0: "person", 5: "bus"}, None, None, r"indices \[5\] but the model has 2 classes"),
        ({"Normal": "person"}, None, None, "carries no class names; use its class indices"),
        ({"Walking": "person"}, {0: "Normal", 1: "Fall"}, None,
         r"names class 'Walking', which the model does not have; its classes: "
         r"\{0: 'Normal', 1: 'Fall'\}"),
        ({0: "person", "Normal": "rider"}, {0: "Normal", 1: "Fall"}, None,
         "lists class 0 twice"),
        # roles, not model names: the model calls class 0 "Normal"
        ({0: "person"}, {0: "Normal", 1: "Fall"}, {0: "person"}, None),
        ({0: "person", 1: "person"}, {0: "Normal", 1: "Fall"}, {0: "person"}, None),
        ({"Normal": "person", "Fall": "person"}, {0: "Normal", 1: "Fall"}, {0: "person"},
         None),
        ({"1": "bicycle", 0: "person"}, None, {0: "bicycle", 1: "person"}, None),
    ],
)
def test_class_map_maps_model_classes_to_roles(tmp_path, classes, names, roles, error
                                               ) -> None:
    model = make_constant_yolo_onnx(tmp_path / "m.onnx", np.zeros((1, 6, 10), np.float32),
                                    names=names)
    config = OnnxBackendConfig(model_path=model, classes=classes)
    if error is None:
        assert build_backend(config).class_names == roles
    else:
        with pytest.raises(ValueError, match=error):
            build_backend(config)


def test_two_classes_of_one_role_give_one_box(tmp_path) -> None:
    # the same person scored as "Normal" (0.5) and as "Fall" (0.45): one person box
    out = yolov8_output([[32, 32, 16, 16], [32, 33, 16, 16]] + [[0, 0, 1, 1]] * 6,
                        [[0.5, 0.0], [0.0, 0.45]] + [[0, 0]] * 6)
    model = make_constant_yolo_onnx(tmp_path / "m.onnx", out, names={0: "Normal", 1: "Fall"})
    backend = build_backend(OnnxBackendConfig(
        model_path=model, classes={"Normal": "person", "Fall": "person"}))
    dets = backend.infer(np.zeros((64, 64, 3), np.uint8))
    assert len(dets) == 1 and dets.confidence.tolist() == pytest.approx([0.5])
    assert backend.class_names[int(dets.class_id[0])] == "person"


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


# -- fail fast: a model that cannot work is refused at start-up in one line --------------

def _yolov8_people(n_candidates: int = 8) -> np.ndarray:
    return yolov8_output([[32, 32, 16, 16]] + [[0, 0, 1, 1]] * (n_candidates - 1),
                         [[0.0, 0.8]] + [[0, 0]] * (n_candidates - 1))


@pytest.mark.parametrize(
    ("output", "kwargs", "config", "error"),
    [
        # a classifier used as the detector
        (np.array([[0.1, 0.9]], np.float32), {}, {},
         r"output \[1, 2\] is not a detection output \(a classifier's \(1, k\) scores\?\)"),
        (np.zeros((1, 6, 8), np.float32), {"metadata": {"task": "classify"}}, {},
         "metadata says task 'classify', not 'detect'"),
        # a forced format that does not fit
        (_yolov8_people(16), {"names": {0: "Normal", 1: "Fall"}},
         {"output_format": "yolov5"},
         r"does not fit output_format yolov5 \(1, N, 5\+nc\): that reading gives 11 classes "
         r"over 6 candidates \(try output_format: auto\)"),
        (_yolov8_people(), {"names": {0: "Normal", 1: "Fall"}}, {"output_format": "yolov5"},
         r"read as yolov5 has 3 classes but the model's metadata names 2 "
         r"\(wrong output_format\?\)"),
        (_yolov8_people(), {}, {"output_format": "end2end"},
         r"output \[1, 6, 8\] does not fit output_format end2end"),
        # class count contradicts the metadata
        (_yolov8_people(), {"names": {0: "Normal", 1: "Fall", 2: "Sitting"}}, {},
         "read as yolov8 has 2 classes but the model's metadata names 3"),
        # end2end whose class column is not class indices
        (np.array([[[1, 1, 9, 9, 0.9, 0.5]] * 4], np.float32), {},
         {"output_format": "end2end"}, "class column values that are not class indices"),
        # dynamic output axes: the probe judges the real output
        (np.array([[0.1, 0.9]], np.float32), {"output_shape": ["batch", "k"]}, {},
         "is not a detection output"),
    ],
    ids=["classifier", "task-classify", "forced-yolov5", "forced-yolov5-names",
         "forced-end2end", "class-count",
         "end2end-classes", "dynamic-shape"],
)
def test_broken_models_are_refused_in_one_line(tmp_path, output, kwargs, config, error
                                               ) -> None:
    model = make_constant_yolo_onnx(tmp_path / "m.onnx", output, **kwargs)
    with pytest.raises(ValueError, match=error) as info:
        build_backend(OnnxBackendConfig(model_path=model, classes={0: "person"}, **config))
    assert "\n" not in str(info.value) and str(model) in str(info.value)


def test_fp16_io_model_works(tmp_path) -> None:
    """``yolo export half=True`` gives float16 input and output: fed and read correctly."""
    model = make_constant_yolo_onnx(tmp_path / "m.onnx", _yolov8_people(), half=True,
                                    names={0: "Normal", 1: "Fall"})
    backend = build_backend(OnnxBackendConfig(model_path=model, classes={"Fall": "person"}))
    dets = backend.infer(np.zeros((64, 64, 3), np.uint8))
    assert dets.xyxy.tolist() == [[24, 24, 40, 40]]
    assert dets.confidence.tolist() == pytest.approx([0.8], abs=1e-3)


def test_a_detection_model_is_refused_as_head_classifier(tmp_path) -> None:
    from detectors.backends.onnx import OnnxClassifier

    model = make_constant_yolo_onnx(tmp_path / "det.onnx", _yolov8_people(),
                                    metadata={"task": "detect"})
    with pytest.raises(ValueError, match=r"output \[1, 6, 8\] is not a classifier's \(1, k\) "
                       r"scores \(metadata task 'detect'\); a head detector goes in "
                       "head_detector"):
        OnnxClassifier(model, {0: "helmet", 1: "no_helmet"})


def test_fp16_classifier_by_class_names(tmp_path) -> None:
    from detectors.backends.onnx import OnnxClassifier
    from tests.support.onnx_models import make_constant_classifier_onnx

    model = make_constant_classifier_onnx(tmp_path / "cls.onnx", [[0.2, 0.8]], half=True,
                                          names={0: "With Helmet", 1: "Without Helmet"})
    classifier = OnnxClassifier(model, {"With Helmet": "helmet", "Without Helmet": "no_helmet"})
    role, probability = classifier.classify(np.zeros((20, 20, 3), np.uint8))
    assert role == "no_helmet" and probability == pytest.approx(0.8, abs=1e-3)


def test_from_ultralytics_maps_classes_to_roles() -> None:
    from types import SimpleNamespace

    from detectors.backends.ultralytics import from_ultralytics
    from detectors.roles import ClassRoles

    roles = ClassRoles.resolve({"Normal": "person", "Fall": "person"},
                               model_names={0: "Normal", 1: "Fall", 2: "Dog"}, n_classes=3,
                               source="best.pt")
    result = SimpleNamespace(boxes=type("B", (), {
        "xyxy": np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 2, 2]], np.float32),
        "conf": np.array([0.9, 0.4, 0.8]), "cls": np.array([1.0, 0.0, 2.0]),
        "__len__": lambda s: 3})())
    dets = from_ultralytics(result, roles=roles)
    assert [roles.class_names[c] for c in dets.class_id.tolist()] == ["person", "person"]
    assert dets.confidence.tolist() == pytest.approx([0.9, 0.4])
