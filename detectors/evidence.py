"""Turning a per-track decision into a wire detection with JPEG evidence."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from detectors.api import DetectorContext
from detectors.schema import Detection

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def track_event_id(
    context: DetectorContext, kind: str, track_id: int, first_seen: datetime
) -> str:
    """A stable id for "this track did this": the same run gives the same id."""
    stamp = first_seen.strftime("%Y%m%dT%H%M%S.%f%z")
    return f"{context.station_id}:{context.source_id}:{kind}:{stamp}:{track_id}"[:128]


def write_snapshot(
    frame: np.ndarray, xyxy: np.ndarray, label: str, directory: Path, name: str
) -> str:
    """Write ``frame`` with the box and label drawn as JPEG; return its ``file://`` URL."""
    import cv2

    image = frame.copy()
    x1, y1, x2, y2 = (int(round(float(v))) for v in xyxy)
    cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 255), 2)
    cv2.putText(image, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 255), 1, cv2.LINE_AA)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_UNSAFE.sub('_', name)}.jpg"
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 85]):
        raise OSError(f"could not write snapshot {path}")
    return path.resolve().as_uri()


def track_detection(
    context: DetectorContext,
    *,
    kind: str,
    confidence: float,
    xyxy: np.ndarray,
    track_id: int,
    first_seen: datetime,
    observed_at: datetime,
    frame: np.ndarray | None,
    attributes: dict[str, Any] | None = None,
) -> Detection:
    """One wire detection for one track; lon/lat at the box's bottom centre."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    lon, lat = context.ground.to_lon_lat((x1 + x2) / 2, y2)
    event_id = track_event_id(context, kind, track_id, first_seen)
    snapshot_url = None
    if frame is not None and context.snapshot_dir is not None:
        try:
            snapshot_url = write_snapshot(
                frame, xyxy, f"{kind} #{track_id}", context.snapshot_dir, event_id
            )
        except OSError as exc:  # evidence is nice to have; the detection still counts
            logger.warning("%s/%s: snapshot failed: %s", context.station_id,
                           context.source_id, exc)
    return Detection.new(
        event_id=event_id,
        observed_at=observed_at,
        station_id=context.station_id,
        source_id=context.source_id,
        source_type=context.source_type,
        kind=kind,
        confidence=round(min(max(confidence, 0.0), 1.0), 4),
        lon=lon,
        lat=lat,
        track_id=f"{context.source_id}:{track_id}"[:128],
        evidence={"snapshot_url": snapshot_url,
                  "bbox_xyxy": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)]},
        attributes=attributes,
    )
