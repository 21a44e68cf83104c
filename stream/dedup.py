"""Deduplication: the same detection twice, the same object over many frames, the same
rider seen by two cameras, a chattering source. Pure, event-time driven."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

from detectors.schema import Detection
from stream.policy import KindPolicy
from stream.types import Occurrence

METRES_PER_DEGREE = 111_320.0


class Verdict(str, Enum):
    NEW = "new"
    ABSORBED = "absorbed"  # same track / cooldown / other camera: joins an earlier one


class EventIdFilter:
    """Remembers event ids for ``horizon_s`` of event time (the idempotency key).

    A re-sent detection keeps its ``event_id``; within the horizon it is recognised and
    dropped. Memory is bounded by the number of detections per horizon.
    """

    def __init__(self, horizon_s: int) -> None:
        self.horizon_s = horizon_s
        self._seen: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._max_ts = -math.inf
        self._next_expiry = -math.inf
        self._jump: float | None = None  # an unconfirmed time past the whole horizon

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, event_id: str, ts: float) -> bool:
        """True if ``event_id`` was seen before; otherwise remember it and return False."""
        if event_id in self._seen:
            return True
        self._seen[event_id] = ts
        self._order.append((ts, event_id))
        if ts > self._max_ts:
            if ts - self._max_ts > self.horizon_s and self._max_ts > -math.inf:
                # a jump past the whole horizon would expire every id at once: one
                # timestamp (a bad clock) is not believed until a second one confirms it
                pending = self._jump
                if pending is None or abs(ts - pending) > self.horizon_s:
                    self._jump = ts
                    return False
                ts = min(ts, pending)
            self._jump = None
            self._max_ts = ts
            if ts >= self._next_expiry:  # sweep about once a minute of event time
                self._next_expiry = ts + 60.0
                self._expire(ts - self.horizon_s)
        return False

    def forget(self, event_id: str) -> None:
        """Let ``event_id`` through again (its processing failed and will be retried)."""
        self._seen.pop(event_id, None)

    def _expire(self, before: float) -> None:
        # ids arrive roughly in time order, so the deque front holds the oldest; an id
        # that arrived late and out of order simply lives a little longer. One dated
        # ahead of the clock (a bad clock) is moved to the back, so it cannot stop the
        # ids behind it from ever expiring.
        order = self._order
        ahead = 0
        while order and ahead < len(order):
            ts, event_id = order[0]
            if ts < before:
                order.popleft()
                self._seen.pop(event_id, None)
            elif ts > self._max_ts:
                order.rotate(-1)
                ahead += 1
            else:
                break


@dataclass(slots=True)
class _Recent:
    occurrence: Occurrence
    last_ts: float


def _distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    dx = (lon2 - lon1) * METRES_PER_DEGREE * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * METRES_PER_DEGREE
    return math.hypot(dx, dy)


class OccurrenceDeduper:
    """Turns hot-spot-kind detections into occurrences: one per track, one per source
    cooldown, one per physical rider even when two cameras saw it."""

    def __init__(self, horizon_s: float = 3600.0) -> None:
        """``horizon_s``: how long a track/source/cell entry is kept after its last
        sighting; use at least the largest ttl, cooldown or merge window of any kind."""
        self.horizon_s = horizon_s
        self._tracks: dict[tuple[str, str, str, str], _Recent] = {}
        self._sources: dict[tuple[str, str, str], _Recent] = {}
        self._cells: dict[tuple[str, str], deque[_Recent]] = {}
        self._ops = 0

    def add(
        self, detection: Detection, cell_id: str, ts: float, policy: KindPolicy
    ) -> tuple[Verdict, Occurrence]:
        """The occurrence this detection belongs to, and whether it is a new one."""
        d = detection
        self._ops += 1
        if self._ops % 4096 == 0:
            self._expire(ts)
        if d.track_id is not None:
            key = (d.station_id, d.source_id, d.kind, d.track_id)
            recent = self._tracks.get(key)
            if recent is not None and 0 <= ts - recent.last_ts <= policy.track_ttl_s:
                recent.last_ts = ts
                recent.occurrence.event_ids.append(d.event_id)
                return Verdict.ABSORBED, recent.occurrence
        source_key = (d.station_id, d.source_id, d.kind)
        if policy.source_cooldown_s:
            recent = self._sources.get(source_key)
            if recent is not None and 0 <= ts - recent.last_ts <= policy.source_cooldown_s:
                recent.occurrence.event_ids.append(d.event_id)
                if d.track_id is not None:
                    self._tracks[(*source_key, d.track_id)] = _Recent(recent.occurrence, ts)
                return Verdict.ABSORBED, recent.occurrence
        cell_key = (cell_id, d.kind)
        if policy.merge_across_sources_s:
            window = self._cells.setdefault(cell_key, deque())
            while window and ts - window[0].last_ts > policy.merge_across_sources_s:
                window.popleft()
            for recent in window:
                occ = recent.occurrence
                if (occ.source_id != d.source_id or occ.station_id != d.station_id) and \
                        abs(ts - recent.last_ts) <= policy.merge_across_sources_s and \
                        _distance_m(occ.lon, occ.lat, d.lon, d.lat) <= policy.merge_radius_m:
                    occ.event_ids.append(d.event_id)
                    if d.track_id is not None:
                        self._tracks[(*source_key, d.track_id)] = _Recent(occ, ts)
                    return Verdict.ABSORBED, occ
        occurrence = Occurrence(
            kind=d.kind,
            cell_id=cell_id,
            observed_at=d.observed_at,
            station_id=d.station_id,
            source_id=d.source_id,
            lon=d.lon,
            lat=d.lat,
            confidence=d.confidence,
            event_ids=[d.event_id],
            snapshot_url=d.evidence.snapshot_url if d.evidence else None,
            track_key=d.track_id,
        )
        recent = _Recent(occurrence, ts)
        if d.track_id is not None:
            self._tracks[(d.station_id, d.source_id, d.kind, d.track_id)] = recent
        self._sources[source_key] = recent
        if policy.merge_across_sources_s:
            self._cells[cell_key].append(recent)
        return Verdict.NEW, occurrence

    def _expire(self, now_ts: float) -> None:
        horizon = self.horizon_s
        for track_key in [k for k, r in self._tracks.items() if now_ts - r.last_ts > horizon]:
            del self._tracks[track_key]
        for source_key in [k for k, r in self._sources.items()
                           if now_ts - r.last_ts > horizon]:
            del self._sources[source_key]
        for cell_key in [k for k, w in self._cells.items()
                         if not w or now_ts - w[-1].last_ts > horizon]:
            del self._cells[cell_key]
