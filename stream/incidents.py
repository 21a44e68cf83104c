"""Incident clustering for acute kinds: detections of one kind in one cell, each within
``window_s`` of the incident's span, are one incident (three smoke detectors in one
building alarming for ten minutes = one fire)."""

from __future__ import annotations

import hashlib

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
        # the source ids of each current incident, as a set: ``source_ids`` (a list, for
        # its first-seen order) is checked on every detection that joins
        self._sources: dict[tuple[str, str], set[str]] = {}

    def __len__(self) -> int:
        return len(self._current)

    def add(
        self,
        detection: Detection,
        cell_id: str,
        policy: KindPolicy,
        *,
        counts_as_detection: bool = True,
    ) -> IncidentEvent:
        """Join the current incident of the cell and kind, or open a new one.

        ``counts_as_detection=False`` attaches the event id without counting it (a
        detection absorbed by the source cooldown).
        """
        d = detection
        key = (cell_id, d.kind)
        at = d.observed_at
        source = f"{d.station_id}/{d.source_id}"
        incident = self._current.get(key)
        window = policy.window_s
        if incident is not None:
            after = (at - incident.last_at).total_seconds()
            before = (incident.opened_at - at).total_seconds()
            if after <= window and before <= window:
                incident.event_ids.append(d.event_id)
                if at > incident.last_at:
                    incident.last_at = at
                if at < incident.opened_at:
                    incident.opened_at = at
                if d.confidence > incident.max_confidence:
                    incident.max_confidence = d.confidence
                sources = self._sources[key]
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
            if at < incident.opened_at:
                # far older than the current incident (a very late delivery): its own
                # incident, which does not replace the current one
                late = self._new(d, cell_id, source)
                return IncidentEvent(late, True, (d.event_id,), d.confidence, d.source_type)
        incident = self._new(d, cell_id, source)
        self._current[key] = incident
        self._sources[key] = {source}
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
        stale = [k for k, inc in self._current.items()
                 if inc.last_at.timestamp() + window_s_max < before_ts]
        for k in stale:
            del self._current[k]
            del self._sources[k]
