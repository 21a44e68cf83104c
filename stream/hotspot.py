"""Hot-spot kinds: occurrences counted per (cell, kind, event-time window).

The foundation counts; the statistics (baseline, p-values, clusters) plug in behind the
same :class:`HotspotEngine` interface.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from geo.grid import Grid
from stream.types import HotspotFinding, Occurrence


class HotspotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: int = Field(default=3600, ge=60)


class HotspotEngine:
    """Feed occurrences in event-time order; get findings when windows close."""

    def __init__(self, settings: HotspotSettings, grid: Grid) -> None:
        self.settings = settings
        self.grid = grid
        self.counts: Counter[tuple[str, str, int]] = Counter()

    def _bucket(self, at: datetime) -> int:
        return int(at.timestamp()) // self.settings.window_s

    def observe(self, occurrence: Occurrence) -> list[HotspotFinding]:
        key = (occurrence.cell_id, occurrence.kind, self._bucket(occurrence.observed_at))
        self.counts[key] += 1
        return []

    def flush(self) -> list[HotspotFinding]:
        return []
