"""Prometheus metrics of the edge agent, on a registry of its own (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class EdgeMetrics:
    """The agent's counters and gauges; ``registry`` is what the HTTP endpoint serves.

    Names: ``gridwatch_edge_published_total``, ``gridwatch_edge_outbox_depth``,
    ``gridwatch_edge_outbox_dropped_total``, ``gridwatch_edge_source_last_seen_timestamp_seconds``
    and friends (see ``docs/edge.md``).
    """

    def __init__(self, station_id: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.station_id = station_id
        self.published = Counter("gridwatch_edge_published", "Messages acknowledged by the "
                                 "broker (first PUBACK); with receipts they stay in the "
                                 "outbox until the centre's receipt", registry=r)
        self.receipted = Counter("gridwatch_edge_receipted", "Messages the centre's receipts "
                                 "named (committed, duplicate or dead-lettered), removed from "
                                 "the outbox", registry=r)
        self.receipts_unknown = Counter("gridwatch_edge_receipts_unknown", "Event ids in "
                                        "receipts that the outbox did not hold (receipted "
                                        "before; ignored)", registry=r)
        self.deadlettered = Counter("gridwatch_edge_deadlettered", "Messages the centre "
                                    "refused for good (dead-lettered), by channel and code",
                                    ["channel", "code"], registry=r)
        self.resent = Counter("gridwatch_edge_resent", "Messages sent again because no "
                              "receipt came in time", registry=r)
        self.enqueued = Counter("gridwatch_edge_enqueued", "Detections committed to the outbox",
                                ["source"], registry=r)
        self.detections = Counter("gridwatch_edge_detections", "Detections produced",
                                  ["source", "kind"], registry=r)
        self.outbox_depth = Gauge("gridwatch_edge_outbox_depth", "Messages in the outbox "
                                  "(pending + awaiting a receipt)", registry=r)
        self.outbox_pending = Gauge("gridwatch_edge_outbox_pending", "Messages in the outbox "
                                    "the broker has not acknowledged yet", registry=r)
        self.outbox_awaiting = Gauge("gridwatch_edge_outbox_awaiting_receipt", "Messages "
                                     "the broker acknowledged, waiting for the centre's "
                                     "receipt", registry=r)
        self.outbox_bytes = Gauge("gridwatch_edge_outbox_bytes",
                                  "Bytes held by the outbox (the disk budget's measure)",
                                  registry=r)
        self.dropped = Gauge("gridwatch_edge_outbox_dropped_total",
                             "Detections lost to the outbox disk budget (persistent total)",
                             registry=r)
        self.evidence_dropped = Gauge("gridwatch_edge_outbox_evidence_dropped_total",
                                      "Evidence images lost to the outbox disk budget "
                                      "(persistent total)", registry=r)
        self.inflight = Gauge("gridwatch_edge_inflight", "Messages handed to MQTT, no PUBACK yet",
                              registry=r)
        self.connected = Gauge("gridwatch_edge_uplink_connected",
                               "1 while connected to the centre's broker", registry=r)
        self.reconnects = Counter("gridwatch_edge_uplink_connects", "Successful connections "
                                  "to the centre's broker", registry=r)
        self.last_seen = Gauge("gridwatch_edge_source_last_seen_timestamp_seconds",
                               "When a source last sent anything (Unix time)", ["source"],
                               registry=r)
        self.bad_payloads = Counter("gridwatch_edge_bad_payloads", "Sensor messages that could "
                                    "not be decoded", ["source"], registry=r)
        self.clock_skew = Counter("gridwatch_edge_clock_skew", "Detections not sent because "
                                  "their observed_at is too far from this box's clock "
                                  "(clock.max_future_s / max_age_s)", ["source"], registry=r)
        self.frames = Counter("gridwatch_edge_camera_frames", "Camera frames processed",
                              ["source"], registry=r)
        self.frames_dropped = Counter("gridwatch_edge_camera_frames_dropped", "Camera frames "
                                      "dropped because the detector was busy", ["source"],
                                      registry=r)
        self.camera_errors = Counter("gridwatch_edge_camera_errors", "Frames on which a "
                                     "camera's detectors raised (the worker carries on)",
                                     ["source"], registry=r)
        self.camera_healthy = Gauge("gridwatch_edge_camera_healthy", "1 while the camera's "
                                    "detectors work; 0 while they fail on most recent "
                                    "frames or cannot start", ["source"], registry=r)
        self.camera_open_failures = Counter("gridwatch_edge_camera_open_failures", "Failed "
                                            "attempts to open a camera (retried with back-off)",
                                            ["source"], registry=r)
        self.evidence_enqueued = Counter("gridwatch_edge_evidence_enqueued", "Evidence "
                                         "images committed to the outbox", ["source"],
                                         registry=r)
        self.evidence_skipped = Counter("gridwatch_edge_evidence_skipped", "Snapshots not "
                                        "sent (too_large, unreadable, not_an_image)",
                                        ["source", "reason"], registry=r)
        self.worker_restarts = Counter("gridwatch_edge_worker_restarts", "Workers restarted by "
                                       "the agent after dying", ["worker"], registry=r)

    def bind_outbox(self, depth: Callable[[], float], size: Callable[[], float],
                    dropped: Callable[[], float], *,
                    pending: Callable[[], float] | None = None,
                    awaiting: Callable[[], float] | None = None) -> None:
        """Read the outbox gauges at scrape time (always current, no update calls)."""
        self.outbox_depth.set_function(depth)
        self.outbox_bytes.set_function(size)
        self.dropped.set_function(dropped)
        if pending is not None:
            self.outbox_pending.set_function(pending)
        if awaiting is not None:
            self.outbox_awaiting.set_function(awaiting)
