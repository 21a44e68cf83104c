"""Sources of an edge agent: MQTT sensors and doors, the door webhook, and cameras.

All of them end in the same place, a ``sink(detections)`` that commits to the outbox. The
sensor logic is :class:`SensorHub` (decode → alarm state machine → detections), which is
I/O-free and takes the arrival time as an argument; the workers below only move bytes
into it and catch, log (with station and source id) and count what goes wrong.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from detectors.schema import Detection
from edge.adapters import (
    PayloadError,
    detection_from_signal,
    door_event_from_json,
    from_json_mapping,
    from_zigbee2mqtt,
)
from edge.alarm import DoorMonitor, Signal, SmokeAlarm
from edge.config import (
    AccessControlSource,
    CameraSource,
    JsonSmokeSource,
    StationConfig,
    WebhookSettings,
    Z2mSmokeSource,
)
from edge.metrics import EdgeMetrics
from edge.publisher import make_client
from edge.supervisor import DropOldestQueue

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

Sink = Callable[[list[Detection]], None]
SensorSource = Z2mSmokeSource | JsonSmokeSource | AccessControlSource


class SensorHub:
    """Smoke sensors and doors of one station: payload + arrival time in, detections out.

    Thread-safe (one lock around the state machines). Example:

    >>> hub = SensorHub(config, started_at=0.0)
    >>> hub.handle_mqtt("zigbee2mqtt/b3_smoke", b'{"smoke": true}', at=12.0)
    [Detection(kind='smoke', ...)]
    """

    def __init__(self, config: StationConfig, *, started_at: float,
                 metrics: EdgeMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._lock = threading.Lock()
        self.sources: dict[str, SensorSource] = {}
        self.machines: dict[str, SmokeAlarm | DoorMonitor] = {}
        self.by_topic: dict[str, list[str]] = {}
        for source in config.sources:
            if isinstance(source, (Z2mSmokeSource, JsonSmokeSource)):
                self.machines[source.id] = SmokeAlarm(config.alarm_for(source),
                                                      started_at=started_at)
                self.by_topic.setdefault(source.topic, []).append(source.id)
            elif isinstance(source, AccessControlSource):
                self.machines[source.id] = DoorMonitor(
                    held_open_limit_s=source.held_open_limit_s, burst=source.invalid_card_burst,
                    reaffirm_s=source.reaffirm_s, debounce_s=source.debounce_s,
                    silent_after_s=source.silent_after_s, started_at=started_at)
                if source.transport == "mqtt" and source.topic:
                    self.by_topic.setdefault(source.topic, []).append(source.id)
            else:
                continue
            self.sources[source.id] = source

    @property
    def topics(self) -> list[str]:
        return sorted(self.by_topic)

    def _to_detections(self, source: SensorSource, signals: list[Signal]) -> list[Detection]:
        source_type = ("access_control" if isinstance(source, AccessControlSource)
                       else "smoke_sensor")
        out = [detection_from_signal(sig, station_id=self.config.station_id,
                                     source_id=source.id, source_type=source_type,
                                     lon=source.lon, lat=source.lat) for sig in signals]
        if self.metrics is not None:
            for d in out:
                self.metrics.detections.labels(source.id, d.kind).inc()
        return out

    def handle(self, source_id: str, payload: bytes | str | dict[str, Any], *,
               at: float) -> list[Detection]:
        """One message of one source. Raises :class:`PayloadError` if it can't be decoded."""
        source = self.sources.get(source_id)
        if source is None:
            raise KeyError(source_id)
        if self.metrics is not None:
            self.metrics.last_seen.labels(source_id).set(at)
        with self._lock:
            machine = self.machines[source_id]
            if isinstance(source, Z2mSmokeSource):
                assert isinstance(machine, SmokeAlarm)
                signals = machine.on_reading(from_zigbee2mqtt(payload), at=at)
            elif isinstance(source, JsonSmokeSource):
                assert isinstance(machine, SmokeAlarm)
                signals = machine.on_reading(from_json_mapping(payload, source.mapping), at=at)
            else:
                assert isinstance(machine, DoorMonitor)
                event, test = door_event_from_json(payload, source.mapping)
                signals = machine.on_event(event, at=at, test=test)
        return self._to_detections(source, signals)

    def handle_mqtt(self, topic: str, payload: bytes | bytearray, *, at: float) -> list[Detection]:
        """A message on the local broker; sources sharing a topic each get it."""
        out: list[Detection] = []
        for source_id in self.by_topic.get(topic, ()):
            try:
                out.extend(self.handle(source_id, bytes(payload), at=at))
            except PayloadError as exc:
                if self.metrics is not None:
                    self.metrics.bad_payloads.labels(source_id).inc()
                logger.warning("station %s source %s: bad payload on %s: %s",
                               self.config.station_id, source_id, topic, exc)
        return out

    def tick(self, now: float) -> list[Detection]:
        """Advance every state machine to ``now`` (re-affirm, held open, stuck, silent)."""
        out: list[Detection] = []
        with self._lock:
            pending = [(self.sources[sid], m.tick(now)) for sid, m in self.machines.items()]
        for source, signals in pending:
            if signals:
                out.extend(self._to_detections(source, signals))
        return out


class LocalMqttInput:
    """Worker: subscribes to the sensor topics on the station's local broker.

    Persistent session with a fixed client id, so QoS 1 door events published while the
    agent restarts are delivered afterwards; the PUBACK to the local broker goes out only
    after the detections are committed to the outbox.
    """

    def __init__(self, config: StationConfig, hub: SensorHub, sink: Sink) -> None:
        self.config = config
        self.hub = hub
        self.sink = sink

    def run(self, stop: threading.Event) -> None:
        conn = self.config.local_mqtt
        client_id = conn.client_id or f"gridwatch-edge-{self.config.station_id}-in"
        client = make_client(conn, client_id=client_id, clean_session=False)
        station = self.config.station_id
        topics = self.hub.topics

        def on_connect(c: mqtt.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
            if reason.is_failure:
                logger.warning("station %s: local broker refused: %s", station, reason)
                return
            if topics:
                c.subscribe([(t, 1) for t in topics])
            logger.info("station %s: local broker %s:%s, %d sensor topics", station,
                        conn.host, conn.port, len(topics))

        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                detections = self.hub.handle_mqtt(msg.topic, msg.payload, at=time.time())
                if detections:
                    self.sink(detections)
            except Exception:
                logger.exception("station %s: failed to handle message on %s", station,
                                 msg.topic)

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect_async(conn.host, conn.port, keepalive=conn.keepalive_s)
        client.loop_start()
        try:
            stop.wait()
        finally:
            client.disconnect()
            client.loop_stop()


class Ticker:
    """Worker: calls :meth:`SensorHub.tick` every ``tick_s`` with the wall clock."""

    def __init__(self, hub: SensorHub, sink: Sink, tick_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.hub = hub
        self.sink = sink
        self.tick_s = tick_s
        self.clock = clock

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick_s):
            detections = self.hub.tick(self.clock())
            if detections:
                self.sink(detections)


class WebhookServer:
    """Worker: ``POST /webhook/<source_id>`` with a door controller's JSON event.

    Replies 202 once the resulting detections are committed, 400 with the reason for a
    payload that can't be decoded, 404 for an unknown source, 401 for a bad token.
    """

    def __init__(self, settings: WebhookSettings, hub: SensorHub, sink: Sink,
                 station_id: str) -> None:
        self.settings = settings
        self.hub = hub
        self.sink = sink
        self.station_id = station_id
        self.bound_port: int | None = None
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        token = os.environ.get(self.settings.token_env) if self.settings.token_env else None
        if self.settings.token_env and token is None:
            raise RuntimeError(f"webhook token: environment variable {self.settings.token_env} "
                               "is not set")
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                logger.debug("webhook: " + format, *args)

            def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                    self._reply(HTTPStatus.UNAUTHORIZED, {"error": "bad or missing token"})
                    return
                parts = self.path.strip("/").split("/")
                source_id = parts[1] if len(parts) == 2 and parts[0] == "webhook" else None
                source = worker.hub.sources.get(source_id or "")
                if not isinstance(source, AccessControlSource) or source.transport != "webhook":
                    self._reply(HTTPStatus.NOT_FOUND, {"error": f"no webhook source {source_id}"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 64 * 1024))
                try:
                    detections = worker.hub.handle(source.id, body, at=time.time())
                except PayloadError as exc:
                    if worker.hub.metrics is not None:
                        worker.hub.metrics.bad_payloads.labels(source.id).inc()
                    logger.warning("station %s source %s: bad webhook payload: %s",
                                   worker.station_id, source.id, exc)
                    self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                    return
                if detections:
                    worker.sink(detections)
                self._reply(HTTPStatus.ACCEPTED,
                            {"detections": [d.event_id for d in detections]})

        server = ThreadingHTTPServer((self.settings.host, self.settings.port), Handler)
        server.daemon_threads = True
        self.bound_port = int(server.server_address[1])
        self.ready.set()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="gw-webhook-http", daemon=True)
        thread.start()
        try:
            stop.wait()
        finally:
            server.shutdown()
            server.server_close()


class CameraWorkers:
    """A camera's reader and detector workers, joined by a drop-oldest frame queue.

    The reader grabs frames with OpenCV at up to ``max_fps``; the detector runs
    ``detectors.camera.CameraPipeline`` on the newest frame and sinks its detections. A
    busy detector costs frames (counted), never detections. OpenCV and the detector
    modules are imported here, lazily, so a station without cameras needs neither.
    """

    def __init__(self, source: CameraSource, station_id: str, sink: Sink,
                 metrics: EdgeMetrics | None = None,
                 pipeline_factory: Callable[[CameraSource], Any] | None = None) -> None:
        self.source = source
        self.station_id = station_id
        self.sink = sink
        self.metrics = metrics
        self.frames: DropOldestQueue[tuple[np.ndarray, datetime]] = DropOldestQueue(
            source.frame_queue)
        self.pipeline_factory = pipeline_factory or default_pipeline_factory

    def run_reader(self, stop: threading.Event) -> None:
        """Open the stream, read frames, re-open with back-off when it fails or ends."""
        import cv2  # lazily: only stations with cameras need OpenCV

        src = self.source
        is_file = "://" not in src.url and not src.url.isdigit()
        target: str | int = int(src.url) if src.url.isdigit() else src.url
        backoff = 1.0
        period = 1.0 / src.max_fps
        while not stop.is_set():
            cap = cv2.VideoCapture(target)
            if not cap.isOpened():
                logger.warning("station %s camera %s: cannot open %s; retrying in %.0fs",
                               self.station_id, src.id, src.url, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            next_at = 0.0
            try:
                while not stop.is_set():
                    ok, frame = cap.read()
                    if not ok:
                        break
                    now = time.monotonic()
                    if now < next_at:
                        if not is_file:
                            continue  # a live stream: skip frames above max_fps
                        stop.wait(next_at - now)  # a file: pace it like a live stream
                    next_at = max(time.monotonic(), next_at) + period
                    dropped = self.frames.put((frame, datetime.now(UTC)))
                    if dropped and self.metrics is not None:
                        self.metrics.frames_dropped.labels(src.id).inc(dropped)
            finally:
                cap.release()
            if is_file and not src.loop_file:
                logger.info("station %s camera %s: end of file %s", self.station_id, src.id,
                            src.url)
                stop.wait()
                return
            if not is_file:
                logger.warning("station %s camera %s: stream ended; re-opening",
                               self.station_id, src.id)

    def run_detector(self, stop: threading.Event) -> None:
        """Run the detector pipeline on frames until ``stop``; close it on the way out."""
        pipeline = self.pipeline_factory(self.source)
        try:
            while not stop.is_set():
                item = self.frames.get(timeout_s=0.2)
                if item is None:
                    continue
                frame, observed_at = item
                detections = pipeline.process(frame, observed_at)
                if self.metrics is not None:
                    self.metrics.frames.labels(self.source.id).inc()
                    if detections:
                        self.metrics.last_seen.labels(self.source.id).set(time.time())
                if detections:
                    detections = [self._own(d) for d in detections]
                    if self.metrics is not None:
                        for d in detections:
                            self.metrics.detections.labels(self.source.id, d.kind).inc()
                    self.sink(detections)
        finally:
            pipeline.close()

    def _own(self, detection: Detection) -> Detection:
        """Stamp this station's and camera's ids (the camera YAML may not know them)."""
        if (detection.station_id == self.station_id
                and detection.source_id == self.source.id):
            return detection
        wire = detection.to_wire()
        wire.pop("schema", None)
        wire.update(station_id=self.station_id, source_id=self.source.id)
        return Detection.new(**wire)


def default_pipeline_factory(source: CameraSource) -> Any:
    """``detectors.camera.CameraPipeline`` built from the camera's own YAML."""
    from detectors.camera import CameraPipeline, load_camera_config

    return CameraPipeline(load_camera_config(source.camera_config))
