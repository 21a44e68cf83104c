"""Multi-object tracking: ByteTrack from Roboflow's ``trackers`` package.

One physical object keeps one ``tracker_id`` across frames, so the decision logic can
report once per track instead of once per frame.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from detectors.core import Detections


class TrackerConfig(BaseModel):
    """ByteTrack settings.

    Attributes:
        lost_track_buffer_s: how long a track survives unseen (occlusion, missed boxes).
        activation_threshold: minimum confidence to start a track.
        high_confidence_threshold: splits ByteTrack's two association stages.
        minimum_consecutive_frames: frames before a new track gets an id.
        minimum_iou: IoU needed to match a box to a track.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lost_track_buffer_s: float = Field(default=1.5, ge=0)
    activation_threshold: float = Field(default=0.5, ge=0, le=1)
    high_confidence_threshold: float = Field(default=0.6, ge=0, le=1)
    minimum_consecutive_frames: int = Field(default=2, ge=1)
    minimum_iou: float = Field(default=0.1, ge=0, le=1)


class ByteTracker:
    """Adds ``tracker_id`` to detections; only confirmed tracks are returned."""

    def __init__(self, config: TrackerConfig, frame_rate: float) -> None:
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
