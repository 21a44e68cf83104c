"""Incident clustering for acute kinds: detections of one kind in one cell, each within
``window_s`` of the incident's span, are one incident (three smoke detectors in one
building alarming for ten minutes = one fire)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from pydantic_core import TzInfo

from detectors.schema import Detection
from stream.policy import KindPolicy
from stream.types import Incident, IncidentEvent


def incident_id_for(kind: str, cell_id: str, first_event_id: str) -> str:
    """Deterministic id: the same first detection always names the same incident."""
    digest = hashlib.sha256(f"{kind}\x1f{cell_id}\x1f{first_event_id}".encode()).hexdigest()
    return f"INC-{digest[:16]}"


class IncidentClusterer:
    """Keeps the current incident per (cell, kind)."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, str], Incident] = {}
        # per current incident: its source ids as a set (``source_ids``, a list for its
        # first-seen order, is checked on every detection that joins) and its span as
        # timestamps [opened, last] (comparing aware datetimes that carry different tzinfo
        # objects calls ``utcoffset`` on both, ~0.5 µs a comparison)
        self._state: dict[tuple[str, str], tuple[set[str], list[float]]] = {}

    def __len__(self) -> int:
        return len(self._current)

    def add(
        self,
        detection: Detection,
        cell_id: str,
        policy: KindPolicy,
        *,
        counts_as_detection: bool = True,
        ts: float | None = None,
    ) -> IncidentEvent:
        """Join the current incident of the cell and kind, or open a new one.

        ``counts_as_detection=False`` attaches the event id without counting it (a
        detection absorbed by the source cooldown). ``ts`` is
        ``detection.observed_at.timestamp()`` where the caller has it already.
        """
        d = detection
        key = (cell_id, d.kind)
        at = d.observed_at
        if ts is None:
            ts = at.timestamp()
        source = f"{d.station_id}/{d.source_id}"
        incident = self._current.get(key)
        window = policy.window_s
        if incident is not None:
            sources, span = self._state[key]
            by_ts = type(at.tzinfo) in _FIXED_OFFSET
            if _within(ts - span[1], window, at, incident.last_at, by_ts) and \
                    _within(span[0] - ts, window, incident.opened_at, at, by_ts):
                incident.event_ids.append(d.event_id)
                if _later(ts, span[1], at, incident.last_at, by_ts):
                    incident.last_at = at
                    span[1] = ts
                if _later(span[0], ts, incident.opened_at, at, by_ts):
                    incident.opened_at = at
                    span[0] = ts
                if d.confidence > incident.max_confidence:
                    incident.max_confidence = d.confidence
                if source not in sources:
                    sources.add(source)
                    incident.source_ids.append(source)
                if d.evidence and d.evidence.snapshot_url and \
                        len(incident.snapshot_urls) < 5:
                    incident.snapshot_urls.append(d.evidence.snapshot_url)
                if counts_as_detection:
                    incident.detection_count += 1
                return IncidentEvent(incident, False, (d.event_id,), d.confidence,
                                     d.source_type)
            if _later(span[0], ts, incident.opened_at, at, by_ts):
                # far older than the current incident (a very late delivery): its own
                # incident, which does not replace the current one
                late = self._new(d, cell_id, source)
                return IncidentEvent(late, True, (d.event_id,), d.confidence, d.source_type)
        incident = self._new(d, cell_id, source)
        self._current[key] = incident
        self._state[key] = ({source}, [ts, ts])
        return IncidentEvent(incident, True, (d.event_id,), d.confidence, d.source_type)

    @staticmethod
    def _new(d: Detection, cell_id: str, source: str) -> Incident:
        snapshots = [d.evidence.snapshot_url] if d.evidence and d.evidence.snapshot_url else []
        return Incident(
            incident_id=incident_id_for(d.kind, cell_id, d.event_id),
            kind=d.kind,
            cell_id=cell_id,
            opened_at=d.observed_at,
            last_at=d.observed_at,
            lon=d.lon,
            lat=d.lat,
            max_confidence=d.confidence,
            event_ids=[d.event_id],
            source_ids=[source],
            snapshot_urls=snapshots,
            detection_count=1,
        )

    def expire(self, before_ts: float, window_s_max: int) -> None:
        """Forget incidents that can no longer grow (memory bound on long runs)."""
        state = self._state
        stale = [k for k, (_, span) in state.items() if span[1] + window_s_max < before_ts]
        for k in stale:
            del self._current[k]
            del state[k]


# Timestamps are datetimes rounded to a double: off by less than 1e-4 s for any year up
# to 9999, and order-preserving (never reversing two instants, though far in the future
# two may round to one value). Where the doubles cannot tell, the datetimes decide, so
# the answers are exactly those of datetime arithmetic. Not for a zone with daylight
# saving (a ``ZoneInfo`` from ``Detection.new``): two datetimes sharing one such tzinfo
# compare in wall-clock time, so the datetimes always decide there.
_TS_SLACK_S = 1e-3
_FIXED_OFFSET = frozenset({timezone, TzInfo})  # what detections parsed from JSON carry


def _within(delta_s: float, limit_s: float, later: datetime, earlier: datetime,
            by_ts: bool) -> bool:
    """``(later - earlier).total_seconds() <= limit_s``; ``delta_s`` is the difference
    of their timestamps."""
    if by_ts:
        if delta_s <= limit_s - _TS_SLACK_S:
            return True
        if delta_s > limit_s + _TS_SLACK_S:
            return False
    return (later - earlier).total_seconds() <= limit_s


def _later(ts: float, other_ts: float, at: datetime, other: datetime, by_ts: bool) -> bool:
    """``at > other``; ``ts`` and ``other_ts`` are their timestamps."""
    if by_ts and ts != other_ts:
        return ts > other_ts
    return at > other
