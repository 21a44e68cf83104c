"""Tiny ONNX graphs built in memory for tests and benchmarks (needs ``onnx``, a dev extra).

Nothing here is a real detector; the graphs exercise the ONNX pre/post-processing and give
a realistic amount of compute for timing the pipeline around inference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _save(model: object, path: Path, names: Mapping[int, str] | None,
          metadata: Mapping[str, str] | None = None) -> Path:
    import onnx

    assert isinstance(model, onnx.ModelProto)
    if names is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "names", repr(dict(names))
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_constant_yolo_onnx(
    path: str | Path,
    output: np.ndarray,
    *,
    input_hw: tuple[int, int] = (64, 64),
    names: Mapping[int, str] | None = None,
    half: bool = False,
    metadata: Mapping[str, str] | None = None,
    output_shape: list[int | str] | None = None,
) -> Path:
    """A model that ignores its image and returns ``output`` (any YOLO layout).

    The input is still consumed (``+ 0 * mean(image)``) so ONNX Runtime keeps it.
    ``half=True`` gives float16 input and output (as ``yolo export half=True`` does);
    ``metadata`` adds entries such as ``task``; ``output_shape`` declares the output's
    shape (names for dynamic axes) instead of the constant's.
    """
    from onnx import TensorProto, helper, numpy_helper

    output = np.asarray(output, dtype=np.float32)
    io_type = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    nodes = []
    image = "images"
    if half:
        nodes.append(helper.make_node("Cast", ["images"], ["images32"], to=TensorProto.FLOAT))
        image = "images32"
    nodes += [
        helper.make_node("ReduceMean", [image], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["zeroed"]),
        helper.make_node("Add", ["const", "zeroed"], ["sum" if half else "output0"]),
    ]
    if half:
        nodes.append(helper.make_node("Cast", ["sum"], ["output0"], to=TensorProto.FLOAT16))
    graph = helper.make_graph(
        nodes, "constant_yolo",
        [helper.make_tensor_value_info("images", io_type, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("output0", io_type,
                                       output_shape or list(output.shape))],
        initializer=[numpy_helper.from_array(output, "const"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, Path(path), names, metadata)


def make_conv_yolo_onnx(
    path: str | Path,
    *,
    n_classes: int = 4,
    input_hw: tuple[int, int] = (640, 640),
    width: int = 32,
    names: Mapping[int, str] | None = None,
    seed: int = 0,
) -> Path:
    """A YOLOv8-layout model with real convolutions (for timing, not accuracy).

    Four stride-2 3×3 convolutions then a 1×1 head give ``(1, 4 + n_classes, h/16 * w/16)``;
    class scores are biased low so only a handful of candidates pass 0.25.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = []
    inits = []
    channels, name = 3, "images"
    for i, out_ch in enumerate([width // 2, width, width * 2, width * 4]):
        w = (rng.standard_normal((out_ch, channels, 3, 3)) * np.sqrt(2 / (9 * channels)))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [name, f"w{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                      strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        channels, name = out_ch, f"r{i}"
    out_ch = 4 + n_classes
    head = rng.standard_normal((out_ch, channels, 1, 1)).astype(np.float32) * 0.05
    bias = np.zeros(out_ch, np.float32)
    bias[4:] = -4.0
    inits += [numpy_helper.from_array(head, "wh"), numpy_helper.from_array(bias, "bh")]
    h, w = input_hw[0] // 16, input_hw[1] // 16
    inits.append(numpy_helper.from_array(np.array([1, out_ch, h * w], np.int64), "shape"))
    scale = np.ones((1, out_ch, 1), np.float32)
    scale[0, :4, 0] = [input_hw[1], input_hw[0], 64, 64]
    inits.append(numpy_helper.from_array(scale, "scale"))
    nodes += [
        helper.make_node("Conv", [name, "wh", "bh"], ["head"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["head"], ["sig"]),
        helper.make_node("Reshape", ["sig", "shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "conv_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, out_ch, h * w])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, Path(path), names)


def make_constant_classifier_onnx(
    path: str | Path, probabilities: np.ndarray, *, input_hw: tuple[int, int] = (32, 32),
    names: Mapping[int, str] | None = None, half: bool = False,
) -> Path:
    """A crop classifier that always returns ``probabilities`` (shape ``(1, k)``)."""
    return make_constant_yolo_onnx(
        path, np.asarray(probabilities, np.float32).reshape(1, -1), input_hw=input_hw,
        names=names, half=half,
    )
