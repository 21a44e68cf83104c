"""The uplink publisher: outbox → MQTT QoS 1 → PUBACK → deleted from the outbox.

Unlike a fire-and-forget publish (frigate's drops messages while disconnected), nothing is
handed to the MQTT client unless it is already committed in the outbox, and nothing leaves
the outbox before the broker's PUBACK. paho-mqtt keeps QoS 1 messages in memory only and
its message ids wrap at 65,535, so at most ``max_inflight`` messages are handed to it at a
time; the rest wait on disk. paho re-sends what it holds after a reconnect (with its
exponential back-off ``reconnect_min_s`` .. ``reconnect_max_s``); a restarted publisher
re-reads the outbox from the start. Either way a detection may reach the broker twice,
never zero times: the centre drops repeats by ``event_id``.
"""

from __future__ import annotations

import collections
import logging
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from configs.mqtt import connect_failure, make_client, refusal_hint
from edge.config import UplinkSettings
from edge.metrics import EdgeMetrics
from edge.outbox import Outbox

logger = logging.getLogger(__name__)


def detection_topic(prefix: str, station_id: str, source_id: str) -> str:
    """``gridwatch/v1/<station_id>/<source_id>/detection``."""
    return f"{prefix}/{station_id}/{source_id}/detection"


def evidence_topic(prefix: str, station_id: str, source_id: str) -> str:
    """``gridwatch/v1/<station_id>/<source_id>/evidence``: a detection's snapshot
    (``detectors.evidence_message``)."""
    return f"{prefix}/{station_id}/{source_id}/evidence"


def parse_source_topic(prefix: str, topic: str) -> tuple[str, str, str] | None:
    """``(station_id, source_id, channel)`` of a detection or evidence topic, else None.

    The inverse of :func:`detection_topic` and :func:`evidence_topic`:

    >>> parse_source_topic("gridwatch/v1", "gridwatch/v1/st1/cam-1/evidence")
    ('st1', 'cam-1', 'evidence')
    >>> parse_source_topic("gridwatch/v1", "gridwatch/v1/st1/status") is None
    True
    """
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 3 or parts[2] not in ("detection", "evidence") or not all(parts[:2]):
        return None
    return parts[0], parts[1], parts[2]


def status_topic(prefix: str, station_id: str) -> str:
    """``gridwatch/v1/<station_id>/status`` (retained ``online`` / ``offline``)."""
    return f"{prefix}/{station_id}/status"


class Publisher:
    """Drains the outbox to the centre's broker; one instance per run of the worker.

    Example:
        >>> pub = Publisher(settings.uplink, "st1", outbox, EdgeMetrics("st1"))
        >>> pub.run(stop_event)  # returns when stop_event is set
    """

    def __init__(self, settings: UplinkSettings, station_id: str, outbox: Outbox,
                 metrics: EdgeMetrics) -> None:
        self.settings = settings
        self.station_id = station_id
        self.outbox = outbox
        self.metrics = metrics
        self.wake = threading.Event()
        self._acked_mids: collections.deque[int] = collections.deque()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq (publisher thread only)
        self._cursor = 0
        self._connected = threading.Event()
        self.last_error: str | None = None  # why the uplink is not connected, for status
        self.drops = 0  # connections the broker ended (an ACL denial ends one at once)
        self.last_drop: str | None = None
        self.client_id = settings.client_id or f"gridwatch-edge-{station_id}-{uuid.uuid4().hex[:8]}"

    # paho callbacks run on paho's network thread: they only append and signal, never take
    # a lock of ours (paho calls on_publish while holding its own message mutex).
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.last_error = f"refused: {reason}{refusal_hint(self.settings, reason)}"
            logger.warning("station %s: uplink %s:%s %s", self.station_id,
                           self.settings.host, self.settings.port, self.last_error)
            return
        self.last_error = None
        logger.info("station %s: uplink connected to %s:%s", self.station_id,
                    self.settings.host, self.settings.port)
        client.publish(status_topic(self.settings.topic_prefix, self.station_id), b"online",
                       qos=1, retain=True)
        self.metrics.connected.set(1)
        self.metrics.reconnects.inc()
        self._connected.set()
        self.wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.last_error = f"cannot connect: {connect_failure()}"
        logger.warning("station %s: uplink %s:%s %s; retrying with back-off (%d in the "
                       "outbox)", self.station_id, self.settings.host, self.settings.port,
                       self.last_error, self.outbox.depth)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()
        self.metrics.connected.set(0)
        if getattr(reason, "is_failure", False):
            self.drops += 1
            self.last_drop = (f"{reason}; if the broker drops the uplink right after each "
                              f"publish, its ACL may deny this station's topics (the MQTT "
                              f"user name must be the station id {self.station_id!r})")
        logger.warning("station %s: uplink disconnected (%s); %d in flight kept for re-send, "
                       "%d in the outbox", self.station_id, reason, len(self._inflight),
                       self.outbox.depth)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self._acked_mids.append(mid)
        self.wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def run(self, stop: threading.Event) -> None:
        """Connect, drain, keep draining until ``stop`` is set; then say ``offline``."""
        s = self.settings
        client = make_client(s, client_id=self.client_id)
        client.will_set(status_topic(s.topic_prefix, self.station_id), b"offline", qos=1,
                        retain=True)
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)  # we bound what we hand over ourselves
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        try:
            while not stop.is_set():
                self.wake.wait(0.2)
                self.wake.clear()
                self._settle_acks()
                if self.connected:
                    self._hand_over(client)
            self._settle_acks()
        finally:
            if self.connected:
                info = client.publish(status_topic(s.topic_prefix, self.station_id),
                                      b"offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout=2)
                except (RuntimeError, ValueError):
                    pass
                self._settle_acks()
            client.disconnect()
            client.loop_stop()
            self.metrics.connected.set(0)
            self.metrics.inflight.set(0)

    def _settle_acks(self) -> None:
        seqs = []
        while self._acked_mids:
            mid = self._acked_mids.popleft()
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                seqs.append(seq)
        if seqs:
            removed = self.outbox.ack(seqs)
            self.metrics.published.inc(removed)
            self.metrics.inflight.set(len(self._inflight))

    def _hand_over(self, client: mqtt.Client) -> None:
        room = self.settings.max_inflight - len(self._inflight)
        while room > 0 and self.connected:
            rows = self.outbox.fetch_after(self._cursor, limit=min(room, 500))
            if not rows:
                break
            for row in rows:
                info = client.publish(row.topic, row.payload, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    # not queued by paho: leave it in the outbox for the next pass
                    logger.warning("station %s: publish of %s failed (%s); will retry",
                                   self.station_id, row.event_id, mqtt.error_string(info.rc))
                    return
                # MQTT_ERR_NO_CONN still queues a QoS 1 message for the reconnect
                self._inflight[info.mid] = row.seq
                self._cursor = row.seq
            room -= len(rows)
            self.metrics.inflight.set(len(self._inflight))
            # let acknowledgements free the outbox while a long backlog drains
            self._settle_acks()
