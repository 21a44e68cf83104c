"""Example GridWatch plug-in: ``camera_obscured`` — the picture went dark.

Registered through ``[project.entry-points."gridwatch.detectors"]`` in this package's
``pyproject.toml``; GridWatch never imports it by name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import Field

from detectors.api import DetectorConfigBase, DetectorContext, DetectorPlugin
from detectors.schema import Detection

KIND = "camera_obscured"


class ObscuredConfig(DetectorConfigBase):
    """Config of ``camera_obscured``.

    Attributes:
        max_mean_brightness: a frame this dark (0–255 mean grey) or darker is obscured.
        min_duration_s: how long it must stay dark before one detection is reported.
    """

    type: Literal["camera_obscured"] = "camera_obscured"
    max_mean_brightness: float = Field(default=20.0, ge=0, le=255)
    min_duration_s: float = Field(default=2.0, ge=0)


class ObscuredDetector:
    """One detection per dark episode; a bright frame ends the episode."""

    def __init__(self, config: ObscuredConfig, context: DetectorContext) -> None:
        self.config = config
        self.context = context
        self._dark_since: datetime | None = None
        self._reported = False

    def process(self, frame: np.ndarray, observed_at: datetime) -> list[Detection]:
        if float(frame.mean()) > self.config.max_mean_brightness:
            self._dark_since, self._reported = None, False
            return []
        if self._dark_since is None:
            self._dark_since = observed_at
        dark_s = (observed_at - self._dark_since).total_seconds()
        if self._reported or dark_s < self.config.min_duration_s:
            return []
        self._reported = True
        height, width = frame.shape[:2]
        lon, lat = self.context.ground.to_lon_lat(width / 2, height / 2)
        stamp = self._dark_since.strftime("%Y%m%dT%H%M%S.%f%z")
        return [Detection.new(
            event_id=f"{self.context.station_id}:{self.context.source_id}:{KIND}:{stamp}",
            observed_at=observed_at,
            station_id=self.context.station_id,
            source_id=self.context.source_id,
            source_type=self.context.source_type,
            kind=KIND,
            confidence=1.0,
            lon=lon,
            lat=lat,
            attributes={"dark_s": round(dark_s, 2)},
        )]

    def close(self) -> None:
        """Nothing to release."""


PLUGIN = DetectorPlugin(
    name=KIND,
    config_model=ObscuredConfig,
    factory=ObscuredDetector,
    kinds=(KIND,),
    description="camera picture dark for too long (covered or failed camera)",
    example_config={"type": KIND, "min_duration_s": 0.1},
)
