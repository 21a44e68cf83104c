"""What the stream stage produces: incidents for acute kinds, occurrences and hot-spot
findings for chronic kinds. Plain data; the ticketing stage consumes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Incident:
    """Detections of one kind in one cell close together in event time (one fire, one
    forced door). Mutable while it is open: later detections join it.

    ``incident_id`` is deterministic (kind, cell and the first event id), so replaying the
    same input gives the same ids and a re-delivered incident upserts, never duplicates.
    """

    incident_id: str
    kind: str
    cell_id: str
    opened_at: datetime
    last_at: datetime
    lon: float
    lat: float
    max_confidence: float
    event_ids: list[str] = field(default_factory=list)
    source_ids: list[str] = field(default_factory=list)  # "<station>/<source>", first-seen order
    snapshot_urls: list[str] = field(default_factory=list)
    detection_count: int = 0


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """An incident was opened (``opened``) or grew (``joined``) by one detection.

    ``new_event_ids`` are the detection ids that this event added to the incident (one,
    or more where dedup absorbed detections into it). ``detections`` is how many
    detections the event stands for: 1 from the stream; more where the ticket side
    merged several joins of one incident in a batch into one
    (:meth:`~ticketing.idempotent.IdempotentDesk.merge_joins`; ``confidence`` is then
    their highest).
    """

    incident: Incident
    opened: bool
    new_event_ids: tuple[str, ...]
    confidence: float
    source_type: str
    detections: int = 1


@dataclass(slots=True)
class Occurrence:
    """One physical occurrence of a chronic violation (one rider, one track), after
    dedup. The hot-spot engine counts these per cell and window."""

    kind: str
    cell_id: str
    observed_at: datetime
    station_id: str
    source_id: str
    lon: float
    lat: float
    confidence: float
    event_ids: list[str] = field(default_factory=list)
    snapshot_url: str | None = None
    track_key: str | None = None


@dataclass(frozen=True, slots=True)
class HotspotFinding:
    """A significant excess of a chronic kind in a cell (or a cluster of cells around a
    centre cell) over one event-time window. The ticketing stage opens or updates one
    ticket per (centre cell, kind)."""

    kind: str
    cell_id: str  # the centre cell
    member_cells: tuple[str, ...]
    window_start: datetime
    window_end: datetime
    observed: int
    expected: float
    p_value: float
    lon: float
    lat: float
    event_ids: tuple[str, ...] = ()
    top_sources: tuple[tuple[str, int], ...] = ()  # ("station/source", count)
    sample_event_ids: tuple[str, ...] = ()
    snapshot_urls: tuple[str, ...] = ()
    hourly_profile: tuple[tuple[int, int, float], ...] = ()  # (hour, observed, expected)
    extra: dict[str, Any] = field(default_factory=dict)
    # after a ticket for this (cell, kind) was closed or dismissed, findings within this
    # many seconds of its last update do not open a new one (0: off)
    realert_cooldown_s: int = 0

    def as_ticket_hotspot(self) -> dict[str, Any]:
        """The ``hotspot`` object of the replay contract (plus evidence fields)."""
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "observed": self.observed,
            "expected": round(self.expected, 4),
            "p_value": float(f"{self.p_value:.6g}"),
            "member_cells": list(self.member_cells),
            "top_sources": [{"source": s, "count": c} for s, c in self.top_sources],
            "sample_event_ids": list(self.sample_event_ids),
            "snapshot_urls": list(self.snapshot_urls),
            "hourly_profile": [
                {"hour": h, "observed": o, "expected": round(e, 4)}
                for h, o, e in self.hourly_profile
            ],
            **self.extra,
        }
