"""One camera: its config (YAML) and the pipeline the edge agent runs per frame.

Example ``CAMERA.yaml``::

    station_id: demo-station
    source_id: cam-01
    frame_rate: 10
    ground:
      pixel_lon_lat_pairs:          # or: fixed_lon_lat: [113.15, 23.04]
        - [[0, 0], [113.1490, 23.0410]]
        - [[320, 0], [113.1510, 23.0410]]
        - [[320, 240], [113.1510, 23.0390]]
        - [[0, 240], [113.1490, 23.0390]]
    sampling: {every_n_frames: 1}
    motion_gate: {enabled: true}
    lanes:
      - name: bike-lane-east
        polygon_xy: [[0, 120], [320, 120], [320, 200], [0, 200]]
        direction_xy: [[0, 160], [320, 160]]
    detectors:
      - type: wrong_way_ebike
        backend: {type: motion}

The edge agent calls::

    pipeline = CameraPipeline(load_camera_config("CAMERA.yaml"))
    for frame, observed_at in frames:
        for detection in pipeline.process(frame, observed_at):
            outbox.put(detection)
    pipeline.close()
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    model_validator,
)
from pydantic_core import CoreSchema

from configs.reader import read_yaml_mapping, validate_config
from detectors.api import (
    DetectorConfigBase,
    DetectorContext,
    PluginRegistry,
    load_plugins,
)
from detectors.ground import GroundMapper
from detectors.lanes import Lane, LaneConfig
from detectors.schema import Detection

logger = logging.getLogger(__name__)

Identifier = Annotated[str, Field(min_length=1, max_length=128)]

#: Frame rate assumed when neither the camera file nor the video says one.
DEFAULT_FRAME_RATE = 25.0


class _DetectorConfigUnion:
    """Placeholder type: the discriminated union of every installed plug-in's config.

    Its schema is generated when :class:`CameraConfig` is first used (``defer_build``), so
    plug-ins are discovered at start-up, not at import.
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        models = [p.config_model for p in load_plugins().plugins.values()]
        if len(models) == 1:
            return handler.generate_schema(models[0])
        union = Annotated[  # type: ignore[valid-type]
            typing.Union[tuple(models)], Field(discriminator="type")  # noqa: UP007
        ]
        return handler.generate_schema(union)


class GroundConfig(BaseModel):
    """Where detections of this camera are on the ground: exactly one of the two.

    Attributes:
        pixel_lon_lat_pairs: 4+ ``[[x_px, y_px], [lon, lat]]`` pairs on the road plane.
        fixed_lon_lat: the camera's own ``[lon, lat]`` for every detection.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pixel_lon_lat_pairs: list[tuple[tuple[float, float], tuple[float, float]]] | None = None
    fixed_lon_lat: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> GroundConfig:
        if (self.pixel_lon_lat_pairs is None) == (self.fixed_lon_lat is None):
            raise ValueError("give exactly one of pixel_lon_lat_pairs or fixed_lon_lat")
        points = [ll for _, ll in self.pixel_lon_lat_pairs or []]
        for lon, lat in points + ([self.fixed_lon_lat] if self.fixed_lon_lat else []):
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"lon/lat out of range: {[lon, lat]} (order is [lon, lat])")
        if self.pixel_lon_lat_pairs is not None:
            self.mapper()  # fit now so a degenerate layout fails at start-up
        return self

    def mapper(self) -> GroundMapper:
        """The pixel → lon/lat mapper this config describes."""
        if self.fixed_lon_lat is not None:
            return GroundMapper.fixed(*self.fixed_lon_lat)
        assert self.pixel_lon_lat_pairs is not None
        return GroundMapper.from_pairs(self.pixel_lon_lat_pairs)


class SamplingConfig(BaseModel):
    """Which frames are analysed at all.

    Attributes:
        every_n_frames: analyse one frame in ``n`` handed to the pipeline.
        max_fps: at most this many analysed frames per second of event time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_n_frames: int = Field(default=1, ge=1)
    max_fps: float | None = Field(default=None, gt=0)


class MotionGateConfig(BaseModel):
    """Skip inference on static frames.

    Attributes:
        enabled: gate on or off.
        pixel_threshold: change of any colour channel (0–255) for a pixel to count.
        min_changed_fraction: share of changed pixels that makes a frame worth analysing.
        max_skip_s: analyse at least one frame this often even if nothing moves.
        process_width: the gate compares frames downscaled to this width.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    pixel_threshold: int = Field(default=20, ge=1, le=255)
    min_changed_fraction: float = Field(default=0.002, ge=0, le=1)
    max_skip_s: float = Field(default=2.0, gt=0)
    process_width: int = Field(default=160, ge=16)


class CameraConfig(BaseModel):
    """One camera of one station (the root model of ``CAMERA.yaml``).

    Attributes:
        station_id: the edge box.
        source_id: this camera, unique within the station.
        frame_rate: frames per second the camera delivers; omit it to use the video
            file's own rate (``gridwatch detect``, file sources) or 25 for a live stream.
        ground: pixel → lon/lat.
        sampling: which frames are analysed.
        motion_gate: skip static frames.
        lanes: image lanes with their allowed direction.
        snapshot_dir: where JPEG evidence goes (no snapshots when omitted).
        start: event time of the first frame for offline video (``gridwatch detect``).
        detectors: the detectors to run; ``type`` picks the plug-in.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    station_id: Identifier
    source_id: Identifier
    frame_rate: float | None = Field(default=None, gt=0)
    ground: GroundConfig
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    motion_gate: MotionGateConfig = Field(default_factory=MotionGateConfig)
    lanes: list[LaneConfig] = Field(default_factory=list)
    snapshot_dir: Path | None = None
    start: AwareDatetime | None = None
    detectors: list[_DetectorConfigUnion] = Field(min_length=1)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _unique_lanes(self) -> CameraConfig:
        names = [lane.name for lane in self.lanes]
        if len(set(names)) != len(names):
            raise ValueError(f"lane names must be unique, got {names}")
        return self

    @property
    def analysed_frame_rate(self) -> float:
        """Analysed frames per second after sampling (at the configured or default rate)."""
        return self.analysed_rate(self.frame_rate or DEFAULT_FRAME_RATE)

    def analysed_rate(self, input_fps: float) -> float:
        """Analysed frames per second after sampling, for frames arriving at ``input_fps``."""
        rate = input_fps / self.sampling.every_n_frames
        if self.sampling.max_fps is not None:
            rate = min(rate, self.sampling.max_fps)
        return rate


def effective_frame_rate(config: CameraConfig, file_fps: float | None, *,
                         origin: str = "the video") -> float:
    """The frame rate to run at: the configured one, else the file's, else 25.

    A configured rate that differs from the file's by more than 1 % is used, with a
    warning (it changes event times and the tracker's idea of elapsed time).
    """
    has_file = file_fps is not None and 0 < file_fps < 1000
    if config.frame_rate is not None:
        if has_file and abs(config.frame_rate - file_fps) > 0.01 * file_fps:  # type: ignore[operator]
            logger.warning("%s/%s: camera frame_rate %g overrides %s's own %g fps "
                           "(remove frame_rate from the camera file to use the file's)",
                           config.station_id, config.source_id, config.frame_rate, origin,
                           file_fps)
        return config.frame_rate
    return float(file_fps) if has_file else DEFAULT_FRAME_RATE  # type: ignore[arg-type]


def refresh_plugins() -> PluginRegistry:
    """Re-discover plug-ins and rebuild :class:`CameraConfig`'s union (after installs)."""
    registry = load_plugins(refresh=True)
    CameraConfig.model_rebuild(force=True)
    return registry


def camera_config_from_dict(data: Any, *, origin: str = "<camera config>") -> CameraConfig:
    """Validate a decoded camera config.

    Raises:
        ConfigFileError: ``"<origin>: <field.path>: <message>"`` (a ``ValueError``).
    """
    return validate_config(CameraConfig, data, origin)


def load_camera_config(path: str | Path) -> CameraConfig:
    """Read and validate ``CAMERA.yaml``.

    Raises:
        ConfigFileError: a ``ValueError`` with the file and the field path, e.g.
            ``cam.yaml: detectors.0.wrong_way_ebike.min_distanse_px: Extra inputs are not
            permitted``.
    """
    path = Path(path)
    return camera_config_from_dict(read_yaml_mapping(path), origin=str(path))


class _MotionGate:
    def __init__(self, config: MotionGateConfig) -> None:
        self.config = config
        self._previous: np.ndarray | None = None
        self._last_pass: datetime | None = None

    def moving(self, frame: np.ndarray, observed_at: datetime) -> bool:
        import cv2

        height, width = frame.shape[:2]
        scale = min(1.0, self.config.process_width / width)
        small = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
        # Colour, not grey: a red scooter on a green lane can have the lane's grey level.
        small = cv2.GaussianBlur(small, (5, 5), 0)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            self._last_pass = observed_at
            return True
        diff = cv2.absdiff(small, previous).max(axis=2)
        changed = float(np.mean(diff > self.config.pixel_threshold))
        overdue = self._last_pass is None or (
            observed_at - self._last_pass >= timedelta(seconds=self.config.max_skip_s)
        )
        if changed >= self.config.min_changed_fraction or overdue:
            self._last_pass = observed_at
            return True
        return False


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``TypeName: message`` on one line, whitespace collapsed, at most ``limit`` chars."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _log_this_failure(count: int) -> bool:
    """Log failures 1, 10, 100, 1000 …: once with the reason, then rarely."""
    return count == 1 or (count >= 10 and str(count).rstrip("0") == "1")


class CameraPipeline:
    """Sampling → motion gate → every configured detector, for one camera.

    A detector that raises on a frame is counted; its first failure is logged with a
    one-line reason (the traceback at DEBUG level), then only its 10th, 100th, 1000th …
    so a model failing on every frame does not flood the log.

    Attributes:
        stats: counters ``frames_in``, ``frames_sampled_out``, ``frames_gated``,
            ``frames_analysed``, ``frames_failed`` (analysed frames on which some detector
            raised), ``detector_errors``, ``detections``.
        last_error: the latest failure as ``detectors.N (type): Error: reason``, or ``None``.
        frame_rate: the input frame rate it runs at.
    """

    def __init__(self, config: CameraConfig, *, registry: PluginRegistry | None = None,
                 frame_rate: float | None = None) -> None:
        """Build every detector; raises ``ValueError`` naming the detector on bad files.

        Args:
            config: the camera.
            registry: plug-ins (default: the installed ones).
            frame_rate: frames per second arriving, when the caller knows better than the
                config (a file's own rate, see :func:`effective_frame_rate`).
        """
        self.config = config
        registry = registry or load_plugins()
        self.frame_rate = frame_rate or config.frame_rate or DEFAULT_FRAME_RATE
        self.context = DetectorContext(
            station_id=config.station_id,
            source_id=config.source_id,
            ground=config.ground.mapper(),
            lanes=[Lane(lane) for lane in config.lanes],
            frame_rate=config.analysed_rate(self.frame_rate),
            snapshot_dir=config.snapshot_dir,
        )
        self.detectors: list[Any] = []
        self._labels: dict[int, str] = {}
        for index, detector_config in enumerate(config.detectors):
            assert isinstance(detector_config, DetectorConfigBase)
            label = f"detectors.{index} ({detector_config.type})"
            try:
                plugin = registry.get(detector_config.type)
                detector = plugin.build(detector_config, self.context)
                self.detectors.append(detector)
                self._labels[id(detector)] = label
            except ValueError as exc:
                self.close()
                raise ValueError(f"camera {config.source_id}: {label}: {exc}") from None
        self._gate = _MotionGate(config.motion_gate) if config.motion_gate.enabled else None
        self._frame_index = -1
        self._last_analysed: datetime | None = None
        self._failures: dict[int, int] = {}
        self.last_error: str | None = None
        #: called as ``observer(frame, observed_at, detections)`` after every analysed
        #: frame (``gridwatch detect --annotate``).
        self.observers: list[Callable[[np.ndarray, datetime, list[Detection]], None]] = []
        self.stats = dict.fromkeys(
            ("frames_in", "frames_sampled_out", "frames_gated", "frames_analysed",
             "frames_failed", "detector_errors", "detections"), 0)

    def _sampled(self, observed_at: datetime) -> bool:
        self._frame_index += 1
        sampling = self.config.sampling
        if self._frame_index % sampling.every_n_frames:
            return False
        if sampling.max_fps is not None and self._last_analysed is not None:
            # A 1 % slack keeps e.g. 10 fps at max_fps 10 despite rounded timestamps.
            if (observed_at - self._last_analysed).total_seconds() < 0.99 / sampling.max_fps:
                return False
        return True

    def process(self, frame: np.ndarray, observed_at: datetime, *, strict: bool = False
                ) -> list[Detection]:
        """Handle one BGR frame seen at ``observed_at`` (timezone-aware).

        Args:
            strict: re-raise a detector's error as ``ValueError`` naming the detector
                instead of counting it (start-up checks).

        Returns:
            The detections decided on this frame (usually none).
        """
        self.stats["frames_in"] += 1
        if not self._sampled(observed_at):
            self.stats["frames_sampled_out"] += 1
            return []
        if self._gate is not None and not self._gate.moving(frame, observed_at):
            self.stats["frames_gated"] += 1
            return []
        self._last_analysed = observed_at
        self.stats["frames_analysed"] += 1
        out: list[Detection] = []
        failed = False
        for detector in self.detectors:
            try:
                out.extend(detector.process(frame, observed_at))
            except Exception as exc:  # one broken plug-in must not silence the others
                if strict:
                    raise ValueError(f"camera {self.config.source_id}: {self._label(detector)}"
                                     f": {one_line(exc)}") from exc
                failed = True
                self._record_failure(detector, exc)
        if failed:
            self.stats["frames_failed"] += 1
        self.stats["detections"] += len(out)
        for observer in self.observers:
            observer(frame, observed_at, out)
        return out

    def _label(self, detector: Any) -> str:
        return self._labels.get(id(detector), f"detector {type(detector).__name__}")

    def _record_failure(self, detector: Any, exc: Exception) -> None:
        self.stats["detector_errors"] += 1
        count = self._failures[id(detector)] = self._failures.get(id(detector), 0) + 1
        label = self._label(detector)
        self.last_error = f"{label}: {one_line(exc)}"
        logger.debug("%s/%s: %s failed", self.config.station_id, self.config.source_id,
                     label, exc_info=exc)
        if _log_this_failure(count):
            logger.error("%s/%s: %s failed on a frame (%d so far; logged again at the "
                         "next power of ten): %s", self.config.station_id,
                         self.config.source_id, label, count, one_line(exc))

    def close(self) -> None:
        """Close every detector (idempotent)."""
        for detector in self.detectors:
            try:
                detector.close()
            except Exception:
                logger.exception("%s/%s: closing %s failed", self.config.station_id,
                                 self.config.source_id, type(detector).__name__)
        self.detectors = []


def check_camera(config: CameraConfig, *, registry: PluginRegistry | None = None,
                 frame_hw: tuple[int, int] | None = None, frames: int = 3) -> str:
    """Build the camera's detectors and push synthetic frames through the whole chain.

    Every backend already ran one synthetic frame through pre-processing, the model and
    decoding when it was built; here ``frames`` more go through sampling, tracking and
    every detector's decision, in strict mode, on a pipeline of their own (the real one
    starts clean). Returns a one-line summary of the models' class roles.

    Raises:
        ValueError: one line naming the camera, the detector and the cause.
    """
    from detectors.backends.onnx import synthetic_frame

    pipeline = CameraPipeline(config, registry=registry)
    try:
        hub = pipeline.context.hub
        summary = []
        if hub is not None:
            for backend in hub.backends():
                roles = getattr(backend, "roles", None)
                if roles is not None:
                    summary.append(roles.describe(getattr(backend, "model_names", None)))
        hw = frame_hw or _frame_hw_guess(config)
        start = config.start or datetime.fromisoformat("2026-01-01T08:00:00+00:00")
        rate = pipeline.frame_rate
        if config.sampling.max_fps is not None:
            rate = min(rate, config.sampling.max_fps)
        step = timedelta(seconds=1 / rate)  # every frame passes max_fps; every_n thins
        for i in range(frames * config.sampling.every_n_frames):
            pipeline.process(synthetic_frame(hw), start + i * step, strict=True)
        return "; ".join(summary)
    finally:
        pipeline.close()


def _frame_hw_guess(config: CameraConfig) -> tuple[int, int]:
    """A frame size that holds every lane and ground point (at least 640x360)."""
    xs = [640.0]
    ys = [360.0]
    for lane in config.lanes:
        xs += [x for x, _ in lane.polygon_xy]
        ys += [y for _, y in lane.polygon_xy]
    for (x, y), _ in config.ground.pixel_lon_lat_pairs or []:
        xs.append(x)
        ys.append(y)
    return int(min(max(ys), 4320)), int(min(max(xs), 7680))
