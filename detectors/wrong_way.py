"""Wrong-way riders: a track moving against its lane's allowed direction.

Works on any backend; with the weight-free ``motion`` backend a camera without a model
still catches wrong-way movement in a bike lane.

The decision (:class:`WrongWayJudge`) is pure: per track it follows the bottom-centre
point's position *along* the lane and its running maximum. Moving the right way keeps
raising the maximum; standing still or jittering keeps the position near it. Only a
sustained retreat from the maximum (``min_distance_px`` back, roughly opposite to the
lane, for at least ``min_duration_s``) is wrong-way, and each track is decided once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import Field

from detectors.api import DetectorConfigBase, DetectorContext, DetectorPlugin
from detectors.backends import BackendConfig, MotionBackendConfig
from detectors.evidence import track_detection
from detectors.lanes import Lane
from detectors.schema import Detection
from detectors.tracking import TrackerConfig

KIND = "wrong_way_ebike"


class WrongWayConfig(DetectorConfigBase):
    """Config of the ``wrong_way_ebike`` detector.

    Attributes:
        backend: what finds the objects; ``motion`` (weight-free) by default.
        tracker: ByteTrack settings.
        object_classes: class names that count (e.g. ``[bicycle, motorcycle]``); all of
            the backend's classes when omitted.
        lanes: names of the camera's lanes to watch; all lanes when omitted.
        min_distance_px: how far back against the lane a track must move.
        min_duration_s: for how long the retreat must last.
        max_angle_deg: how far from the exact opposite direction the movement may point.
        min_observations: frames a track must be seen in the lane before a verdict.
    """

    type: Literal["wrong_way_ebike"] = "wrong_way_ebike"
    backend: BackendConfig = Field(default_factory=MotionBackendConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    object_classes: list[str] | None = None
    lanes: list[str] | None = None
    min_distance_px: float = Field(default=40.0, gt=0)
    min_duration_s: float = Field(default=0.5, ge=0)
    max_angle_deg: float = Field(default=50.0, gt=0, le=90)
    min_observations: int = Field(default=3, ge=1)


@dataclass
class _TrackState:
    lane: str
    peak_s: float
    peak_xy: tuple[float, float]
    peak_t: float
    observations: int = 0
    confidences: list[float] = field(default_factory=list)
    last_t: float = 0.0


@dataclass(frozen=True)
class WrongWayVerdict:
    """A track found going the wrong way."""

    track_id: int
    lane: str
    distance_px: float
    duration_s: float
    alignment: float
    confidence: float


class WrongWayJudge:
    """Per-track wrong-way decision over bottom-centre points (pure, no I/O).

    Example:
        >>> from detectors.lanes import Lane, LaneConfig
        >>> lane = Lane(LaneConfig(name="bike", polygon_xy=[(0, 0), (200, 0), (200, 50),
        ...                        (0, 50)], direction_xy=((0, 25), (200, 25))))
        >>> judge = WrongWayJudge(min_distance_px=40, min_duration_s=0.5)
        >>> verdicts = [judge.update(1, t / 10, 190 - 10 * t, 25, lane) for t in range(10)]
        >>> [v.track_id for v in verdicts if v]
        [1]
    """

    def __init__(
        self,
        *,
        min_distance_px: float = 40.0,
        min_duration_s: float = 0.5,
        max_angle_deg: float = 50.0,
        min_observations: int = 3,
        forget_after_s: float = 10.0,
    ) -> None:
        self.min_distance_px = min_distance_px
        self.min_duration_s = min_duration_s
        self.min_cos = math.cos(math.radians(max_angle_deg))
        self.min_observations = min_observations
        self.forget_after_s = forget_after_s
        self._states: dict[int, _TrackState] = {}
        self.decided: set[int] = set()

    def update(
        self, track_id: int, t_s: float, x: float, y: float, lane: Lane | None,
        confidence: float = 1.0,
    ) -> WrongWayVerdict | None:
        """Feed one observation; returns a verdict the first time a track qualifies."""
        if track_id in self.decided or lane is None:
            return None
        s = float(np.dot((x, y), lane.direction))
        state = self._states.get(track_id)
        if state is None or state.lane != lane.name:
            state = _TrackState(lane=lane.name, peak_s=s, peak_xy=(x, y), peak_t=t_s)
            self._states[track_id] = state
        state.observations += 1
        state.confidences.append(confidence)
        state.last_t = t_s
        if s >= state.peak_s:
            state.peak_s, state.peak_xy, state.peak_t = s, (x, y), t_s
            return None
        retreat = state.peak_s - s
        duration = t_s - state.peak_t
        dx, dy = x - state.peak_xy[0], y - state.peak_xy[1]
        length = math.hypot(dx, dy)
        alignment = -float(np.dot((dx, dy), lane.direction)) / length if length else 0.0
        if (
            retreat >= self.min_distance_px
            and duration >= self.min_duration_s
            and alignment >= self.min_cos
            and state.observations >= self.min_observations
        ):
            self.decided.add(track_id)
            del self._states[track_id]
            mean_conf = float(np.mean(state.confidences))
            return WrongWayVerdict(
                track_id=track_id, lane=lane.name, distance_px=retreat, duration_s=duration,
                alignment=alignment, confidence=mean_conf * (0.5 + 0.5 * alignment),
            )
        return None

    def forget_stale(self, now_s: float) -> None:
        """Drop tracks not seen for ``forget_after_s`` (bounded memory on long runs)."""
        stale = [k for k, st in self._states.items() if now_s - st.last_t > self.forget_after_s]
        for key in stale:
            del self._states[key]


class WrongWayDetector:
    """The ``wrong_way_ebike`` detector: backend → ByteTrack → :class:`WrongWayJudge`."""

    def __init__(self, config: WrongWayConfig, context: DetectorContext) -> None:
        lanes = context.lanes
        if config.lanes is not None:
            known = {lane.name for lane in lanes}
            missing = sorted(set(config.lanes) - known)
            if missing:
                raise ValueError(f"lanes {missing} are not defined for this camera "
                                 f"(defined: {sorted(known)})")
            lanes = [lane for lane in lanes if lane.name in config.lanes]
        if not lanes:
            raise ValueError("wrong_way_ebike needs at least one lane in the camera config")
        self.config = config
        self.context = context
        self.lanes = lanes
        self.hub = context.shared_hub()
        backend = self.hub.backend(config.backend)  # fail at start-up, not at frame 1
        if config.object_classes is not None:
            unknown = sorted(set(config.object_classes) - set(backend.class_names.values()))
            if unknown:
                raise ValueError(f"object_classes {unknown} are not in the class map "
                                 f"{sorted(backend.class_names.values())}")
        self.judge = WrongWayJudge(
            min_distance_px=config.min_distance_px, min_duration_s=config.min_duration_s,
            max_angle_deg=config.max_angle_deg, min_observations=config.min_observations,
        )
        self._first_seen: dict[int, datetime] = {}
        self._origin: datetime | None = None

    def process(self, frame: np.ndarray, observed_at: datetime) -> list[Detection]:
        """Track this frame and report tracks that just qualified as wrong-way."""
        tracked = self.hub.tracked(
            self.config.backend, self.config.tracker, self.context.frame_rate, frame,
            observed_at,
        )
        detections = tracked.of_classes(self.config.object_classes)
        if self._origin is None:
            self._origin = observed_at
        t_s = (observed_at - self._origin).total_seconds()
        out: list[Detection] = []
        assert detections.tracker_id is not None or len(detections) == 0
        for i in range(len(detections)):
            track_id = int(detections.tracker_id[i])  # type: ignore[index]
            self._first_seen.setdefault(track_id, observed_at)
            x, y = (float(v) for v in detections.bottom_center[i])
            lane = next((ln for ln in self.lanes if ln.contains(x, y)), None)
            verdict = self.judge.update(
                track_id, t_s, x, y, lane, float(detections.confidence[i])
            )
            if verdict is None:
                continue
            out.append(track_detection(
                self.context, kind=KIND, confidence=verdict.confidence,
                xyxy=detections.xyxy[i], track_id=track_id,
                first_seen=self._first_seen[track_id], observed_at=observed_at, frame=frame,
                attributes={
                    "lane": verdict.lane,
                    "distance_px": round(verdict.distance_px, 1),
                    "duration_s": round(verdict.duration_s, 2),
                    "class": tracked.class_names.get(int(detections.class_id[i]), "?"),
                },
            ))
        self.judge.forget_stale(t_s)
        return out

    def close(self) -> None:
        """Release the shared backends."""
        self.hub.close()


PLUGIN = DetectorPlugin(
    name=KIND,
    config_model=WrongWayConfig,
    factory=WrongWayDetector,
    kinds=(KIND,),
    description="tracks moving against a lane's allowed direction (any backend, "
    "weight-free motion by default)",
    example_config={"type": KIND},
)
