"""Tools to tune a camera: every track with its path, and an annotated video.

``gridwatch detect VIDEO --camera CAMERA.yaml --out d.jsonl --tracks-out tracks.jsonl
--annotate annotated.mp4`` uses both. They watch a :class:`~detectors.camera.CameraPipeline`
through its observer hooks and change nothing it decides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from detectors.camera import CameraPipeline
from detectors.inference import TrackedFrame
from detectors.schema import Detection


@dataclass
class _Track:
    role: str
    first_seen: datetime
    last_seen: datetime
    path: list[tuple[float, float, float]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)


class TrackRecorder:
    """Records every confirmed track of a pipeline: role, first/last seen and its path.

    One JSON object per track and tracker (``tracker`` numbers the camera's distinct
    backend + tracker settings), ``path`` as ``[t_s, x, y]`` bottom-centre points, ``t_s``
    in seconds since the first analysed frame.
    """

    def __init__(self, pipeline: CameraPipeline) -> None:
        self._tracks: dict[tuple[int, int], _Track] = {}
        self._keys: dict[str, int] = {}
        self._origin: datetime | None = None
        pipeline.context.shared_hub().observers.append(self._on_tracked)

    def _on_tracked(self, key: str, observed_at: datetime, tracked: TrackedFrame) -> None:
        tracker = self._keys.setdefault(key, len(self._keys))
        if self._origin is None:
            self._origin = observed_at
        t_s = (observed_at - self._origin).total_seconds()
        dets = tracked.detections
        if dets.tracker_id is None:
            return
        for i in range(len(dets)):
            track_key = (tracker, int(dets.tracker_id[i]))
            role = tracked.class_names.get(int(dets.class_id[i]), "?")
            track = self._tracks.get(track_key)
            if track is None:
                track = self._tracks[track_key] = _Track(role, observed_at, observed_at)
            track.last_seen = observed_at
            x, y = (float(v) for v in dets.bottom_center[i])
            track.path.append((round(t_s, 3), round(x, 1), round(y, 1)))
            track.confidences.append(float(dets.confidence[i]))

    def rows(self) -> list[dict[str, Any]]:
        """The tracks as JSON-ready dicts, ordered by tracker and track id."""
        out = []
        for (tracker, track_id), track in sorted(self._tracks.items()):
            (_, x0, y0), (_, x1, y1) = track.path[0], track.path[-1]
            out.append({
                "tracker": tracker, "track_id": track_id, "role": track.role,
                "first_seen": track.first_seen.isoformat(),
                "last_seen": track.last_seen.isoformat(),
                "observations": len(track.path),
                "mean_confidence": round(float(np.mean(track.confidences)), 4),
                "displacement_xy": [round(x1 - x0, 1), round(y1 - y0, 1)],
                "path": [list(p) for p in track.path],
            })
        return out

    def write(self, path: Path) -> int:
        """Write the tracks as JSONL; returns how many."""
        rows = self.rows()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
        return len(rows)


class VideoAnnotator:
    """Writes each analysed frame with boxes, track ids and traces (supervision's
    annotators), the lanes with an arrow in their allowed direction, and verdicts (the
    detections decided on that frame, kept on screen for a second) to an MP4 file.

    Raises:
        ValueError: supervision is missing or the file cannot be written.
    """

    VERDICT_HOLD_S = 1.0

    def __init__(self, pipeline: CameraPipeline, path: Path) -> None:
        try:
            import supervision as sv
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError("--annotate needs supervision: pip install 'gridwatch[vision]'"
                             ) from exc
        self._sv = sv
        self.path = path
        self.fps = pipeline.context.frame_rate
        self._lanes = pipeline.context.lanes
        self._box = sv.BoxAnnotator(thickness=2, color_lookup=sv.ColorLookup.TRACK)
        self._label = sv.LabelAnnotator(text_scale=0.4, text_padding=3,
                                        color_lookup=sv.ColorLookup.TRACK)
        self._trace = sv.TraceAnnotator(thickness=2, trace_length=50,
                                        position=sv.Position.BOTTOM_CENTER,
                                        color_lookup=sv.ColorLookup.TRACK)
        self._writer: Any = None
        self._tracked: TrackedFrame | None = None
        self._first_key: str | None = None
        self._verdicts: list[tuple[datetime, Detection]] = []
        self.frames_written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        pipeline.context.shared_hub().observers.append(self._on_tracked)
        pipeline.observers.append(self._on_frame)

    def _on_tracked(self, key: str, observed_at: datetime, tracked: TrackedFrame) -> None:
        if self._first_key is None:
            self._first_key = key
        if key == self._first_key:  # the first model's tracks (one box per object)
            self._tracked = tracked

    def _on_frame(self, frame: np.ndarray, observed_at: datetime,
                  detections: list[Detection]) -> None:
        import cv2

        image = frame.copy()
        for lane in self._lanes:
            polygon = lane.polygon.astype(np.int32)
            cv2.polylines(image, [polygon], True, (255, 200, 0), 2)
            centre = polygon.mean(axis=0)
            tip = centre + lane.direction * 60
            cv2.arrowedLine(image, tuple(int(v) for v in centre), tuple(int(v) for v in tip),
                            (255, 200, 0), 3, tipLength=0.3)
            cv2.putText(image, lane.name, (int(centre[0]) + 4, int(centre[1]) - 8),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 200, 0), 1, cv2.LINE_AA)
        tracked, self._tracked = self._tracked, None
        if tracked is not None and len(tracked.detections):
            dets = tracked.detections
            sv_dets = dets.to_supervision()
            labels = [f"#{int(t)} {tracked.class_names.get(int(c), '?')} {float(p):.2f}"
                      for t, c, p in zip(dets.tracker_id if dets.tracker_id is not None
                                         else [-1] * len(dets), dets.class_id,
                                         dets.confidence, strict=True)]
            image = self._trace.annotate(image, sv_dets)
            image = self._box.annotate(image, sv_dets)
            image = self._label.annotate(image, sv_dets, labels=labels)
        self._verdicts = [(t, d) for t, d in self._verdicts
                          if (observed_at - t).total_seconds() < self.VERDICT_HOLD_S]
        self._verdicts += [(observed_at, d) for d in detections]
        for _, d in self._verdicts:
            box = d.evidence.bbox_xyxy if d.evidence is not None else None
            if not box:
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 255), 3)
            cv2.putText(image, f"{d.kind} {d.track_id}", (x1, max(14, y1 - 6)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 2, cv2.LINE_AA)
        cv2.putText(image, observed_at.isoformat(timespec="milliseconds"), (8, 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        if self._writer is None:
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"),
                                           max(self.fps, 1.0), (width, height))
            if not self._writer.isOpened():
                raise ValueError(f"--annotate: cannot write {self.path}")
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
