"""The stream stage: validated detection + cell in, incident events and hot-spot findings
out. Event time throughout; out-of-order input within ``lateness_s`` is put back in order.

The same processor runs in replay, in the embedded service and behind faust agents; it
does no I/O and reads no clock.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from detectors.schema import Detection
from stream.dedup import EventIdFilter, OccurrenceDeduper, Verdict
from stream.hotspot import HotspotEngine
from stream.incidents import IncidentClusterer
from stream.policy import KindPolicy, Mode, PolicyBook, StreamSettings
from stream.types import HotspotFinding, IncidentEvent

StreamOutput = IncidentEvent | HotspotFinding


def live_stream_settings(settings: StreamSettings) -> StreamSettings:
    """Live processing (the embedded service, the scale-out worker): no reorder buffer
    (``lateness_s=0``). Waiting ``lateness_s`` for stragglers would delay every fire alarm
    by that long, and the incident clusterer joins out-of-order detections by their span
    anyway. Replay keeps the configured buffer (it reads a file in event time)."""
    return settings.model_copy(update={"lateness_s": 0})


@dataclass(slots=True)
class StreamStats:
    """Counters for the replay summary and the service metrics."""

    accepted: int = 0
    duplicates: int = 0
    absorbed: int = 0
    out_of_area: int = 0
    self_tests: int = 0
    late: int = 0
    incidents: int = 0
    occurrences: int = 0
    hotspots: int = 0  # distinct hot spots (a persisting one is re-reported hourly)
    hotspot_reports: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "absorbed": self.absorbed,
            "out_of_area": self.out_of_area,
            "self_tests": self.self_tests,
            "late": self.late,
            "incidents": self.incidents,
            "occurrences": self.occurrences,
            "hotspots": self.hotspots,
            "hotspot_reports": self.hotspot_reports,
            "by_kind": dict(sorted(self.by_kind.items())),
        }


class StreamProcessor:
    """Dedup, reorder, cluster and count. Feed with :meth:`push`, end with :meth:`flush`.

    ``filter_event_ids=False`` for a runtime that drops re-sent detections (by event id)
    before pushing them, with its own filter (the embedded service's intake): the
    processor then trusts every pushed detection to be new.

    Example:
        >>> proc = StreamProcessor(StreamSettings(), PolicyBook(), hotspot_engine)
        >>> outputs = proc.push(detection, "C0001")  # cell id, or None if out of area
    """

    def __init__(
        self,
        settings: StreamSettings,
        policies: PolicyBook,
        hotspots: HotspotEngine,
        *,
        filter_event_ids: bool = True,
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.hotspots = hotspots
        self.stats = StreamStats()
        # the event-id filter (a re-sent detection is dropped within the dedup horizon).
        # ``filter_event_ids=False``: the runtime filters before it pushes, with the one
        # filter it owns (the embedded service's intake, which must know repeats while
        # their first copy is still queued); a second filter here would only repeat it
        self._ids: EventIdFilter | None = (EventIdFilter(settings.dedup_horizon_s)
                                           if filter_event_ids else None)
        all_policies = [*policies.kinds.values(), policies.default_kind]
        self._window_max = max(p.window_s for p in all_policies)
        self._occurrences = OccurrenceDeduper(horizon_s=max(
            3600, *(max(p.track_ttl_s, p.source_cooldown_s, p.merge_across_sources_s)
                    for p in all_policies)))
        self._incidents = IncidentClusterer()
        self._last_source: dict[tuple[str, str, str], float] = {}
        self._buffer: list[tuple[float, int, Detection, str]] = []
        self._seq = itertools.count()
        self._max_ts = float("-inf")
        self._released_ts = float("-inf")
        self._since_expiry = 0
        self._policy_cache: dict[str, tuple[KindPolicy, bool]] = {}
        self._episodes: set[tuple[str, str, str]] = set()

    def push(self, detection: Detection, cell_id: str | None, *,
             ts: float | None = None) -> list[StreamOutput]:
        """Take one valid detection and the cell it falls in (``None``: out of area);
        ``ts`` is ``detection.observed_at.timestamp()`` where the caller has it already."""
        if ts is None:
            ts = detection.observed_at.timestamp()
        stats = self.stats
        ids = self._ids
        if ids is not None and ids.seen(detection.event_id, ts):
            stats.duplicates += 1
            return []
        if cell_id is None:
            stats.out_of_area += 1
            return []
        if detection.attributes and detection.is_self_test:
            stats.self_tests += 1
            return []
        stats.accepted += 1
        by_kind = stats.by_kind
        kind = detection.kind
        by_kind[kind] = by_kind.get(kind, 0) + 1
        outputs: list[StreamOutput] = []
        if ts < self._released_ts:
            # later than the lateness tolerance: handle it now, out of order
            stats.late += 1
            self._process(detection, cell_id, ts, outputs)
            return outputs
        buffer = self._buffer
        if not buffer and self.settings.lateness_s <= 0:
            # live, no reorder buffer: what the heap below would do (push, then release
            # at once), without the heap entry
            if ts > self._max_ts:
                self._max_ts = ts
            self._released_ts = ts
            self._process(detection, cell_id, ts, outputs)
            return outputs
        heapq.heappush(buffer, (ts, next(self._seq), detection, cell_id))
        if ts > self._max_ts:
            self._max_ts = ts
        watermark = self._max_ts - self.settings.lateness_s
        if buffer[0][0] <= watermark:
            self._release(watermark, outputs)
        return outputs

    def forget(self, event_id: str) -> None:
        """Let ``event_id`` through again: the runtime could not write what it produced,
        and its re-delivery must be processed, not dropped as a duplicate."""
        if self._ids is not None:
            self._ids.forget(event_id)

    def flush(self) -> list[StreamOutput]:
        """End of input: release everything buffered and close hot-spot windows."""
        outputs: list[StreamOutput] = []
        self._release(float("inf"), outputs)
        findings = self.hotspots.flush()
        self._count_hotspots(findings)
        outputs.extend(findings)
        return outputs

    def release(self) -> list[StreamOutput]:
        """Release everything in the reorder buffer without closing the open hour (the
        end of a history that live input continues, e.g. a hot-spot warm-up)."""
        outputs: list[StreamOutput] = []
        self._release(float("inf"), outputs)
        return outputs

    def _count_hotspots(self, findings: list[HotspotFinding]) -> None:
        for finding in findings:
            self.stats.hotspot_reports += 1
            episode = (finding.kind, finding.cell_id, str(finding.extra.get("cluster_since")))
            if episode not in self._episodes:
                self._episodes.add(episode)
                self.stats.hotspots += 1

    def _release(self, watermark: float, outputs: list[StreamOutput]) -> None:
        buffer = self._buffer
        process = self._process
        while buffer and buffer[0][0] <= watermark:
            ts, _, detection, cell_id = heapq.heappop(buffer)
            self._released_ts = ts
            process(detection, cell_id, ts, outputs)

    def _policy(self, kind: str) -> tuple[KindPolicy, bool]:
        cached = self._policy_cache.get(kind)
        if cached is None:
            policy = self.policies.for_kind(kind)
            cached = self._policy_cache[kind] = (policy, policy.mode is Mode.HOTSPOT)
        return cached

    def _process(self, d: Detection, cell_id: str, ts: float,
                 outputs: list[StreamOutput]) -> None:
        """Dedup, cluster or count one detection, in event-time order; appends what it
        produces to ``outputs``."""
        cached = self._policy_cache.get(d.kind)
        policy, hotspot = cached if cached is not None else self._policy(d.kind)
        self._since_expiry += 1
        if self._since_expiry >= 4096:
            self._since_expiry = 0
            self._incidents.expire(ts, self._window_max)
        stats = self.stats
        if hotspot:
            verdict, occurrence = self._occurrences.add(d, cell_id, ts, policy)
            if verdict is Verdict.ABSORBED:
                stats.absorbed += 1
                return
            stats.occurrences += 1
            findings = self.hotspots.observe(occurrence, ts=ts)
            if findings:
                self._count_hotspots(findings)
                outputs.extend(findings)
            return
        counts = True
        if policy.source_cooldown_s:
            source_key = (d.station_id, d.source_id, d.kind)
            last = self._last_source.get(source_key)
            if last is not None and 0 <= ts - last <= policy.source_cooldown_s:
                counts = False
                stats.absorbed += 1
            else:
                self._last_source[source_key] = ts
        event = self._incidents.add(d, cell_id, policy, counts_as_detection=counts, ts=ts)
        if event.opened:
            stats.incidents += 1
        outputs.append(event)
