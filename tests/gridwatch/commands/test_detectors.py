"""``gridwatch detectors list`` / ``check``: installed plug-ins and camera configs."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from gridwatch.cli import main

DEMO_CAMERA = Path(__file__).resolve().parents[3] / "sample_data/cameras/demo_camera.yaml"


def test_list_shows_every_plugin_with_its_origin_and_description(example_plugin,
                                                                  capsys) -> None:
    """One line per installed plug-in, sorted by name: the built-ins from gridwatch and the
    example from its own distribution (found through its entry point), none broken."""
    assert main(["detectors", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines}
    assert [line.split()[0] for line in lines] == sorted(rows)
    assert {"wrong_way_ebike", "helmetless_rider", example_plugin} <= set(rows)
    ours = f"gridwatch {version('gridwatch')}"
    assert ours in rows["wrong_way_ebike"]
    assert "tracks moving against a lane" in rows["wrong_way_ebike"]
    assert ours in rows["helmetless_rider"] and "voted helmetless" in rows["helmetless_rider"]
    example = f"gridwatch-example-detector {version('gridwatch-example-detector')}"
    assert example in rows[example_plugin]
    assert not [line for line in lines if "BROKEN" in line]


def test_bad_camera_is_one_line(tmp_path, capsys) -> None:
    camera = tmp_path / "cam.yaml"
    camera.write_text(DEMO_CAMERA.read_text().replace("min_distance_px", "min_distanse_px"))
    assert main(["detectors", "check", str(camera)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "detectors.0.wrong_way_ebike.min_distanse_px" in err


def test_check_names_the_camera_and_its_detectors(capsys) -> None:
    assert main(["detectors", "check", str(DEMO_CAMERA)]) == 0
    assert capsys.readouterr().out == \
        f"{DEMO_CAMERA}: ok (st-lishui-01/cam-lishui-bridge-east: wrong_way_ebike)\n"


def test_detectors_list_json(capsys) -> None:
    assert main(["detectors", "list", "--json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert {"wrong_way_ebike", "helmetless_rider"} <= names


def test_check_refuses_a_classifier_as_the_detector(tmp_path, capsys) -> None:
    import numpy as np

    from tests.support.onnx_models import make_constant_classifier_onnx

    model = make_constant_classifier_onnx(tmp_path / "cls.onnx", np.array([[0.3, 0.7]]))
    camera = tmp_path / "cam.yaml"
    camera.write_text(DEMO_CAMERA.read_text().replace(
        "      type: motion\n      warmup_frames: 2\n",
        f"      type: onnx\n      model_path: '{model}'\n      classes: {{0: bicycle}}\n"))
    assert "type: onnx" in camera.read_text()
    assert main(["detectors", "check", str(camera)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "detectors.0 (wrong_way_ebike)" in err and "is not a detection output" in err
