"""Scoring hot-spot findings against injected truth, and the naive baseline to beat.

Tickets are modelled from findings the way the desk makes them: findings of one (kind,
centre cell) are one ticket while they keep coming; a ticket whose hot spot has been quiet
for ``ticket_gap_s`` is taken as closed by the operator, and a later finding opens a new
ticket (no re-alert cooldown is applied here, so every false alarm is counted).

* **detected**: an injected cluster is detected when some finding's member cells include
  one of its cells and the finding's window overlaps the cluster's time span.
* **hours to detect**: from the cluster's start to the end of the first such window.
* **false tickets**: tickets none of whose findings matches any injected cluster, per
  1,000 cell-days after warm-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from geo.grid import Grid
from stream.hotspot_scenarios import InjectedCluster
from stream.types import HotspotFinding, Occurrence

HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class ModelTicket:
    """A ticket as modelled from findings: one (kind, centre cell) episode."""

    kind: str
    cell_id: str
    opened_at: float
    last_at: float
    findings: tuple[HotspotFinding, ...]


def tickets_from_findings(findings: Iterable[HotspotFinding],
                          ticket_gap_s: float = 86400.0) -> list[ModelTicket]:
    """Group findings into ticket episodes per (kind, centre cell)."""
    by_key: dict[tuple[str, str], list[HotspotFinding]] = {}
    for f in findings:
        by_key.setdefault((f.kind, f.cell_id), []).append(f)
    tickets: list[ModelTicket] = []
    for (kind, cell_id), group in sorted(by_key.items()):
        group.sort(key=lambda f: f.window_end)
        current: list[HotspotFinding] = []
        last = -np.inf
        for f in group:
            end = f.window_end.timestamp()
            if current and end - last > ticket_gap_s:
                tickets.append(ModelTicket(kind, cell_id, current[0].window_end.timestamp(),
                                           last, tuple(current)))
                current = []
            current.append(f)
            last = end
        if current:
            tickets.append(ModelTicket(kind, cell_id, current[0].window_end.timestamp(),
                                       last, tuple(current)))
    return sorted(tickets, key=lambda t: (t.opened_at, t.kind, t.cell_id))


def matches(f: HotspotFinding, c: InjectedCluster) -> bool:
    """A finding matches a cluster: shared cells and overlapping time."""
    if f.kind != c.kind or not set(f.member_cells).intersection(c.cells):
        return False
    return f.window_start.timestamp() < c.end_s and f.window_end.timestamp() > c.start_s


@dataclass(slots=True)
class ClusterOutcome:
    cluster: InjectedCluster
    detected: bool
    hours_to_detect: float | None
    members_found: int = 0


@dataclass(slots=True)
class Score:
    """Headline figures of one method on one scenario (or several, merged)."""

    method: str
    clusters: list[ClusterOutcome] = field(default_factory=list)
    tickets: int = 0
    false_tickets: int = 0
    cell_days: float = 0.0

    def detection_rate(self, *, min_strength: float = 0.0, min_hours: float = 0.0) -> float:
        """Share of clusters with ``strength >= min_strength`` and ``hours >= min_hours``
        that were detected (NaN if there are none)."""
        chosen = [o for o in self.clusters
                  if o.cluster.strength >= min_strength and o.cluster.hours >= min_hours]
        if not chosen:
            return float("nan")
        return sum(o.detected for o in chosen) / len(chosen)

    def hours_to_detect(self, *, min_strength: float = 0.0,
                        min_hours: float = 0.0) -> list[float]:
        return sorted(o.hours_to_detect for o in self.clusters
                      if o.hours_to_detect is not None and o.cluster.strength >= min_strength
                      and o.cluster.hours >= min_hours)

    @property
    def false_per_1000_cell_days(self) -> float:
        return 1000.0 * self.false_tickets / self.cell_days if self.cell_days else float("nan")

    def merge(self, other: Score) -> Score:
        return Score(self.method, self.clusters + other.clusters,
                     self.tickets + other.tickets, self.false_tickets + other.false_tickets,
                     self.cell_days + other.cell_days)

    def summary(self, *, min_strength: float = 3.0, min_hours: float = 24.0) -> dict[str, float]:
        hours = self.hours_to_detect(min_strength=min_strength, min_hours=min_hours)
        return {
            "clusters": float(len(self.clusters)),
            "detected_all": self.detection_rate(),
            "detected_target": self.detection_rate(min_strength=min_strength,
                                                   min_hours=min_hours),
            "tickets": float(self.tickets),
            "false_tickets": float(self.false_tickets),
            "false_per_1000_cell_days": self.false_per_1000_cell_days,
            "median_hours_to_detect": float(np.median(hours)) if hours else float("nan"),
            "p90_hours_to_detect": float(np.percentile(hours, 90)) if hours else float("nan"),
        }


def score(method: str, findings: Sequence[HotspotFinding],
          clusters: Sequence[InjectedCluster], *, n_cells: int, days: float,
          warmup_days: float, ticket_gap_s: float = 86400.0) -> Score:
    """Score findings against the injected clusters of one scenario."""
    outcomes: list[ClusterOutcome] = []
    for c in clusters:
        hits = [f for f in findings if matches(f, c)]
        if hits:
            first = min(f.window_end.timestamp() for f in hits)
            found = set().union(*(set(f.member_cells) for f in hits)) & set(c.cells)
            outcomes.append(ClusterOutcome(c, True, (first - c.start_s) / HOUR_S, len(found)))
        else:
            outcomes.append(ClusterOutcome(c, False, None))
    tickets = tickets_from_findings(findings, ticket_gap_s)
    false = sum(1 for t in tickets
                if not any(matches(f, c) for f in t.findings for c in clusters))
    return Score(method, outcomes, len(tickets), false,
                 n_cells * max(days - warmup_days, 0.0))


class NaiveThresholdEngine:
    """The baseline to beat: a ticket whenever a cell's count in a sliding window reaches
    a fixed number (the same for every cell), evaluated on every hour boundary.

    Same interface as :class:`stream.hotspot.HotspotEngine`.
    """

    def __init__(self, grid: Grid, *, threshold: int, window_s: int = 86400,
                 warmup_s: int = 7 * 86400, utc_offset_s: int = 8 * HOUR_S) -> None:
        self.threshold = threshold
        self.cell_ids = [c.cell_id for c in grid.cells]
        self._lon_lat = [c.lon_lat for c in grid.cells]
        self._index = {cid: i for i, cid in enumerate(self.cell_ids)}
        self._wh = window_s // HOUR_S
        self._warmup_h = warmup_s // HOUR_S
        self._offset = utc_offset_s
        self._ring = np.zeros((self._wh, len(self.cell_ids)), dtype=np.int64)
        self._current = np.zeros(len(self.cell_ids), dtype=np.int64)
        self._hour: int | None = None
        self._first: int | None = None
        self._kind = ""

    def observe(self, occurrence: Occurrence) -> list[HotspotFinding]:
        hour = int((occurrence.observed_at.timestamp() + self._offset) // HOUR_S)
        out: list[HotspotFinding] = []
        if self._hour is None:
            self._hour = self._first = hour
        elif hour > self._hour:
            out = self._advance(hour)
        self._kind = occurrence.kind
        idx = self._index.get(occurrence.cell_id)
        if idx is not None and hour >= self._hour:
            self._current[idx] += 1
        return out

    def flush(self) -> list[HotspotFinding]:
        return [] if self._hour is None else self._advance(self._hour + 1)

    def _advance(self, to_hour: int) -> list[HotspotFinding]:
        assert self._hour is not None and self._first is not None
        out: list[HotspotFinding] = []
        while self._hour < to_hour:
            h = self._hour
            self._ring[h % self._wh] = self._current
            self._current[:] = 0
            if h - self._first >= self._warmup_h:
                totals = self._ring.sum(axis=0)
                for i in np.nonzero(totals >= self.threshold)[0].tolist():
                    lon, lat = self._lon_lat[i]
                    start = (h - self._wh + 1) * HOUR_S - self._offset
                    out.append(HotspotFinding(
                        kind=self._kind, cell_id=self.cell_ids[i],
                        member_cells=(self.cell_ids[i],),
                        window_start=datetime.fromtimestamp(start, UTC),
                        window_end=datetime.fromtimestamp((h + 1) * HOUR_S - self._offset, UTC),
                        observed=int(totals[i]), expected=float(self.threshold), p_value=1.0,
                        lon=lon, lat=lat))
            self._hour += 1
        return out
