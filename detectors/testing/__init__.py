"""Contract test kit for detector plug-ins — run it on yours.

In your plug-in's tests::

    from detectors.testing import check_detector_plugin

    def test_contract():
        check_detector_plugin("camera_obscured")          # by entry-point name
        check_detector_plugin("camera_obscured", {"type": "camera_obscured",
                                                  "max_mean_brightness": 40})

The kit checks what every camera relies on: the plug-in is discoverable through the
``gridwatch.detectors`` entry points, its config model rejects typos with the field path,
the detector satisfies :class:`~detectors.api.Detector`, returns wire-valid detections
carrying the camera's ids, event time and lon/lat, never reports one finding twice, gives
the same output for the same frames, and can be closed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from pydantic import ValidationError

from detectors.api import (
    Detector,
    DetectorContext,
    DetectorPlugin,
    _check_plugin,
    load_plugins,
)
from detectors.ground import GroundMapper
from detectors.lanes import Lane, LaneConfig
from detectors.schema import Detection

__all__ = [
    "ContractFailure",
    "check_detector_plugin",
    "kit_frames",
    "make_context",
    "registered_plugin_names",
]

KIT_START = datetime.fromisoformat("2026-01-01T08:00:00+08:00")
KIT_LON_LAT = (113.15, 23.04)


class ContractFailure(AssertionError):
    """A plug-in broke the detector contract; the message says which rule."""


def make_context(**overrides: Any) -> DetectorContext:
    """A camera context for tests: 320×240, one full-width lane (left → right)."""
    lane = LaneConfig(
        name="kit-lane",
        polygon_xy=[(0, 100), (320, 100), (320, 240), (0, 240)],
        direction_xy=((0, 170), (320, 170)),
    )
    fields: dict[str, Any] = {
        "station_id": "kit-station",
        "source_id": "kit-camera",
        "ground": GroundMapper.fixed(*KIT_LON_LAT),
        "lanes": [Lane(lane)],
        "frame_rate": 10.0,
    }
    fields.update(overrides)
    return DetectorContext(**fields)


def kit_frames(n_frames: int = 40) -> list[tuple[np.ndarray, datetime]]:
    """Frames of the synthetic sample scene with their event times (10 fps)."""
    from detectors.sample import SAMPLE_FPS, render_background, render_frame, sample_scene

    background = render_background((320, 240))
    scene = sample_scene()
    frames = []
    for index in range(n_frames):
        # Spread the scene over the kit's frames so both riders appear.
        scene_index = int(index * 80 / max(n_frames, 1))
        frames.append((render_frame(background, scene, scene_index),
                       KIT_START + timedelta(seconds=index / SAMPLE_FPS)))
    frames.extend((np.zeros((240, 320, 3), np.uint8), KIT_START + timedelta(seconds=(
        n_frames + i) / SAMPLE_FPS)) for i in range(3))
    return frames


def registered_plugin_names(*, with_example_only: bool = True) -> list[str]:
    """Names of installed plug-ins (for ``pytest.mark.parametrize``)."""
    registry = load_plugins(refresh=True)
    return sorted(
        name for name, plugin in registry.plugins.items()
        if plugin.example_config is not None or not with_example_only
    )


def _fail(plugin: str, rule: str) -> ContractFailure:
    return ContractFailure(f"plug-in {plugin!r}: {rule}")


def _run(
    detector: Detector, frames: Sequence[tuple[np.ndarray, datetime]]
) -> list[tuple[datetime, list[Detection]]]:
    return [(observed_at, detector.process(frame.copy(), observed_at))
            for frame, observed_at in frames]


def check_detector_plugin(
    plugin: DetectorPlugin | str,
    config: Mapping[str, Any] | None = None,
    *,
    context_factory: Callable[[], DetectorContext] = make_context,
    frames: Iterable[tuple[np.ndarray, datetime]] | None = None,
    require_discovery: bool = True,
) -> list[Detection]:
    """Check one plug-in against the detector contract.

    Args:
        plugin: the plug-in object or its entry-point name.
        config: the config to build with; the plug-in's ``example_config`` by default.
        context_factory: builds a fresh camera context (each run gets its own).
        frames: ``(frame, observed_at)`` pairs; :func:`kit_frames` by default.
        require_discovery: the plug-in must be found among the installed entry points.

    Returns:
        The detections of the first run, for further assertions of your own.

    Raises:
        ContractFailure: the first broken rule, named.
    """
    registry = load_plugins(refresh=True)
    if isinstance(plugin, str):
        if plugin not in registry.plugins:
            detail = registry.errors.get(plugin, "not installed")
            raise _fail(plugin, f"not discoverable in group 'gridwatch.detectors': {detail}")
        plugin = registry.plugins[plugin]
    name = plugin.name
    if require_discovery and registry.plugins.get(name) is not plugin:
        found = registry.plugins.get(name)
        if found is None or found.config_model is not plugin.config_model:
            raise _fail(name, "not discoverable through the 'gridwatch.detectors' entry points")
    try:
        _check_plugin(name, plugin)
    except ValueError as exc:
        raise _fail(name, str(exc)) from None

    config = dict(config if config is not None else plugin.example_config or {})
    if not config:
        raise _fail(name, "no config given and the plug-in has no example_config")
    model = plugin.config_model
    try:
        validated = model.model_validate(config)
    except ValidationError as exc:
        raise _fail(name, f"its own config does not validate: {exc}") from None
    typo = "definitely_not_a_field"
    try:
        model.model_validate({**config, typo: 1})
    except ValidationError as exc:
        locs = [err.get("loc", ()) for err in exc.errors()]
        if not any(typo in loc for loc in locs):
            raise _fail(name, f"a typo is rejected but without its field path: {locs}") from None
    else:
        raise _fail(name, "config model accepts unknown keys (use extra='forbid')")
    try:
        model.model_validate({**config, "type": name + "_typo"})
    except ValidationError:
        pass
    else:
        raise _fail(name, "config model accepts a wrong 'type' (declare Literal[name])")

    frame_list = list(frames) if frames is not None else kit_frames()
    runs: list[list[str]] = []
    first: list[Detection] = []
    for attempt in range(2):
        context = context_factory()
        detector = plugin.build(validated, context)
        if not isinstance(detector, Detector):
            raise _fail(name, f"{type(detector).__name__} lacks process()/close()")
        try:
            results = _run(detector, frame_list)
        finally:
            detector.close()
        try:
            detector.close()
        except Exception as exc:
            raise _fail(name, f"close() twice raised {exc!r}") from None
        seen: set[str] = set()
        lines: list[str] = []
        for observed_at, detections in results:
            if not isinstance(detections, list):
                raise _fail(name, f"process() returned {type(detections).__name__}, not list")
            for detection in detections:
                _check_detection(name, detection, context, observed_at)
                if detection.event_id in seen:
                    raise _fail(name, f"event_id {detection.event_id!r} reported twice")
                seen.add(detection.event_id)
                wire = detection.to_wire()
                wire.get("evidence", {}).pop("snapshot_url", None)
                lines.append(repr(sorted(wire.items())))
                if attempt == 0:
                    first.append(detection)
        runs.append(lines)
    if runs[0] != runs[1]:
        raise _fail(name, "two runs over the same frames gave different detections")
    return first


def _check_detection(
    name: str, detection: Any, context: DetectorContext, observed_at: datetime
) -> None:
    if not isinstance(detection, Detection):
        raise _fail(name, f"process() returned a {type(detection).__name__}, not a Detection")
    try:
        Detection.model_validate_json(detection.to_json())
    except ValidationError as exc:
        raise _fail(name, f"detection does not survive the wire: {exc}") from None
    if (detection.station_id, detection.source_id) != (context.station_id, context.source_id):
        raise _fail(name, "detection does not carry the camera's station_id/source_id")
    if detection.observed_at != observed_at:
        raise _fail(name, "detection observed_at differs from the frame's event time")
    if context.ground.fixed_lon_lat is not None and (
        (detection.lon, detection.lat) != context.ground.fixed_lon_lat
    ):
        raise _fail(name, "detection lon/lat not taken from the camera's ground mapping")
