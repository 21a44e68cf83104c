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
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from configs.mqtt import make_client
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
from edge.workers import DropOldestQueue

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


#: Event time of a video file's first frame when neither station.yaml nor the camera YAML
#: gives ``start`` (the same default as ``gridwatch detect``).
DEFAULT_FILE_START = datetime.fromisoformat("2026-01-01T08:00:00+08:00")
#: Frame rate assumed for a file whose header has none and whose camera YAML is unknown.
DEFAULT_FILE_FPS = 25.0
#: Live streams: give up opening / reading after this long (OpenCV's FFmpeg backend).
STREAM_TIMEOUT_MS = 10_000
#: A detector that keeps failing is logged once, then at most once per this many seconds.
ERROR_LOG_INTERVAL_S = 60.0
#: A camera is unhealthy while more than half of its last this-many analysed frames failed.
HEALTH_WINDOW_FRAMES = 20
#: ... once at least this many frames were processed since it started.
HEALTH_MIN_FRAMES = 5


class CameraWorkers:
    """A camera's reader and detector workers, joined by a drop-oldest frame queue.

    The reader grabs frames with OpenCV, at most ``max_fps`` of them; the detector runs
    ``detectors.camera.CameraPipeline`` on them and sinks its detections. A busy detector
    costs the oldest queued frames (counted), never a committed detection. A frame on which
    the pipeline raises is counted and logged, and the worker carries on. OpenCV and the
    detector modules are imported lazily, so a station without cameras needs neither.

    Args:
        source: the camera's ``station.yaml`` entry.
        station_id: the edge box.
        sink: commits detections (the agent's outbox).
        metrics: the agent's metrics (optional).
        pipeline_factory: builds a fresh pipeline for each (re)start of the detector
            worker; default :func:`default_pipeline_factory`.
        pipeline: a pipeline already built (at start-up, to fail early); the first
            detector run uses it instead of calling the factory.
        file_start: event time of a file's first frame when ``source.start`` is unset.
        file_fps: the camera YAML's ``frame_rate`` for a file: overrides the file's own
            (header) rate, which is used when this is ``None``.
    """

    def __init__(self, source: CameraSource, station_id: str, sink: Sink,
                 metrics: EdgeMetrics | None = None,
                 pipeline_factory: Callable[[CameraSource], Any] | None = None, *,
                 pipeline: Any = None, file_start: datetime | None = None,
                 file_fps: float | None = None) -> None:
        self.source = source
        self.station_id = station_id
        self.sink = sink
        self.metrics = metrics
        self.frames: DropOldestQueue[tuple[np.ndarray, datetime]] = DropOldestQueue(
            source.frame_queue)
        self.pipeline_factory = pipeline_factory or default_pipeline_factory
        self._pipeline = pipeline
        self.file_start = source.start or file_start or DEFAULT_FILE_START
        self.file_fps = file_fps
        #: set when a file (without ``loop_file``) has been read to its end
        self.finished = threading.Event()
        # plain counters (also in metrics when given), read by tests and status
        self.frames_read = 0
        self.frames_dropped = 0
        self.frames_processed = 0
        self.errors = 0
        self.open_failures = 0
        self._last_error_log = -float("inf")
        self._errors_at_last_log = 0
        #: outcome (failed?) of the last frames, for :attr:`healthy`
        self._recent_failures: deque[bool] = deque(maxlen=HEALTH_WINDOW_FRAMES)
        #: the latest detector failure in one line, or ``None``
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """False while the detectors fail on most recent frames (or cannot start)."""
        recent = list(self._recent_failures)
        if len(recent) < HEALTH_MIN_FRAMES:
            return True
        return sum(recent) * 2 <= len(recent)

    def _set_health(self, failed: bool) -> None:
        self._recent_failures.append(failed)
        if self.metrics is not None:
            self.metrics.camera_healthy.labels(self.source.id).set(1 if self.healthy else 0)

    # -- reader -------------------------------------------------------------------------
    def run_reader(self, stop: threading.Event) -> None:
        """Open the camera and queue frames until ``stop``.

        A camera that cannot be opened, or a live stream that ends, is retried after a
        back-off doubling from ``reopen_min_s`` to ``reopen_max_s``. A file that ends is
        read again from the start with ``loop_file`` (event time keeps counting up);
        otherwise the reader sets :attr:`finished` and idles until ``stop``.
        """
        import cv2  # lazily: only stations with cameras need OpenCV

        src = self.source
        backoff = src.reopen_min_s
        file_frame_index = 0  # frames of a file read so far, over every loop: event time
        while not stop.is_set():
            cap, reason = self._open(cv2)
            if cap is None:
                self.open_failures += 1
                if self.metrics is not None:
                    self.metrics.camera_open_failures.labels(src.id).inc()
                logger.warning("station %s camera %s: cannot open %s (%s); attempt %d, "
                               "retrying in %.2fs", self.station_id, src.id, src.url, reason,
                               self.open_failures, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, src.reopen_max_s)
                continue
            try:
                if src.is_file:
                    before = file_frame_index
                    file_frame_index = self._read_file(cv2, cap, stop, file_frame_index)
                    got_frames = file_frame_index > before
                else:
                    got_frames = self._read_live(cap, stop)
            finally:
                cap.release()
            if stop.is_set():
                return
            if got_frames:
                backoff = src.reopen_min_s
            if src.is_file and got_frames and not src.loop_file:
                logger.info("station %s camera %s: end of file %s after %d frames; the "
                            "camera stays idle (loop_file: true replays it)",
                            self.station_id, src.id, src.url, file_frame_index)
                self.finished.set()
                stop.wait()
                return
            if src.is_file and got_frames:
                logger.info("station %s camera %s: end of file %s; looping",
                            self.station_id, src.id, src.url)
                continue
            what = "file has no readable frames" if src.is_file else "stream ended"
            logger.warning("station %s camera %s: %s (%s); re-opening in %.1fs",
                           self.station_id, src.id, what, src.url, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, src.reopen_max_s)

    def _open(self, cv2: Any) -> tuple[Any, str]:
        """``(capture, "")``, or ``(None, why)`` when the camera cannot be opened."""
        src = self.source
        try:
            if src.url.isdigit():
                cap = cv2.VideoCapture(int(src.url))
            elif src.is_file:
                if not Path(src.url).is_file():
                    return None, "no such file"
                cap = cv2.VideoCapture(src.url)
            else:
                cap = self._open_stream(cv2, src.url)
        except Exception as exc:  # cv2.error and friends: a camera problem, not a crash
            return None, f"{type(exc).__name__}: {exc}"
        if not cap.isOpened():
            cap.release()
            return None, "OpenCV could not open it"
        return cap, ""

    @staticmethod
    def _open_stream(cv2: Any, url: str) -> Any:
        # Without timeouts a dead RTSP camera blocks the reader (and agent shutdown) for
        # as long as FFmpeg's default, which can be minutes.
        open_timeout = getattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC", None)
        read_timeout = getattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None)
        if open_timeout is None or read_timeout is None:
            return cv2.VideoCapture(url)
        return cv2.VideoCapture(url, cv2.CAP_ANY, [open_timeout, STREAM_TIMEOUT_MS,
                                                   read_timeout, STREAM_TIMEOUT_MS])

    def _read_file(self, cv2: Any, cap: Any, stop: threading.Event, frame_index: int) -> int:
        """Queue a file's frames from the start; returns the running frame index at its end.

        Frames are thinned to ``max_fps`` by their event time (not the wall clock), so the
        same file always hands the detectors the same frames.
        """
        src = self.source
        header_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # the camera YAML's frame_rate, when set, overrides the header (as in detect)
        fps = self.file_fps or (header_fps if 0 < header_fps < 1000 else DEFAULT_FILE_FPS)
        period_s = 1.0 / src.max_fps
        next_keep_s = frame_index / fps
        wall_origin = time.monotonic() - frame_index / fps
        while not stop.is_set():
            ok, frame = cap.read()
            if not ok:
                return frame_index
            offset_s = frame_index / fps
            frame_index += 1
            if offset_s < next_keep_s - 1e-6:
                continue  # above max_fps
            next_keep_s += period_s
            if next_keep_s <= offset_s:
                next_keep_s = offset_s + period_s
            observed_at = self.file_start + timedelta(seconds=offset_s)
            if src.file_pace == "realtime":
                delay = wall_origin + offset_s - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return frame_index
                self._offer(frame, observed_at)
            elif not self.frames.put_wait((frame, observed_at), stop):
                return frame_index
            else:
                self._count_read()
        return frame_index

    def _read_live(self, cap: Any, stop: threading.Event) -> bool:
        """Queue a live camera's frames (wall-clock event time) until it ends or ``stop``."""
        period_s = 1.0 / self.source.max_fps
        next_at = 0.0
        got_frames = False
        while not stop.is_set():
            ok, frame = cap.read()
            if not ok:
                return got_frames
            observed_at = datetime.now(UTC)
            got_frames = True
            now = time.monotonic()
            if now < next_at:
                continue  # above max_fps: skip, the camera does not wait for us
            next_at = now + period_s if now - next_at > period_s else next_at + period_s
            self._offer(frame, observed_at)
        return got_frames

    def _offer(self, frame: np.ndarray, observed_at: datetime) -> None:
        dropped = self.frames.put((frame, observed_at))
        self._count_read()
        if dropped:
            self.frames_dropped += dropped
            if self.metrics is not None:
                self.metrics.frames_dropped.labels(self.source.id).inc(dropped)

    def _count_read(self) -> None:
        self.frames_read += 1
        if self.metrics is not None:
            self.metrics.last_seen.labels(self.source.id).set(time.time())

    # -- detector -----------------------------------------------------------------------
    def run_detector(self, stop: threading.Event) -> None:
        """Run the detector pipeline on queued frames until ``stop``; close it on the way out.

        A frame on which the pipeline raises is counted (``gridwatch_edge_camera_errors``)
        and logged with station and camera id; the worker goes on with the next frame, so
        the tracks it has built up survive. Errors the pipeline catches itself (one
        plug-in failing among several) are counted the same way.
        """
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            try:
                pipeline = self.pipeline_factory(self.source)
            except Exception as exc:
                self.last_error = f"cannot start the detectors: {_one_line(exc)}"
                self._recent_failures.extend([True] * HEALTH_WINDOW_FRAMES)
                if self.metrics is not None:
                    self.metrics.camera_healthy.labels(self.source.id).set(0)
                logger.error("station %s camera %s: %s", self.station_id, self.source.id,
                             self.last_error)
                raise  # edge.workers restarts this worker with back-off
        inner_errors = _pipeline_errors(pipeline)
        try:
            while not stop.is_set():
                item = self.frames.get(timeout_s=0.2)
                if item is None:
                    continue
                frame, observed_at = item
                failed = False
                try:
                    detections = list(pipeline.process(frame, observed_at))
                except Exception as exc:
                    detections = []
                    failed = True
                    self.last_error = _one_line(exc)
                    logger.debug("station %s camera %s: pipeline failed", self.station_id,
                                 self.source.id, exc_info=True)
                    self._count_errors(1, observed_at)
                now_errors = _pipeline_errors(pipeline)
                if now_errors > inner_errors:
                    failed = True
                    self.last_error = getattr(pipeline, "last_error", None) or self.last_error
                    self._count_errors(now_errors - inner_errors, observed_at)
                inner_errors = now_errors
                self._set_health(failed)
                if detections:
                    detections = [self._own(d) for d in detections]
                    self.sink(detections)  # committed before the frame counts as processed
                    if self.metrics is not None:
                        for d in detections:
                            self.metrics.detections.labels(self.source.id, d.kind).inc()
                self.frames_processed += 1
                if self.metrics is not None:
                    self.metrics.frames.labels(self.source.id).inc()
        finally:
            pipeline.close()

    def _count_errors(self, n: int, observed_at: datetime) -> None:
        self.errors += n
        if self.metrics is not None:
            self.metrics.camera_errors.labels(self.source.id).inc(n)
        now = time.monotonic()
        if now - self._last_error_log < ERROR_LOG_INTERVAL_S:
            return  # a detector failing on every frame must not flood the log
        logger.error("station %s camera %s: detector failed on the frame at %s "
                     "(%d failures in all, %d since the last report): %s", self.station_id,
                     self.source.id, observed_at.isoformat(), self.errors,
                     self.errors - self._errors_at_last_log, self.last_error)
        self._last_error_log = now
        self._errors_at_last_log = self.errors

    def _own(self, detection: Detection) -> Detection:
        """Stamp this station's and camera's ids (the camera YAML may not know them)."""
        if (detection.station_id == self.station_id
                and detection.source_id == self.source.id):
            return detection
        wire = detection.to_wire()
        wire.pop("schema", None)
        wire.update(station_id=self.station_id, source_id=self.source.id)
        return Detection.new(**wire)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _pipeline_errors(pipeline: Any) -> int:
    """Errors a ``CameraPipeline`` caught itself (``stats["detector_errors"]``), else 0."""
    stats = getattr(pipeline, "stats", None)
    value = stats.get("detector_errors", 0) if isinstance(stats, dict) else 0
    return value if isinstance(value, int) else 0


def default_pipeline_factory(source: CameraSource) -> Any:
    """``detectors.camera.CameraPipeline`` built from the camera's own YAML."""
    from detectors.camera import CameraPipeline, load_camera_config

    config = load_camera_config(source.camera_config)
    return CameraPipeline(config, frame_rate=camera_frame_rate(source, config))


def camera_frame_rate(source: CameraSource, config: Any) -> float:
    """The input rate a camera's pipeline runs at: the camera YAML's ``frame_rate``, else
    a file's own, else 25 (a mismatch between YAML and file is logged as a warning)."""
    from detectors.camera import effective_frame_rate
    from detectors.sample import video_fps

    file_fps = video_fps(source.url) if source.is_file and Path(source.url).is_file() else None
    return effective_frame_rate(config, file_fps, origin=source.url)
