"""The detector plug-in API.

A *detector* turns camera frames into wire-ready :class:`~detectors.schema.Detection`
objects. A *plug-in* tells GridWatch how to configure and build one. Plug-ins are found
through the entry-point group ``gridwatch.detectors``, so a detector shipped in a separate
wheel works without forking GridWatch. In the plug-in's ``pyproject.toml``::

    [project.entry-points."gridwatch.detectors"]
    camera_obscured = "gridwatch_example_detector:PLUGIN"

and in the module::

    class ObscuredConfig(DetectorConfigBase):
        type: Literal["camera_obscured"] = "camera_obscured"
        max_mean_brightness: float = 20.0

    PLUGIN = DetectorPlugin(
        name="camera_obscured",
        config_model=ObscuredConfig,
        factory=lambda config, context: ObscuredDetector(config, context),
        kinds=("camera_obscured",),
        example_config={"type": "camera_obscured"},
    )

The entry-point name, ``PLUGIN.name`` and the config's ``type`` literal are the same
string; the camera YAML picks the plug-in with ``type:``. Run the contract kit
(:mod:`detectors.testing`) on your plug-in before shipping it.
"""

from __future__ import annotations

import importlib
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from detectors.ground import GroundMapper
from detectors.lanes import Lane
from detectors.schema import Detection

if TYPE_CHECKING:
    from detectors.inference import InferenceHub

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gridwatch.detectors"

# Built-ins are declared as entry points in our own pyproject; this table is only the
# fallback for a checkout whose package metadata predates them (e.g. not reinstalled).
_BUILTIN_PLUGINS = {
    "wrong_way_ebike": "detectors.wrong_way:PLUGIN",
    "helmetless_rider": "detectors.helmet:PLUGIN",
}


@runtime_checkable
class Detector(Protocol):
    """What the camera pipeline calls for every frame it decides to analyse.

    Implementations keep their own per-track state and report each finding once (one
    detection per track, not per frame).

    Example:
        >>> class Nothing:
        ...     def process(self, frame, observed_at):
        ...         return []
        ...     def close(self):
        ...         pass
        >>> isinstance(Nothing(), Detector)
        True
    """

    def process(self, frame: np.ndarray, observed_at: datetime) -> list[Detection]:
        """Analyse one BGR ``uint8`` frame ``(h, w, 3)`` seen at ``observed_at`` (aware).

        Returns:
            Detections ready for the wire: ``station_id``, ``source_id``, ``lon``/``lat``
            filled in, ``event_id`` stable for the finding.
        """
        ...

    def close(self) -> None:
        """Release models and files; calling it twice is harmless."""
        ...


class DetectorConfigBase(BaseModel):
    """Base of every plug-in's config model.

    Subclasses must declare ``type: Literal["<plug-in name>"]``; unknown keys are errors so
    a typo in the camera YAML fails at start-up with its field path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


@dataclass
class DetectorContext:
    """Everything a detector gets from the camera it runs on.

    Attributes:
        station_id: the edge box.
        source_id: the camera, unique within the station.
        ground: pixel → lon/lat for this camera.
        lanes: the camera's lanes (image polygons with an allowed direction).
        frame_rate: nominal analysed frames per second (after sampling).
        snapshot_dir: where to write JPEG evidence, or ``None`` for no snapshots.
        hub: shared inference and tracking, so two detectors on one model run it once.
        source_type: the wire ``source_type`` (``camera`` for cameras).
    """

    station_id: str
    source_id: str
    ground: GroundMapper
    lanes: list[Lane] = field(default_factory=list)
    frame_rate: float = 10.0
    snapshot_dir: Path | None = None
    hub: InferenceHub | None = None
    source_type: str = "camera"

    def shared_hub(self) -> InferenceHub:
        """The shared inference hub, created on first use."""
        if self.hub is None:
            from detectors.inference import InferenceHub

            self.hub = InferenceHub()
        return self.hub


DetectorFactory = Callable[[Any, DetectorContext], Detector]


@dataclass(frozen=True)
class DetectorPlugin:
    """How to configure and build one kind of detector.

    Attributes:
        name: the plug-in name; equals the entry-point name and the config's ``type``.
        config_model: a :class:`DetectorConfigBase` subclass with ``type: Literal[name]``.
        factory: ``factory(config, context) -> Detector``; may raise ``ValueError`` with a
            clear message (missing model file, mismatched classes).
        kinds: detection kinds it emits (for ``gridwatch detectors list``).
        description: one line for ``gridwatch detectors list``.
        example_config: a config that builds without any user file (``None`` when the
            plug-in always needs one, e.g. a model); the contract kit and the docs use it.
    """

    name: str
    config_model: type[DetectorConfigBase]
    factory: DetectorFactory
    kinds: tuple[str, ...] = ()
    description: str = ""
    example_config: Mapping[str, Any] | None = None

    def build(self, config: Any, context: DetectorContext) -> Detector:
        """Validate ``config`` (a model or a mapping) and build the detector."""
        if not isinstance(config, self.config_model):
            config = self.config_model.model_validate(config)
        return self.factory(config, context)


@dataclass
class PluginRegistry:
    """The discovered plug-ins by name, plus those that failed to load and why."""

    plugins: dict[str, DetectorPlugin]
    errors: dict[str, str]
    origins: dict[str, str]

    def get(self, name: str) -> DetectorPlugin:
        """The plug-in called ``name``.

        Raises:
            ValueError: unknown or broken plug-in, listing the known ones.
        """
        if name in self.plugins:
            return self.plugins[name]
        if name in self.errors:
            raise ValueError(f"detector plug-in {name!r} failed to load: {self.errors[name]}")
        raise ValueError(
            f"unknown detector type {name!r}; installed: {', '.join(sorted(self.plugins))}"
        )


def _check_plugin(name: str, obj: object) -> DetectorPlugin:
    if not isinstance(obj, DetectorPlugin):
        raise ValueError(f"expected a detectors.api.DetectorPlugin, got {type(obj).__name__}")
    if obj.name != name:
        raise ValueError(f"entry point name {name!r} differs from plug-in name {obj.name!r}")
    type_field = obj.config_model.model_fields.get("type")
    literal_args = typing.get_args(type_field.annotation) if type_field else ()
    if tuple(literal_args) != (name,):
        raise ValueError(
            f"{obj.config_model.__name__}.type must be Literal[{name!r}], "
            f"got {type_field.annotation if type_field else None}"
        )
    return obj


_registry_cache: PluginRegistry | None = None


def load_plugins(*, refresh: bool = False) -> PluginRegistry:
    """Discover plug-ins from the ``gridwatch.detectors`` entry points (cached).

    A plug-in that fails to import or is malformed is reported in ``errors`` instead of
    breaking every camera. ``refresh=True`` re-reads the installed packages (tests use it
    after installing a plug-in).
    """
    global _registry_cache
    if _registry_cache is not None and not refresh:
        return _registry_cache
    plugins: dict[str, DetectorPlugin] = {}
    errors: dict[str, str] = {}
    origins: dict[str, str] = {}
    candidates: list[tuple[str, str, Callable[[], object]]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist is not None else ep.value
        candidates.append((ep.name, origin, ep.load))
    seen = {name for name, _, _ in candidates}
    for name, target in _BUILTIN_PLUGINS.items():
        if name not in seen:
            candidates.append((name, "gridwatch (built-in)", _loader(target)))
    for name, origin, load in candidates:
        if name in plugins:
            errors[f"{name} ({origin})"] = f"duplicate plug-in name; {origins[name]} wins"
            continue
        try:
            plugins[name] = _check_plugin(name, load())
            origins[name] = origin
        except Exception as exc:  # a broken third-party plug-in must not stop the others
            logger.warning("detector plug-in %s from %s failed to load: %s", name, origin, exc)
            errors[name] = f"{type(exc).__name__}: {exc}"
    _registry_cache = PluginRegistry(plugins=plugins, errors=errors, origins=origins)
    return _registry_cache


def _loader(target: str) -> Callable[[], object]:
    module_name, _, attr = target.partition(":")

    def load() -> object:
        return getattr(importlib.import_module(module_name), attr)

    return load
