"""Centre ingest: MQTT ``gridwatch/v1/+/+/detection`` → validate → the embedded pipeline.

The subscription lives in a persistent session (fixed client id, ``clean_session=False``)
so detections published while the centre is down wait in the broker. Acknowledgement is
manual: a valid detection's PUBACK goes out only after the pipeline has committed it to the
ticket store (``on_committed``), so a crash between receipt and commit means a re-delivery,
which the pipeline drops by ``event_id`` — never a loss. A batch that fails to commit
(store down, disk full) stays unacknowledged, and the ingest reconnects after
``retry_after_s`` so the broker re-sends it.

By default the MQTT client runs in a child process of its own
(:class:`~gridwatch.mqtt_link.ProcessLink`): paho's packet handling alone keeps a core
busy, and sharing a GIL with validation and the pipeline was what held the ingest below a
bare client's rate. ``isolate=False`` keeps it in a thread of this process.

Evidence (``gridwatch/v1/+/+/evidence``, when an evidence store is given): each message
is one detection's snapshot (``detectors.evidence_message``). It is checked (header, size,
SHA-256, JPEG/PNG bytes, ``evidence.max_item_bytes``), written to the
:class:`~ticketing.evidence.EvidenceStore` and acknowledged only after that write; a store
that cannot write leaves it unacknowledged for a re-delivery. A repeat of a stored event id
is acknowledged and counted. A bad one is dead-lettered with its header only (not the
image) under ``evidence_<code>``.

Invalid messages (bad JSON, schema violations, a payload whose station/source disagree with
its topic) are published to ``gridwatch/v1/deadletter`` with the reason, counted by reason
code, and acknowledged. Nothing a message contains can crash the ingest: every callback
catches, logs with the topic, and carries on.

Receipts (``receipts=True``, the default): once a detection is committed, dead-lettered,
or found to be a repeat (and once an evidence image is stored or refused), its event id
goes into a receipt for the station of the topic it came on, published to
``gridwatch/v1/<station>/receipt`` (:mod:`detectors.receipt_message`): one message per
station per committed pipeline batch (and per received batch for what is settled at once:
repeats, dead letters, evidence). The edge deletes a message from its outbox only on its
receipt. With several replicas on one shared subscription (``share_group``) the replica
that commits a detection is the one that receipts it.

Broker requirements (``docs/edge.md``): for a persistent subscriber Mosquitto's
``max_queued_messages`` (default 1000!) must be 0 or large, or it drops queued QoS 1
messages while the centre is behind or away; ``max_inflight_messages`` sets how many
unacknowledged messages it sends at once (the ingest's batch size; default 20).
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import threading
import time
from collections import Counter as TallyCounter
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from configs.mqtt import MqttConnection
from detectors.evidence_message import (
    MAX_HEADER_BYTES,
    EvidenceMessageRejected,
    parse_evidence,
)
from detectors.receipt_message import (
    COMMITTED,
    DEADLETTERED,
    DUPLICATE,
)
from detectors.receipt_message import SCHEMA as RECEIPT_SCHEMA
from detectors.schema import Detection, DetectionRejected, parse_detection
from detectors.topics import (
    DETECTION,
    EVIDENCE,
    STATUS,
    Topic,
    deadletter_topic,
    parse_source_topic,
    parse_topic,
    receipt_topic,
    source_filter,
    station_filter,
)
from gridwatch.embedded import EmbeddedPipeline
from gridwatch.gc_tuning import tune_process
from gridwatch.mqtt_link import ProcessLink, ThreadLink, Token
from gridwatch.pipeline import STORE_UNAVAILABLE
from ticketing.evidence import EvidenceRejected, EvidenceStore

logger = logging.getLogger(__name__)

DETECTION_FILTER = source_filter("gridwatch/v1", DETECTION)
DEADLETTER_TOPIC = deadletter_topic("gridwatch/v1")
TOPIC_MISMATCH = "topic_mismatch"
TOPIC_CACHE_MAX = 65_536  # parsed topics kept (one per source of every station)


# The centre's hot path allocates a few container objects per message (callbacks, queue
# entries, stream outputs); with CPython's default thresholds (a young-generation pass
# every 700 allocations, a full pass over every tracked object every 100 of those) the
# collector walked the queued detections and held tickets again and again: ~10 µs of the
# centre's CPU per message (``benchmarks/ingest_bench.py``'s CPU accounting: 48 → 38 µs).
# While an ingest runs, the objects of start-up (modules, config, grid) are frozen out of
# the collector's passes and the young generation is collected every 10,000 allocations;
# the last ingest to stop puts the process's settings back. (The MQTT child process
# uses the same thresholds.)


class _GcTuning:
    """Reference-counted: the process's GC settings while at least one ingest runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: tuple[int, int, int] | None = None
        self._unfreeze = True

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._saved = gc.get_threshold()
                # objects someone else froze (a pre-fork server) stay frozen after us
                self._unfreeze = gc.get_freeze_count() == 0
                tune_process()

    def release(self) -> None:
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0 and self._saved is not None:
                gc.set_threshold(*self._saved)
                if self._unfreeze:
                    gc.unfreeze()
                    # the collector counts the unfrozen objects as new: without one full
                    # pass now, the next young-generation passes trigger it later, on
                    # whatever runs then (a benchmark's next round paid ~40-70 ms)
                    gc.collect()
                self._saved = None


_gc_tuning = _GcTuning()


class IngestMetrics:
    """Prometheus metrics of the centre ingest, on a registry of its own.

    The per-message counters are plain integers kept by :class:`MqttIngest` and read at
    scrape time (:class:`_IngestCollector`), so the hot path calls no metrics code.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge("gridwatch_ingest_connected", "1 while connected to the broker",
                               registry=r)
        self.station_online = Gauge("gridwatch_ingest_station_online", "Last availability "
                                    "message of a station (1 online, 0 offline)", ["station"],
                                    registry=r)

    def bind(self, ingest: MqttIngest) -> None:
        """Export ``ingest``'s counters and per-source last-seen times."""
        self.registry.register(_IngestCollector(ingest))  # type: ignore[arg-type]


class _IngestCollector:
    def __init__(self, ingest: MqttIngest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.ingest.stats()
        for name, key, help_text in (
            ("gridwatch_ingest_received", "received", "Detection messages received"),
            ("gridwatch_ingest_accepted", "accepted", "New valid detections handed to the "
             "pipeline"),
            ("gridwatch_ingest_duplicates", "duplicates", "Valid detections already seen "
             "(same event_id)"),
            ("gridwatch_ingest_committed", "committed", "Detections committed to the ticket "
             "store and acknowledged to the broker"),
            ("gridwatch_ingest_reconnects_for_redelivery", "reconnects_for_redelivery",
             "Reconnects made so the broker re-sends a batch the pipeline could not take"),
            ("gridwatch_ingest_mqtt_process_restarts", "mqtt_process_restarts",
             "Times the ingest's MQTT process died and was started again"),
            ("gridwatch_ingest_receipts_sent", "receipts_sent", "Receipt messages published "
             "to stations (one per station per batch)"),
            ("gridwatch_ingest_receipted", "receipted", "Event ids named in receipts "
             "(committed, duplicate or dead-lettered)"),
        ):
            yield CounterMetricFamily(name, help_text, value=stats[key])
        dead = CounterMetricFamily("gridwatch_ingest_deadlettered", "Invalid messages sent to "
                                   "the dead-letter topic", labels=["code"])
        for code, value in stats["deadlettered_by_code"].items():
            dead.add_metric([code], value)
        yield dead
        seen = GaugeMetricFamily("gridwatch_ingest_source_last_seen_timestamp_seconds",
                                 "When a station's source last delivered a valid detection",
                                 labels=["station", "source"])
        for (station, source), at in sorted(dict(self.ingest.last_seen).items()):
            seen.add_metric([station, source], at)
        yield seen
        if self.ingest.evidence is None:
            return
        yield CounterMetricFamily("gridwatch_ingest_evidence_received", "Evidence messages "
                                  "received", value=stats["evidence_received"])
        bad = CounterMetricFamily("gridwatch_ingest_evidence_rejected", "Evidence messages "
                                  "refused (and dead-lettered), by reason", labels=["code"])
        for code, value in stats["evidence_rejected_by_code"].items():
            bad.add_metric([code], value)
        yield bad
        kept = self.ingest.evidence.stats()
        yield CounterMetricFamily("gridwatch_evidence_stored", "Evidence images stored",
                                  value=kept["stored"])
        yield CounterMetricFamily("gridwatch_evidence_duplicates", "Evidence images "
                                  "received again (same event id; first copy kept)",
                                  value=kept["duplicates"])
        evicted = CounterMetricFamily("gridwatch_evidence_evicted", "Evidence images "
                                      "removed, by reason (budget, retention)",
                                      labels=["reason"])
        for reason, value in kept["evicted_by_reason"].items():
            evicted.add_metric([reason], value)
        yield evicted
        yield GaugeMetricFamily("gridwatch_evidence_bytes", "Bytes of evidence images held",
                                value=kept["bytes"])


def _event_id_in(payload: bytes | bytearray) -> str | None:
    """The ``event_id`` a refused message names, if it is a JSON object that has one (the
    first line: an evidence message's header)."""
    line = bytes(payload).split(b"\n", 1)[0]
    try:
        body = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    event_id = body.get("event_id") if isinstance(body, dict) else None
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 128 else None


class _Delivery:
    """One valid detection handed to the pipeline, and what happens to it next: called
    once it is committed (acknowledge, count, note for the receipt), or :meth:`refused`
    (dead-letter). One object per message rather than two closures over its cells."""

    __slots__ = ("ingest", "ack", "receipts", "detection", "topic", "payload", "token",
                 "outcome")

    def __init__(self, ingest: MqttIngest, ack: Callable[[Token], None], receipts: bool,
                 detection: Detection, topic: str, payload: bytes | bytearray,
                 token: Token) -> None:
        self.ingest = ingest
        self.ack = ack
        self.receipts = receipts
        self.detection = detection
        self.topic = topic
        self.payload = payload
        self.token = token
        # a repeat's callback runs once the first copy is safe; its receipt says so
        self.outcome = COMMITTED

    def __call__(self) -> None:
        self.ack(self.token)
        ingest = self.ingest
        ingest._committed += 1  # only the pipeline's worker (or this thread) runs this
        if self.receipts:  # the delivery itself: _flush_receipts reads what it needs
            ingest._settled.append(self)

    def refused(self, code: str, reason: str) -> None:
        """The store refused it for good (the rest of its batch is committed):
        dead-lettered with the store's reason, then acknowledged."""
        self.ingest._deadletter(self.topic, self.payload, self.token, code, reason,
                                event_id=self.detection.event_id)


# A receipt's JSON, grouped as it is built: per station ``{"schema": ..., channel:
# {outcome: [ids], "deadlettered": {code: [ids]}}}`` in the order each key first appears,
# which is what ``encode_receipt(Receipt(entries))`` writes for the same entries (one
# NamedTuple and a second pass per entry less: the receiving thread and the pipeline's
# worker run this for every detection; ``tests/gridwatch/test_ingest_receipts.py``
# compares the two).
_ReceiptBody = dict[str, Any]


def _receipt_ids(bodies: dict[str, _ReceiptBody], station: str, channel: str,
                 outcome: str, code: str | None) -> list[str]:
    """The id list of ``bodies[station]`` that ``(channel, outcome, code)`` goes to."""
    body = bodies.get(station)
    if body is None:
        body = bodies[station] = {"schema": RECEIPT_SCHEMA}
    outcomes = body.setdefault(channel, {})
    if outcome == DEADLETTERED:
        ids: list[str] = outcomes.setdefault(DEADLETTERED, {}).setdefault(code, [])
        return ids
    ids = outcomes.setdefault(outcome, [])
    return ids


def _group_receipts(settled: deque[Any], count: int
                    ) -> dict[str, tuple[_ReceiptBody, int]]:
    """Take ``count`` settled outcomes off ``settled``: per station, its receipt's body and
    how many ids it names. An item is a :class:`_Delivery` (a detection, committed or
    duplicate) or ``(station, channel, event id, outcome or delivery, code)``."""
    bodies: dict[str, _ReceiptBody] = {}
    counts: dict[str, int] = {}
    # the usual item: a committed detection of the same station as the one before
    last_station: str | None = None
    committed: list[str] = []
    popleft = settled.popleft
    for _ in range(count):
        item = popleft()
        if type(item) is _Delivery:
            detection = item.detection
            station = detection.station_id
            counts[station] = counts.get(station, 0) + 1
            if item.outcome == COMMITTED:
                if station != last_station:
                    committed = _receipt_ids(bodies, station, "detection", COMMITTED, None)
                    last_station = station
                committed.append(detection.event_id)
                continue
            _receipt_ids(bodies, station, "detection", item.outcome, None).append(
                detection.event_id)
            continue
        station, channel, event_id, outcome, code = item
        counts[station] = counts.get(station, 0) + 1
        if not isinstance(outcome, str):
            outcome = outcome.outcome
        _receipt_ids(bodies, station, channel, outcome, code).append(event_id)
    return {station: (body, counts[station]) for station, body in bodies.items()}


def _encode_body(body: _ReceiptBody) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def deadletter_message(*, topic: str, payload: bytes | bytearray, code: str, reason: str,
                       received_at: datetime, extra: dict[str, Any] | None = None) -> bytes:
    """The dead-letter record: reason, where it came from, and the payload itself."""
    record: dict[str, Any] = {"code": code, "reason": reason, "topic": topic,
                              "received_at": received_at.isoformat().replace("+00:00", "Z"),
                              **(extra or {})}
    try:
        record["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        record["payload"] = base64.b64encode(bytes(payload)).decode("ascii")
        record["payload_encoding"] = "base64"
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


class MqttIngest:
    """Subscribes the centre to every station's detections and feeds the pipeline.

    Validation, the topic check, dead letters, counters and the pipeline run in this
    process, on the link's receiving thread; only the MQTT client is in the child
    (``isolate=True``). ``tune_gc`` (the default) sets this process's garbage collector
    for the hot path while the ingest runs (:data:`GC_THRESHOLDS`, start-up objects
    frozen; restored when the last ingest stops).

    Example:
        >>> ingest = MqttIngest(MqttConnection(host="127.0.0.1"), pipeline)
        >>> ingest.start(); ...; ingest.stop()
    """

    def __init__(
        self,
        connection: MqttConnection,
        pipeline: EmbeddedPipeline,
        *,
        client_id: str = "gridwatch-centre-ingest",
        topic_prefix: str = "gridwatch/v1",
        metrics: IngestMetrics | None = None,
        isolate: bool = True,
        retry_after_s: float = 5.0,
        evidence: EvidenceStore | None = None,
        receipts: bool = True,
        share_group: str | None = None,
        tune_gc: bool = True,
    ) -> None:
        if share_group is not None and (not share_group or any(
                c in share_group for c in "/+#")):
            raise ValueError(f"share_group: expected a name without '/', '+' or '#', got "
                             f"{share_group!r}")
        self.connection = connection
        self.pipeline = pipeline
        self.client_id = client_id
        self.prefix = topic_prefix
        # replicas on one shared subscription split the stations' messages between them;
        # each still sees every status message (not shared)
        shared = "" if share_group is None else f"$share/{share_group}/"
        self.share_group = share_group
        self.detection_filter = shared + source_filter(topic_prefix, DETECTION)
        self.status_filter = station_filter(topic_prefix, STATUS)
        self.evidence_filter = shared + source_filter(topic_prefix, EVIDENCE)
        self.receipts = receipts
        self._receipt_lock = threading.Lock()  # one flush at a time
        # (station, channel, event id, outcome or its delivery, dead-letter code), appended by
        # any thread without a lock (the hot path: one append per detection)
        # (or the delivery itself, for a detection committed or found to be a repeat)
        self._settled: deque[_Delivery | tuple[str, str, str, _Delivery | str, str | None]] = \
            deque()
        self._receipts_sent = 0
        self._receipted = 0
        if receipts and isinstance(pipeline, EmbeddedPipeline):
            # one receipt per station per committed batch; a pipeline that settles within
            # submit_many (a stand-in) is flushed by on_link_messages
            pipeline.batch_listeners.append(self._flush_receipts)
        self.evidence = evidence
        self._evidence_received = 0
        self._evidence_rejected: TallyCounter[str] = TallyCounter()
        self.deadletter_topic = deadletter_topic(topic_prefix)
        self.metrics = metrics or IngestMetrics()
        self.metrics.bind(self)
        # plain ints, each written by one thread only (the hot path takes no lock)
        self._received = 0
        self._accepted = 0
        self._duplicates = 0
        self._committed = 0
        self._deadlettered: TallyCounter[str] = TallyCounter()
        self.last_seen: dict[tuple[str, str], float] = {}
        self._reconnects = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.isolate = isolate
        self.retry_after_s = retry_after_s
        self._retry_lock = threading.Lock()
        self._retry_timer: threading.Timer | None = None
        self._link: ProcessLink | ThreadLink | None = None
        # topic -> what it is: a station's few sources send on the same topics again and
        # again (written by the receiving thread only; emptied when it grows too big)
        self._topics: dict[str, Topic | None] = {}
        # the garbage collector's settings for the centre's hot path while this runs
        # (GC_THRESHOLDS; False: leave the process's own)
        self.tune_gc = tune_gc
        self._gc_tuned = False

    # -- counters -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts since start: received, accepted, duplicates, committed, deadlettered."""
        out: dict[str, Any] = {"received": self._received, "accepted": self._accepted,
                               "duplicates": self._duplicates, "committed": self._committed,
                               "deadlettered": sum(self._deadlettered.values()),
                               "reconnects_for_redelivery": self._reconnects,
                               "mqtt_process_restarts": self._process_restarts(),
                               "receipts_sent": self._receipts_sent,
                               "receipted": self._receipted,
                               "evidence_received": self._evidence_received,
                               "evidence_rejected_by_code": dict(sorted(
                                   self._evidence_rejected.items()))}
        out["deadlettered_by_code"] = dict(sorted(self._deadlettered.items()))
        return out

    def _process_restarts(self) -> int:
        link = self._link
        return link.restarts if isinstance(link, ProcessLink) else 0

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    # -- link callbacks (the link's receiving thread) ---------------------------------------
    def on_link_connected(self, session_present: bool | None) -> None:
        self._connected.set()
        self.metrics.connected.set(1)
        logger.info("ingest: connected to %s:%s (session present: %s)", self.connection.host,
                    self.connection.port, session_present)

    def on_link_subscribed(self) -> None:
        self._subscribed.set()

    def on_link_disconnected(self, reason: str) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self.metrics.connected.set(0)
        logger.warning("ingest: disconnected from %s:%s (%s); reconnecting with back-off",
                       self.connection.host, self.connection.port, reason)

    def on_link_message(self, topic: str, payload: bytes | bytearray,
                        token: Token) -> None:
        self.on_link_messages([(topic, payload, token[0], token[1])])

    def on_link_messages(self, batch: list[tuple[str, bytes | bytearray, int, int]]) -> None:
        """Check each message, then hand the valid ones to the pipeline in one call."""
        link = self._link
        ack, receipts = (link.ack if link is not None else None), self.receipts
        deliveries: list[_Delivery] = []
        for topic, payload, mid, qos in batch:
            token = (mid, qos)
            try:
                detection = self._check(topic, payload, token)
            except Exception:
                # a bug of ours must not stop the ingest; the message stays
                # unacknowledged and comes back after a reconnect
                logger.exception("ingest: failed on a message from %s", topic)
                continue
            if detection is not None and ack is not None:
                deliveries.append(_Delivery(self, ack, receipts, detection, topic, payload,
                                            token))
        if deliveries:
            try:
                self._submit(deliveries)
            except Exception:
                logger.exception("ingest: failed on a batch of %d detections",
                                 len(deliveries))
        self._flush_receipts()

    def _parse_topic(self, topic: str) -> Topic | None:
        topics = self._topics
        try:
            return topics[topic]
        except KeyError:
            pass
        if len(topics) >= TOPIC_CACHE_MAX:
            topics.clear()
        parsed = topics[topic] = parse_topic(self.prefix, topic)
        return parsed

    def _check(self, topic: str, payload: bytes | bytearray,
               token: Token) -> Detection | None:
        """The valid detection, or ``None`` for a status message or a dead letter."""
        link = self._link
        assert link is not None
        parsed = self._parse_topic(topic)
        if parsed is not None and parsed.channel == STATUS:
            self.metrics.station_online.labels(parsed.station_id).set(
                1 if payload == b"online" else 0)
            link.ack(token)
            return None
        if parsed is not None and parsed.channel == EVIDENCE:
            self._store_evidence(topic, payload, token)
            return None
        self._received += 1
        try:
            detection = parse_detection(payload)
        except DetectionRejected as exc:
            self._deadletter(topic, payload, token, exc.code.value, exc.reason)
            return None
        if parsed is None or parsed.channel != DETECTION:  # not a subscription of ours
            self._deadletter(topic, payload, token, TOPIC_MISMATCH,
                             f"expected {self.detection_filter}, got {topic}",
                             event_id=detection.event_id)
            return None
        station, source = parsed.station_id, parsed.source_id
        if detection.station_id != station or detection.source_id != source:
            self._deadletter(topic, payload, token, TOPIC_MISMATCH,
                             f"topic names station {station!r} source {source!r} but the "
                             f"detection says station {detection.station_id!r} source "
                             f"{detection.source_id!r}", event_id=detection.event_id)
            return None
        return detection

    def _submit(self, deliveries: list[_Delivery]) -> None:
        redeliver = self._redeliver_later
        results = self.pipeline.submit_many(
            [(delivery.detection, delivery, redeliver, delivery.refused)
             for delivery in deliveries])
        now = time.time()
        last_seen = self.last_seen
        accepted = duplicates = 0
        for delivery, result in zip(deliveries, results, strict=True):
            if result.duplicate:
                # read when the receipt is flushed; a worker's flush that came first
                # (the first copy committed meanwhile) says committed, also true
                delivery.outcome = DUPLICATE
                duplicates += 1
            elif result.accepted:
                accepted += 1
                detection = delivery.detection
                last_seen[(detection.station_id, detection.source_id)] = now
            else:  # refused by the pipeline itself: dead-letter with its reason
                self._deadletter(delivery.topic, delivery.payload, delivery.token,
                                 result.code or "refused",
                                 result.reason or "refused by the pipeline",
                                 event_id=delivery.detection.event_id)
        self._accepted += accepted
        self._duplicates += duplicates

    # -- receipts ---------------------------------------------------------------------------
    def _receipt(self, station: str, channel: str, event_id: str,
                 outcome: _Delivery | str, code: str | None = None) -> None:
        """Note an outcome for the station's next receipt (any thread); the outcome may
        be a delivery whose ``outcome`` :meth:`_submit` settles (committed or
        duplicate)."""
        self._settled.append((station, channel, event_id, outcome, code))

    def _flush_receipts(self) -> None:
        """Publish one receipt per station for what was settled since the last flush (the
        pipeline calls this after each batch; the receiving thread after each batch it
        received)."""
        settled, link = self._settled, self._link
        if not settled or link is None:
            return
        with self._receipt_lock:
            bodies = _group_receipts(settled, len(settled))
            for station, (body, count) in bodies.items():
                link.publish(receipt_topic(self.prefix, station), _encode_body(body), qos=1)
                self._receipts_sent += 1
                self._receipted += count

    def _store_evidence(self, topic: str, payload: bytes | bytearray, token: Token) -> None:
        """Check one evidence message, store it, then acknowledge it (see the module doc)."""
        assert self._link is not None
        self._evidence_received += 1
        parts = parse_source_topic(self.prefix, topic)
        if self.evidence is None or parts is None:
            self._reject_evidence(topic, payload, token, "unexpected",
                                  "this centre keeps no evidence" if parts else
                                  f"expected {self.evidence_filter}, got {topic}")
            return
        station, source, _ = parts
        try:
            header, image = parse_evidence(payload)
            self.evidence.put(event_id=header.event_id, station_id=station, source_id=source,
                              content_type=header.content_type, image=image)
        except (EvidenceMessageRejected, EvidenceRejected) as exc:
            self._reject_evidence(topic, payload, token, exc.code, exc.reason)
            return
        except STORE_UNAVAILABLE:
            logger.exception("ingest: cannot store evidence from %s; not acknowledged, "
                             "the broker re-sends it", topic)
            self._redeliver_later()
            return
        self._link.ack(token)
        if self.receipts:  # stored, or a repeat of one stored (the first copy is kept)
            self._receipt(station, "evidence", header.event_id, COMMITTED)

    def _reject_evidence(self, topic: str, payload: bytes | bytearray, token: Token,
                         code: str, reason: str) -> None:
        self._evidence_rejected[code] += 1
        # the header line only: an oversized image must not travel on to the dead letters
        end = payload.find(b"\n", 0, MAX_HEADER_BYTES + 1)
        head = payload[:end if end >= 0 else 256]
        self._deadletter(topic, head, token, f"evidence_{code}", reason,
                         extra={"payload_bytes": len(payload), "payload_truncated":
                                len(head) < len(payload)},
                         event_id=_event_id_in(head), channel=EVIDENCE)

    def _deadletter(self, topic: str, payload: bytes | bytearray, token: Token, code: str,
                    reason: str, extra: dict[str, Any] | None = None, *,
                    event_id: str | None = None, channel: str = DETECTION) -> None:
        record = deadletter_message(topic=topic, payload=payload, code=code, reason=reason,
                                    received_at=datetime.now(UTC), extra=extra)
        assert self._link is not None
        self._link.publish(self.deadletter_topic, record, qos=1)
        self._link.ack(token)
        self._deadlettered[code] += 1
        logger.info("ingest: dead-lettered a message from %s: %s: %s", topic, code, reason)
        if not self.receipts:
            return
        # receipted to the station of the topic (the broker's ACL vouches for it), under
        # the event id the payload names, if it names one: an edge re-sends it otherwise
        parsed = self._parse_topic(topic)
        if event_id is None:
            event_id = _event_id_in(payload)
        if parsed is not None and parsed.station_id is not None and event_id is not None:
            self._receipt(parsed.station_id, channel, event_id, DEADLETTERED, code)

    def _redeliver_later(self) -> None:
        """A batch failed to commit (store down, disk full): its messages stay
        unacknowledged, and a broker re-sends those only on a new connection. Reconnect
        after ``retry_after_s`` (once, however many failed meanwhile)."""
        with self._retry_lock:
            if self._retry_timer is not None:
                return
            logger.warning("ingest: a pipeline batch failed; reconnecting in %.0f s so the "
                           "broker re-sends it", self.retry_after_s)
            timer = threading.Timer(self.retry_after_s, self._reconnect)
            timer.daemon = True
            self._retry_timer = timer
            timer.start()

    def _reconnect(self) -> None:
        with self._retry_lock:
            self._retry_timer = None
        if self._link is not None:
            self._reconnects += 1
            self._link.restart()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (in the background, with back-off) and start receiving."""
        filters = [(self.detection_filter, 1), (self.status_filter, 1)]
        if self.evidence is not None:
            filters.append((self.evidence_filter, 1))
        self._link = (ProcessLink if self.isolate else ThreadLink)(
            self.connection, client_id=self.client_id, filters=filters)
        if self.tune_gc and not self._gc_tuned:
            _gc_tuning.acquire()
            self._gc_tuned = True
        self._link.start(self)

    def wait_subscribed(self, timeout_s: float = 10.0) -> bool:
        """Block until the subscription is confirmed (tests, benchmarks)."""
        return self._subscribed.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and queues for the next start."""
        with self._retry_lock:
            if self._retry_timer is not None:
                self._retry_timer.cancel()
                self._retry_timer = None
        if self._link is not None:
            self._link.stop()
            self._link = None
        if self._gc_tuned:
            _gc_tuning.release()
            self._gc_tuned = False
        self.metrics.connected.set(0)
