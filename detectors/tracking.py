"""Multi-object tracking: ByteTrack from Roboflow's ``trackers`` package.

One physical object keeps one ``tracker_id`` across frames, so the decision logic can
report once per track instead of once per frame.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from detectors.core import Detections

#: Tracker thresholds for the weight-free motion backend (no confidence threshold).
MOTION_ACTIVATION = 0.5
MOTION_HIGH = 0.6


class TrackerConfig(BaseModel):
    """ByteTrack settings (each documented with its effect in ``docs/detectors.md``).

    Attributes:
        lost_track_buffer_s: how long a track survives unseen (occlusion, missed boxes);
            longer bridges occlusions but lets a lost id jump to a newcomer.
        activation_threshold: minimum confidence for an unmatched box to start a track;
            ``None`` (default) follows the backend's ``confidence_threshold``, so every box
            the detector keeps can start one.
        high_confidence_threshold: boxes at or above it are matched first and only they
            may start tracks; boxes below it only extend existing tracks. ``None``
            (default) is the activation threshold (with the ``motion`` backend: 0.6, or the
            activation threshold when that is higher).
        minimum_consecutive_frames: frames a new track must be matched in before it gets
            an id (higher suppresses one-frame false positives, delays every track).
        minimum_iou: IoU a box needs with a track's predicted box to continue it (lower
            follows fast movers at low frame rates, higher keeps neighbours apart).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lost_track_buffer_s: float = Field(default=1.5, ge=0)
    activation_threshold: float | None = Field(default=None, ge=0, le=1)
    high_confidence_threshold: float | None = Field(default=None, ge=0, le=1)
    minimum_consecutive_frames: int = Field(default=2, ge=1)
    minimum_iou: float = Field(default=0.1, ge=0, le=1)

    def resolved(self, detector_threshold: float | None) -> TrackerConfig:
        """Thresholds left unset filled in from the detector's confidence threshold.

        ``None`` (a backend without one: ``motion``, whose scores are 0.5–1 blob fill)
        gives ByteTrack's fixed defaults, activation 0.5 and high 0.6.
        """
        if detector_threshold is None:
            default_activation, default_high = MOTION_ACTIVATION, MOTION_HIGH
        else:
            default_activation = default_high = detector_threshold
        activation = (default_activation if self.activation_threshold is None
                      else self.activation_threshold)
        if self.high_confidence_threshold is not None:
            high = self.high_confidence_threshold
        elif self.activation_threshold is not None:
            high = max(activation, default_high) if detector_threshold is None else activation
        else:
            high = default_high
        return self.model_copy(update={"activation_threshold": activation,
                                       "high_confidence_threshold": high})


class ByteTracker:
    """Adds ``tracker_id`` to detections; only confirmed tracks are returned."""

    def __init__(self, config: TrackerConfig, frame_rate: float) -> None:
        """``config`` with unset thresholds is taken as a 0.25-threshold detector's."""
        if config.activation_threshold is None or config.high_confidence_threshold is None:
            config = config.resolved(0.25)
        assert config.activation_threshold is not None
        assert config.high_confidence_threshold is not None
        self.config = config
        try:
            from trackers import ByteTrackTracker
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError("tracking needs the 'trackers' package: "
                             "pip install 'gridwatch[vision]'") from exc
        # trackers counts its buffer in 30 fps frames and rescales by frame_rate.
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(config.lost_track_buffer_s * 30)),
            frame_rate=max(frame_rate, 0.1),
            track_activation_threshold=config.activation_threshold,
            minimum_consecutive_frames=config.minimum_consecutive_frames,
            minimum_iou_threshold=config.minimum_iou,
            high_conf_det_threshold=config.high_confidence_threshold,
        )

    def update(self, detections: Detections, timestamp_s: float | None = None) -> Detections:
        """Track one frame's detections.

        Args:
            detections: this frame's boxes.
            timestamp_s: event time in seconds (any fixed origin). With it, frames skipped
                by sampling or the motion gate count as elapsed time, so a lost track still
                expires after ``lost_track_buffer_s``.
        """
        tracked = Detections.from_supervision(
            self._tracker.update(detections.to_supervision(), timestamp=timestamp_s)
        )
        if tracked.tracker_id is None:
            return Detections.empty().with_tracker_id([])
        return tracked[tracked.tracker_id >= 0]
