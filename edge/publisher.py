"""The uplink publisher: outbox → MQTT QoS 1 → PUBACK → the centre's receipt → deleted.

Unlike a fire-and-forget publish (frigate's drops messages while disconnected), nothing is
handed to the MQTT client unless it is already committed in the outbox, and nothing leaves
the outbox before the centre's receipt (``<prefix>/<station>/receipt``,
:mod:`detectors.receipt_message`) says it was committed or dead-lettered: a broker's PUBACK
only moves the row from *pending* to *sent*, because a broker killed before it saved its
state loses what it acknowledged. A sent row without a receipt ``receipt_timeout_s`` later
is sent again, the wait doubling per attempt up to ``receipt_timeout_max_s``.

While the centre is silent (something sent ``receipt_timeout_s`` ago and no receipt at
all since: the centre is down), only one overdue row is sent again per
``receipt_timeout_s``, as a probe, so a centre away for hours does not make the broker
queue the backlog many times over. When receipts come again, every overdue row is given
another ``receipt_timeout_s`` (the centre may be draining the broker's queue) before the
rows still without a receipt are sent again. Rows sent before the centre's last receipt
and still without one were lost on the way (a broker that died): they are sent again as
soon as they are due.

paho-mqtt keeps QoS 1 messages in memory only and its message ids wrap at 65,535, so at
most ``max_inflight`` messages are handed to it at a time; the rest wait on disk. paho
re-sends what it holds after a reconnect (with its exponential back-off
``reconnect_min_s`` .. ``reconnect_max_s``); a restarted publisher re-reads the pending
rows from the start. Either way a detection may reach the centre twice, never zero times:
the centre drops repeats by ``event_id`` and receipts them again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from configs.mqtt import connect_failure, make_client, refusal_hint
from detectors.receipt_message import DEADLETTERED, ReceiptRejected, parse_receipt
from detectors.topics import receipt_topic, status_topic
from edge.config import UplinkSettings
from edge.metrics import EdgeMetrics
from edge.outbox import Outbox, evidence_key

logger = logging.getLogger(__name__)

RESEND_CHECK_S = 1.0  # how often the publisher looks for overdue receipts


class Publisher:
    """Drains the outbox to the centre's broker; one instance per run of the worker.

    Example:
        >>> pub = Publisher(settings.uplink, "st1", outbox, EdgeMetrics("st1"))
        >>> pub.run(stop_event)  # returns when stop_event is set
    """

    def __init__(self, settings: UplinkSettings, station_id: str, outbox: Outbox,
                 metrics: EdgeMetrics, *, clock: Any = time.time) -> None:
        self.settings = settings
        self.station_id = station_id
        self.outbox = outbox
        self.metrics = metrics
        self.wake = threading.Event()
        self._clock = clock
        self._acked_mids: collections.deque[int] = collections.deque()
        self._receipts: collections.deque[bytes] = collections.deque()
        # mid -> (outbox seq, first send?) (publisher thread only)
        self._inflight: dict[int, tuple[int, bool]] = {}
        self._cursor = 0
        self._connected = threading.Event()
        self.last_error: str | None = None  # why the uplink is not connected, for status
        self.drops = 0  # connections the broker ended (an ACL denial ends one at once)
        self.last_drop: str | None = None
        # with receipts, a persistent session under a stable id: the broker keeps the
        # receipts that come while this box is disconnected (or restarting)
        self.client_id = settings.client_id or (
            f"gridwatch-edge-{station_id}" if settings.receipts
            else f"gridwatch-edge-{station_id}-{uuid.uuid4().hex[:8]}")
        self.receipt_topic = receipt_topic(settings.topic_prefix, station_id)
        self.last_receipt_at: float | None = None  # wall clock of the last receipt
        self.resent = 0
        self.bad_receipts = 0
        # when the oldest send that no receipt has followed was made (None: a receipt came
        # after the last send); at start, rows left awaiting a receipt count as just sent
        self._unanswered_since: float | None = clock() if outbox.awaiting_receipt else None
        self._was_silent = False
        self._next_probe_at = 0.0
        self._next_resend_check = 0.0

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
        if self.settings.receipts:
            client.subscribe(self.receipt_topic, qos=1)
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

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.receipt_topic:
            self._receipts.append(bytes(msg.payload))
            self.wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def run(self, stop: threading.Event) -> None:
        """Connect, drain, keep draining until ``stop`` is set; then say ``offline``."""
        s = self.settings
        client = make_client(s, client_id=self.client_id, clean_session=not s.receipts)
        client.will_set(status_topic(s.topic_prefix, self.station_id), b"offline", qos=1,
                        retain=True)
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)  # we bound what we hand over ourselves
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        try:
            while not stop.is_set():
                self.wake.wait(0.2)
                self.wake.clear()
                self._settle_acks()
                self._settle_receipts()
                if self.connected:
                    self._hand_over(client)
                    if s.receipts:
                        self._resend_overdue(client)
            self._settle_acks()
            self._settle_receipts()
        finally:
            if self.connected:
                info = client.publish(status_topic(s.topic_prefix, self.station_id),
                                      b"offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout=2)
                except (RuntimeError, ValueError):
                    pass
                self._settle_acks()
                self._settle_receipts()
            client.disconnect()
            client.loop_stop()
            self.metrics.connected.set(0)
            self.metrics.inflight.set(0)

    def _settle_acks(self) -> None:
        first = []
        while self._acked_mids:
            mid = self._acked_mids.popleft()
            sent = self._inflight.pop(mid, None)
            if sent is not None and sent[1]:
                first.append(sent[0])
        if first:
            s = self.settings
            if s.receipts:
                now = self._clock()
                self.outbox.mark_sent(first, now=now, timeout_s=s.receipt_timeout_s,
                                      timeout_max_s=s.receipt_timeout_max_s)
                self.metrics.published.inc(len(first))
                if self._unanswered_since is None:
                    self._unanswered_since = now
            else:
                self.metrics.published.inc(self.outbox.ack(first))
        self.metrics.inflight.set(len(self._inflight))

    def _settle_receipts(self) -> None:
        """Delete what the centre's receipts name; count the ids this box does not hold."""
        keys: list[str] = []
        dead: collections.Counter[str] = collections.Counter()
        got = False
        while self._receipts:
            payload = self._receipts.popleft()
            try:
                entries = parse_receipt(payload)
            except ReceiptRejected as exc:
                self.bad_receipts += 1
                logger.warning("station %s: ignored a malformed receipt on %s: %s",
                               self.station_id, self.receipt_topic, exc)
                continue
            got = True
            for entry in entries:
                keys.append(entry.event_id if entry.channel == "detection"
                            else evidence_key(entry.event_id))
                if entry.outcome == DEADLETTERED:
                    dead[f"{entry.channel}:{entry.code}"] += 1
        if not got:
            return
        now = self._clock()
        self.last_receipt_at = now
        self._unanswered_since = None
        if self._was_silent:
            self._was_silent = False
            # the centre is back: the broker may still hold much of the backlog for it;
            # give it a full timeout before sending again what it has not receipted
            moved = self.outbox.postpone(now + self.settings.receipt_timeout_s)
            if moved:
                logger.info("station %s: receipts again from the centre; %d overdue "
                            "message(s) wait %.0f s more before a re-send", self.station_id,
                            moved, self.settings.receipt_timeout_s)
        removed, unknown = self.outbox.receipt(keys)
        self.metrics.receipted.inc(removed)
        if unknown:
            self.metrics.receipts_unknown.inc(unknown)
        for what, n in sorted(dead.items()):
            channel, code = what.split(":", 1)
            self.metrics.deadlettered.labels(channel, code).inc(n)
            logger.warning("station %s: the centre dead-lettered %d %s message(s) as %s "
                           "(see its dead-letter topic for the reasons)", self.station_id, n,
                           channel, code)

    def _hand_over(self, client: mqtt.Client) -> None:
        room = self.settings.max_inflight - len(self._inflight)
        while room > 0 and self.connected:
            rows = self.outbox.fetch_after(self._cursor, limit=min(room, 500),
                                           pending_only=True)
            if not rows:
                break
            for row in rows:
                if not self._publish(client, row.topic, row.payload, row.seq, row.event_id,
                                     first=True):
                    return
                self._cursor = row.seq
            room -= len(rows)
            self.metrics.inflight.set(len(self._inflight))
            # let acknowledgements free the outbox while a long backlog drains
            self._settle_acks()
            self._settle_receipts()

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes, seq: int,
                 event_id: str, *, first: bool) -> bool:
        info = client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # not queued by paho: leave it in the outbox for the next pass
            logger.warning("station %s: publish of %s failed (%s); will retry",
                           self.station_id, event_id, mqtt.error_string(info.rc))
            return False
        # MQTT_ERR_NO_CONN still queues a QoS 1 message for the reconnect
        self._inflight[info.mid] = (seq, first)
        return True

    def _resend_overdue(self, client: mqtt.Client) -> None:
        """Send again what stays unreceipted past its due time (see the module doc)."""
        now = self._clock()
        if now < self._next_resend_check or not self.outbox.awaiting_receipt:
            return
        self._next_resend_check = now + RESEND_CHECK_S
        s = self.settings
        silent = (self._unanswered_since is not None
                  and now - self._unanswered_since >= s.receipt_timeout_s)
        if silent:
            self._was_silent = True
            if now < self._next_probe_at:
                return
            limit = 1
        else:
            limit = s.max_inflight - len(self._inflight)
        if limit <= 0:
            return
        rows = self.outbox.due(now, limit=limit)
        if not rows:
            return
        if self._unanswered_since is None:
            self._unanswered_since = now
        if silent:
            self._next_probe_at = now + s.receipt_timeout_s
            logger.info("station %s: no receipt from the centre for %s; probing with %s "
                        "(%d awaiting a receipt)", self.station_id,
                        "ever" if self.last_receipt_at is None
                        else f"{now - self.last_receipt_at:.0f} s", rows[0].event_id,
                        self.outbox.awaiting_receipt)
        sent = []
        for row in rows:
            if not self._publish(client, row.topic, row.payload, row.seq, row.event_id,
                                 first=False):
                break
            sent.append(row.seq)
        # durable at once: a box that dies now re-sends these after the next wait, not now
        self.outbox.mark_sent(sent, now=now, timeout_s=s.receipt_timeout_s,
                              timeout_max_s=s.receipt_timeout_max_s)
        self.resent += len(sent)
        self.metrics.resent.inc(len(sent))
        self.metrics.inflight.set(len(self._inflight))
