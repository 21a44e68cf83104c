"""The edge agent: sources → outbox → publisher, as worker threads restarted when they die.

>>> agent = EdgeAgent(load_station_config("station.yaml"))
>>> agent.start()      # workers run in threads; dead ones are restarted
>>> agent.status()     # what ``gridwatch edge status`` prints
>>> agent.stop()       # says "offline", closes the outbox

Workers: ``publisher`` (outbox → MQTT), ``local-mqtt`` (sensor topics), ``ticker`` (alarm
timers), ``webhook`` (door events over HTTP), ``camera-<id>-reader`` and
``camera-<id>-detector`` per camera (joined by a drop-oldest frame queue), and ``status``
(writes ``status.json`` for ``gridwatch edge status``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from detectors.evidence_message import encode_evidence, image_content_type
from detectors.schema import Detection
from detectors.topics import detection_topic, evidence_topic
from edge.config import CameraSource, StationConfig
from edge.metrics import EdgeMetrics
from edge.outbox import Outbox, OutboxItem, evidence_key
from edge.publisher import Publisher
from edge.sources import (
    CameraWorkers,
    LocalMqttInput,
    SensorHub,
    Ticker,
    WebhookServer,
    camera_frame_rate,
)
from edge.workers import Workers

logger = logging.getLogger(__name__)

STATUS_INTERVAL_S = 2.0


WorkerRun = Callable[[threading.Event], None]


def _const(run: WorkerRun) -> Callable[[], WorkerRun]:
    return lambda: run



class AgentStartupError(ValueError):
    """The agent cannot start as configured (cameras without OpenCV, a camera config that
    does not match the station, a port in use); the message says what and where."""

class EdgeAgent:
    """One community-station box. Build from a :class:`StationConfig`; ``start``/``stop``."""

    def __init__(self, config: StationConfig, *,
                 camera_pipeline_factory: Callable[[CameraSource], Any] | None = None) -> None:
        self.config = config
        self.station_id = config.station_id
        prepared = self._preflight(camera_pipeline_factory is None)
        ob = config.outbox
        self.outbox = Outbox(config.outbox_path, max_bytes=ob.max_bytes,
                             when_full=ob.when_full, synchronous=ob.synchronous)
        self.metrics = EdgeMetrics(self.station_id)
        # source id -> detections not sent for a bad clock (see _clock_checked)
        self.clock_skew: dict[str, int] = {}
        self._skew_lock = threading.Lock()
        self.metrics.bind_outbox(lambda: self.outbox.depth, lambda: self.outbox.bytes_used,
                                 lambda: self.outbox.dropped,
                                 pending=lambda: self.outbox.pending,
                                 awaiting=lambda: self.outbox.awaiting_receipt)
        self.metrics.evidence_dropped.set_function(lambda: self.outbox.evidence_dropped)
        self.hub = SensorHub(config, started_at=time.time(), metrics=self.metrics)
        self.workers = Workers(
            on_restart=lambda name: self.metrics.worker_restarts.labels(name).inc())
        self.publisher: Publisher | None = None
        self.webhook: WebhookServer | None = None
        self._metrics_server: Any = None
        self._started_at = time.time()
        self.cameras: dict[str, CameraWorkers] = {}

        self.workers.add("publisher", self._new_publisher)
        if self.hub.by_topic:
            self.workers.add("local-mqtt",
                                lambda: LocalMqttInput(config, self.hub, self.sink).run)
        if self.hub.sources:
            self.workers.add("ticker",
                                lambda: Ticker(self.hub, self.sink, config.tick_s).run)
        if config.webhook is not None:
            self.webhook = WebhookServer(config.webhook, self.hub, self.sink, self.station_id)
            webhook = self.webhook
            self.workers.add("webhook", lambda: webhook.run)
        for source in config.sources:
            if isinstance(source, CameraSource):
                cam = CameraWorkers(source, self.station_id, self.sink, self.metrics,
                                    camera_pipeline_factory, **prepared.get(source.id, {}))
                self.cameras[source.id] = cam
                self.workers.add(f"camera-{source.id}-reader", _const(cam.run_reader))
                self.workers.add(f"camera-{source.id}-detector", _const(cam.run_detector))
        self.workers.add("status", lambda: self._write_status_forever)

    def _preflight(self, real_cameras: bool) -> dict[str, dict[str, Any]]:
        """Check every camera now, so a mistake stops the agent with its message.

        Returns, per camera id, what its :class:`CameraWorkers` takes from the camera
        YAML: the pipeline built here (its models loaded and checked), the file start
        time and frame rate.
        """
        cameras = [s for s in self.config.sources if isinstance(s, CameraSource)]
        if not cameras or not real_cameras:
            return {}
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise AgentStartupError("cameras are configured but OpenCV is not installed "
                            "(pip install 'gridwatch[vision]')") from None
        try:
            from detectors.camera import CameraPipeline, check_camera, load_camera_config
        except ImportError as exc:
            raise AgentStartupError(f"cameras are configured but detectors.camera is unavailable: "
                            f"{exc}") from None
        prepared: dict[str, dict[str, Any]] = {}
        try:
            for cam in cameras:
                if not cam.camera_config.exists():
                    raise AgentStartupError(f"sources.{cam.id}.camera_config: {cam.camera_config} "
                                    "does not exist")
                try:
                    cam_config = load_camera_config(cam.camera_config)
                except ValueError as exc:
                    raise AgentStartupError(str(exc)) from None
                if (cam_config.station_id, cam_config.source_id) != (self.station_id, cam.id):
                    raise AgentStartupError(
                        f"{cam.camera_config}: station_id/source_id are "
                        f"{cam_config.station_id}/{cam_config.source_id}, but station.yaml "
                        f"has {self.station_id}/{cam.id}")
                try:  # synthetic frames through the whole chain first, then the real one
                    check_camera(cam_config)
                    pipeline = CameraPipeline(cam_config,
                                              frame_rate=camera_frame_rate(cam, cam_config))
                except ValueError as exc:  # a missing model file, a bad class map ...
                    raise AgentStartupError(f"{cam.camera_config}: {exc}") from None
                prepared[cam.id] = {"pipeline": pipeline, "file_start": cam_config.start,
                                    "file_fps": cam_config.frame_rate}
        except BaseException:
            for item in prepared.values():
                item["pipeline"].close()
            raise
        return prepared

    def _new_publisher(self) -> Callable[[threading.Event], None]:
        self.publisher = Publisher(self.config.uplink, self.station_id, self.outbox,
                                   self.metrics)
        return self.publisher.run

    # -- the sink every source writes to ----------------------------------------------
    def sink(self, detections: list[Detection]) -> None:
        """Commit detections, and the snapshots of those that have one, to the outbox in
        one transaction (durable before this returns); wake the publisher."""
        prefix = self.config.uplink.topic_prefix
        items: list[OutboxItem] = []
        snapshots: list[Path] = []
        detections = self._clock_checked(detections)
        for d in detections:
            items.append(OutboxItem(detection_topic(prefix, d.station_id, d.source_id),
                                    d.event_id, d.to_json().encode(), d.is_self_test))
            evidence = self._evidence_item(d, prefix)
            if evidence is not None:
                items.append(evidence[0])
                snapshots.append(evidence[1])
        stored = self.outbox.put_many(items)
        for d in detections:
            self.metrics.enqueued.labels(d.source_id).inc()
        if stored < len(items):
            logger.info("station %s: %d of %d messages not stored (repeat event ids or "
                        "outbox full)", self.station_id, len(items) - stored, len(items))
        if not self.config.evidence.keep_local:
            for path in snapshots:  # the outbox holds the image now
                try:
                    path.unlink()
                except OSError as exc:
                    logger.warning("station %s: cannot remove sent snapshot %s: %s",
                                   self.station_id, path, exc)
        if self.publisher is not None:
            self.publisher.wake.set()

    def _clock_checked(self, detections: list[Detection]) -> list[Detection]:
        """``detections`` without those whose source's clock is off (see
        :class:`~edge.config.ClockSettings`): those are counted per source and logged."""
        clock = self.config.clock
        now = time.time()
        latest = now + clock.max_future_s
        earliest = -math.inf if clock.max_age_s is None else now - clock.max_age_s
        kept = []
        for d in detections:
            ts = d.observed_at.timestamp()
            if earliest <= ts <= latest:
                kept.append(d)
                continue
            with self._skew_lock:
                self.clock_skew[d.source_id] = self.clock_skew.get(d.source_id, 0) + 1
            self.metrics.clock_skew.labels(d.source_id).inc()
            logger.warning("station %s source %s: detection %s not sent: observed_at %s is "
                           "%.0f s %s this box's clock (clock.%s)", self.station_id,
                           d.source_id, d.event_id, d.observed_at.isoformat(),
                           abs(ts - now), "ahead of" if ts > latest else "behind",
                           "max_future_s" if ts > latest else "max_age_s")
        return kept

    def _evidence_item(self, d: Detection, prefix: str) -> tuple[OutboxItem, Path] | None:
        """The outbox item carrying ``d``'s ``file://`` snapshot, or None (no snapshot,
        sending off, or an image that cannot be sent: logged and counted)."""
        url = d.evidence.snapshot_url if d.evidence is not None else None
        if not url or not url.startswith("file://") or not self.config.evidence.send:
            return None
        path = Path(url2pathname(urlsplit(url).path))
        limit = self.config.evidence.max_bytes
        reason = None
        try:
            size = path.stat().st_size
            image = path.read_bytes() if size <= limit else b""
        except OSError as exc:
            reason, why = "unreadable", str(exc.strerror or exc)
        else:
            content_type = image_content_type(image) if image else None
            if size > limit:
                reason, why = "too_large", f"{size} bytes, evidence.max_bytes is {limit}"
            elif content_type is None:
                reason, why = "not_an_image", "neither JPEG nor PNG"
        if reason is not None:
            self.metrics.evidence_skipped.labels(d.source_id, reason).inc()
            logger.warning("station %s source %s: snapshot of %s not sent: %s (%s)",
                           self.station_id, d.source_id, d.event_id, reason, why)
            return None
        assert content_type is not None
        self.metrics.evidence_enqueued.labels(d.source_id).inc()
        payload = encode_evidence(event_id=d.event_id, content_type=content_type,
                                  image=image)
        return OutboxItem(evidence_topic(prefix, d.station_id, d.source_id),
                          evidence_key(d.event_id), payload, evidence=True), path

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the metrics endpoint (if configured) and every worker."""
        m = self.config.metrics
        if m.port:
            from prometheus_client import start_http_server

            try:
                self._metrics_server = start_http_server(m.port, addr=m.host,
                                                         registry=self.metrics.registry)
            except OSError as exc:
                raise AgentStartupError(f"metrics.port: cannot listen on {m.host}:{m.port}: "
                                f"{exc.strerror or exc}") from None
        logger.info("station %s: edge agent starting, %d sources, outbox %s holds %d",
                    self.station_id, len(self.config.sources), self.config.outbox_path,
                    self.outbox.depth)
        self.workers.start()

    def stop(self) -> None:
        """Stop every worker (the publisher says ``offline``), then close the outbox."""
        self.workers.stop()
        self._write_status(running=False)
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            thread.join(timeout=2)
        self.outbox.close()
        logger.info("station %s: edge agent stopped", self.station_id)

    # -- status -------------------------------------------------------------------------
    def status(self, *, running: bool = True) -> dict[str, Any]:
        """A JSON-ready snapshot: uplink, outbox, sources, workers."""
        last_seen: dict[str, float | None] = {s.id: None for s in self.config.sources}
        for metric in self.metrics.last_seen.collect():
            for sample in metric.samples:
                last_seen[sample.labels["source"]] = sample.value
        pub = self.publisher
        return {
            "station_id": self.station_id,
            "pid": os.getpid(),
            "running": running,
            "started_at": self._started_at,
            "updated_at": time.time(),
            "uplink": {"host": self.config.uplink.host, "port": self.config.uplink.port,
                       "connected": bool(pub and pub.connected),
                       "last_error": pub.last_error if pub else None,
                       "drops": pub.drops if pub else 0,
                       "last_drop": pub.last_drop if pub else None},
            "outbox": {"depth": self.outbox.depth, "pending": self.outbox.pending,
                       "awaiting_receipt": self.outbox.awaiting_receipt,
                       "bytes": self.outbox.bytes_used,
                       "max_bytes": self.outbox.max_bytes, "dropped": self.outbox.dropped,
                       "evidence_dropped": self.outbox.evidence_dropped},
            "receipts": {"enabled": self.config.uplink.receipts,
                         "last_receipt_at": pub.last_receipt_at if pub else None,
                         "resent_this_run": pub.resent if pub else 0,
                         "malformed": pub.bad_receipts if pub else 0},
            "sources": last_seen,
            "clock_skew": dict(sorted(self.clock_skew.items())),
            "cameras": {cid: {"frames_read": cam.frames_read,
                              "frames_processed": cam.frames_processed,
                              "frames_dropped": cam.frames_dropped,
                              "detector_errors": cam.errors,
                              "healthy": cam.healthy,
                              "last_error": cam.last_error,
                              "open_failures": cam.open_failures,
                              "end_of_file": cam.finished.is_set()}
                        for cid, cam in self.cameras.items()},
            "workers": self.workers.alive(),
            "restarts": self.workers.restarts(),
        }

    def _write_status(self, *, running: bool = True) -> None:
        path: Path = self.config.status_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(running=running), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    def _write_status_forever(self, stop: threading.Event) -> None:
        while True:
            self._write_status()
            if stop.wait(STATUS_INTERVAL_S):
                return
