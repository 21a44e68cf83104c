"""Plug-in discovery, the contract kit, and a third-party plug-in installed by pip."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest

from detectors.api import DetectorConfigBase, DetectorPlugin, _check_plugin, load_plugins
from detectors.camera import camera_config_from_dict
from detectors.testing import ContractFailure, check_detector_plugin, registered_plugin_names
from tests.support.example_plugin import EXAMPLE

from .builders import camera_dict


def test_builtins_are_registered() -> None:
    registry = load_plugins(refresh=True)
    assert {"wrong_way_ebike", "helmetless_rider"} <= set(registry.plugins)
    assert registry.plugins["wrong_way_ebike"].kinds == ("wrong_way_ebike",)


def test_example_plugin_is_discovered_through_its_entry_point(example_plugin) -> None:
    registry = load_plugins(refresh=True)
    assert example_plugin in registry.plugins
    assert registry.origins[example_plugin].startswith("gridwatch-example-detector")
    # and a camera YAML can use it, typos included
    config = camera_config_from_dict(camera_dict(detectors=[{"type": example_plugin}]))
    assert config.detectors[0].type == example_plugin
    with pytest.raises(ValueError, match="detectors.0.camera_obscured.max_mean_brightnes"):
        camera_config_from_dict(camera_dict(detectors=[
            {"type": example_plugin, "max_mean_brightnes": 3}]))


def test_example_plugin_passes_the_kit(example_plugin) -> None:
    detections = check_detector_plugin(example_plugin)
    assert [d.kind for d in detections] == ["camera_obscured"]


def test_example_plugin_own_tests(example_plugin) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(EXAMPLE / "tests")], capture_output=True, text=True, cwd=EXAMPLE,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", registered_plugin_names())
def test_every_registered_plugin_passes_the_kit(name: str) -> None:
    check_detector_plugin(name)


# --- the kit catches broken plug-ins --------------------------------------------------------

class LooseConfig(DetectorConfigBase):
    model_config = {"extra": "allow"}
    type: Literal["loose"] = "loose"


class Repeater:
    def __init__(self, config, context) -> None:
        self.context = context

    def process(self, frame, observed_at):
        from detectors.schema import Detection

        return [Detection.new(event_id="same", observed_at=observed_at,
                              station_id=self.context.station_id,
                              source_id=self.context.source_id, source_type="camera",
                              kind="x", confidence=1.0, lon=113.15, lat=23.04)]

    def close(self) -> None:
        pass


class StrictConfig(DetectorConfigBase):
    type: Literal["repeater"] = "repeater"


@pytest.mark.parametrize(
    ("plugin", "error"),
    [
        (DetectorPlugin("loose", LooseConfig, Repeater, example_config={"type": "loose"}),
         "accepts unknown keys"),
        (DetectorPlugin("repeater", StrictConfig, Repeater,
                        example_config={"type": "repeater"}), "reported twice"),
        (DetectorPlugin("other", StrictConfig, Repeater, example_config={"type": "repeater"}),
         "Literal"),
    ],
)
def test_kit_rejects_broken_plugins(plugin, error) -> None:
    with pytest.raises(ContractFailure, match=error):
        check_detector_plugin(plugin, require_discovery=False)


def test_malformed_entry_point_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="expected a detectors.api.DetectorPlugin"):
        _check_plugin("x", object())
