"""The scale-out runtime: faust agents on Kafka, keyed by grid cell.

Two agents, the same pure core as replay and the embedded service
(:class:`~stream.processor.StreamProcessor` → :class:`~ticketing.desk.TicketDesk`)::

    gridwatch.detections.v1 ──ingest──► gridwatch.detections.by_cell ──cells──► tickets (SQL)
      (raw detection v1 JSON)  │          (key = cell id, value = the raw JSON)
                               └──► gridwatch.deadletter (JSON: code, reason, raw)

* **ingest** validates each message (:func:`~detectors.schema.parse_detection`), looks up
  its cell and re-publishes it keyed by the cell id, so Kafka's key partitioner puts every
  detection of a cell on one partition and so in one worker. Invalid messages go to the
  dead-letter topic with the reason; detections outside every cell are counted only.
* **cells** keeps one :class:`StreamProcessor` per partition it owns (state is dropped
  when a partition is revoked) and hands the outputs to the :class:`TicketSink` (the
  idempotent desk over a SQL ticket store, PostgreSQL in production).

Delivery is at least once: a rebalance or a restart redelivers detections whose offsets
were not committed yet. Ticket ids are deterministic and the desk path skips event ids a
ticket already holds, so a redelivered partition never duplicates a ticket or an event id
(see ``docs/scaleout.md``).

Importing this module imports faust; nothing in ``stream`` or ``ticketing`` imports it.
Like the rest of ``stream`` it imports only ``detectors`` and ``geo``: the ticket side comes
in through a :class:`TicketSink`, which ``gridwatch/commands/worker.py`` builds over
``ticketing`` (the idempotent desk and the SQL store). Run it with ``gridwatch worker`` or
``faust -A gridwatch.commands.worker worker``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit

import faust
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from detectors.schema import Detection, DetectionRejected, parse_detection
from geo.grid import Grid
from stream import hotspot_state
from stream.dedup import EventIdFilter
from stream.hotspot import HotspotEngine, HotspotSettings
from stream.policy import PolicyBook, StreamSettings
from stream.processor import StreamOutput, StreamProcessor

log = logging.getLogger(__name__)

TOPIC_DETECTIONS = "gridwatch.detections.v1"
TOPIC_BY_CELL = "gridwatch.detections.by_cell"
TOPIC_DEADLETTER = "gridwatch.deadletter"

STORE_RETRY_MAX_S = 30.0


# -- configuration ------------------------------------------------------------------------

class ScaleoutSettings(BaseModel):
    """Where the worker connects and how the topics are partitioned.

    Secrets come from the environment only: a ticket-store URL with a password belongs in
    ``$GRIDWATCH_TICKETS_URL`` (it overrides ``store_url``), never in a file or a flag.

    Example:
        >>> ScaleoutSettings(broker_url="kafka://k1:9092;kafka://k2:9092", partitions=12)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: str = Field("gridwatch-scaleout", min_length=1)
    broker_url: str = "kafka://localhost:9092"
    partitions: int = Field(8, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1)
    grid: Path | None = None
    config: Path | None = None
    store_url: str | None = None
    store_schema: str | None = None
    web_port: int | None = Field(None, ge=1, le=65_535)  # None: no faust web server

    @field_validator("broker_url")
    @classmethod
    def _kafka_url(cls, value: str) -> str:
        for part in value.split(";"):
            if not part.strip().startswith(("kafka://", "aiokafka://")):
                raise ValueError(f"expected kafka://host:port[;kafka://...], got {value!r}")
        return value

    @field_validator("store_url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and urlsplit(value).password:
            raise ValueError("a store URL with a password belongs in $GRIDWATCH_TICKETS_URL "
                             "(environment), not in settings")
        return value

    ENV: ClassVar[dict[str, str]] = {
        "app_id": "GRIDWATCH_KAFKA_APP_ID",
        "broker_url": "GRIDWATCH_KAFKA_BROKER",
        "partitions": "GRIDWATCH_KAFKA_PARTITIONS",
        "replication_factor": "GRIDWATCH_KAFKA_REPLICATION",
        "grid": "GRIDWATCH_GRID",
        "config": "GRIDWATCH_CONFIG",
        "store_schema": "GRIDWATCH_TICKETS_SCHEMA",
        "web_port": "GRIDWATCH_WORKER_WEB_PORT",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 **overrides: Any) -> ScaleoutSettings:
        """Settings from ``GRIDWATCH_*`` variables (see :attr:`ENV`), then ``overrides``
        (command-line flags; ``None`` values are ignored)."""
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {field: env[var] for field, var in cls.ENV.items() if env.get(var)}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


def live_stream_settings(settings: StreamSettings) -> StreamSettings:
    """Live processing, as in the embedded service: no reorder buffer (``lateness_s=0``)
    — waiting for stragglers would delay every alarm; the clusterer joins late detections
    by their span anyway."""
    return settings.model_copy(update={"lateness_s": 0})


# -- the ticket side, as the stream sees it ---------------------------------------------------

class StoreUnavailable(Exception):
    """The ticket store cannot be reached right now; the agent retries the same work."""


class TicketSink(Protocol):
    """Where stream outputs become tickets (``gridwatch.commands.worker.StoreSink``).

    Both methods may raise :class:`StoreUnavailable`; the agent then retries the call, so
    :meth:`apply` must be idempotent: applying outputs whose event ids the tickets already
    hold changes nothing.
    """

    def apply(self, outputs: Sequence[StreamOutput]) -> list[str]:
        """Apply outputs in order; the ids of the tickets written."""
        ...

    def held_event_ids(self, cell_id: str) -> Iterable[tuple[str, float]]:
        """(event id, event-time seconds) of detections the cell's tickets already hold."""
        ...


class StateSink(Protocol):
    """Where a cell worker keeps each partition's hot-spot checkpoint
    (``gridwatch.commands.worker.StoreCheckpoints``: the ticket store). Both methods may
    raise :class:`StoreUnavailable`."""

    def load_state(self, name: str) -> bytes | None:
        """The checkpoint saved under ``name``, or ``None``."""
        ...

    def save_state(self, name: str, body: bytes) -> None:
        """Replace the checkpoint under ``name``."""
        ...


# -- ingest: validate, look up the cell, re-key ---------------------------------------------

@dataclass(frozen=True, slots=True)
class Routed:
    """What ingest decided for one raw message: ``cell_id`` set (forward, keyed by it),
    ``code``/``reason`` set (dead letter), or neither (valid but outside every cell)."""

    detection: Detection | None = None
    cell_id: str | None = None
    code: str | None = None
    reason: str | None = None

    @property
    def outcome(self) -> str:
        if self.code is not None:
            return "rejected"
        return "routed" if self.cell_id is not None else "out_of_area"


def route(raw: bytes | str | None, grid: Grid, *, now: datetime | None = None,
          limits: StreamSettings | None = None) -> Routed:
    """Validate one wire message and find its cell. Never raises on bad input.

    With ``now`` and ``limits`` (the live worker), a detection observed more than
    ``limits.max_future_s`` after or ``limits.max_age_s`` before ``now`` is refused as
    ``clock_skew``, as the embedded service refuses it."""
    if raw is None:
        return Routed(code="empty", reason="message has no value")
    try:
        detection = parse_detection(raw)
    except DetectionRejected as exc:
        return Routed(code=exc.code.value, reason=exc.reason)
    if now is not None and limits is not None:
        skew = (detection.observed_at - now).total_seconds()
        if skew > limits.max_future_s or -skew > limits.age_limit_s:
            ahead = skew > 0
            limit, setting = ((limits.max_future_s, "stream.max_future_s") if ahead
                              else (limits.age_limit_s, "stream.max_age_s"))
            return Routed(code="clock_skew", reason=(
                f"observed_at {detection.observed_at.isoformat()} is {abs(skew):.0f} s "
                f"{'ahead of' if ahead else 'behind'} the centre's clock; expected at most "
                f"{limit} s ({setting})"))
    [index] = grid.lookup(np.array([detection.lon]), np.array([detection.lat])).tolist()
    cell_id = grid.cells[index].cell_id if index >= 0 else None
    return Routed(detection=detection, cell_id=cell_id)


def partition_for(cell_id: str, partitions: int) -> int:
    """The partition of ``gridwatch.detections.by_cell`` that holds a cell: what the
    producer's default key partitioner (aiokafka's murmur2, as in the Java client) picks
    for the record key ``cell_id``."""
    from aiokafka.partitioner import murmur2

    if partitions < 1:
        raise ValueError(f"expected partitions >= 1, got {partitions}")
    return (murmur2(cell_id.encode()) & 0x7FFFFFFF) % partitions


def dead_letter(raw: bytes | str | None, *, code: str, reason: str, topic: str,
                partition: int | None, offset: int | None) -> bytes:
    """The dead-letter record: why, where from, and the raw text."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return json.dumps({"code": code, "reason": reason, "raw": text, "topic": topic,
                       "partition": partition, "offset": offset},
                      ensure_ascii=False, sort_keys=True).encode()


# -- the cell worker: stream core + desk for the partitions this worker owns ------------------

class CellWorker:
    """One :class:`StreamProcessor` and event-id filter per owned partition; outputs go
    to one :class:`TicketSink`.

    With a ``state`` sink each partition's hot-spot state is durable: restored when the
    worker first sees the partition (after a restart or a rebalance), checkpointed after
    the outputs of every hour it closes are applied, when the partition is revoked, and
    at shutdown (:meth:`shutdown`). Checkpoints are named ``<state_prefix>:<partition>``.

    Thread-safe: the faust agent runs :meth:`stream` and :meth:`apply` in a worker thread
    (the store does blocking I/O) while rebalance callbacks call :meth:`revoke` on the
    event loop.
    """

    def __init__(self, *, stream: StreamSettings, policies: PolicyBook,
                 hotspot: HotspotSettings, grid: Grid, sink: TicketSink,
                 state: StateSink | None = None, state_prefix: str = "worker") -> None:
        self.settings = live_stream_settings(stream)
        self.policies = policies
        self.hotspot = hotspot
        self.grid = grid
        self.sink = sink
        self._processors: dict[int, StreamProcessor] = {}
        self._ids: dict[int, EventIdFilter] = {}
        self._seeded: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.state = state
        self.state_prefix = state_prefix
        self._due: set[int] = set()  # partitions that closed an hour since their checkpoint

    def _partition(self, partition: int) -> tuple[StreamProcessor, EventIdFilter, set[str]]:
        processor = self._processors.get(partition)
        if processor is None:
            processor = StreamProcessor(self.settings, self.policies,
                                        HotspotEngine(self.hotspot, self.grid))
            ids = EventIdFilter(self.settings.dedup_horizon_s)
            self._restore(partition, processor, ids)  # may raise StoreUnavailable
            self._processors[partition] = processor
            self._ids[partition] = ids
            self._seeded[partition] = set()
        return processor, self._ids[partition], self._seeded[partition]

    def _state_name(self, partition: int) -> str:
        return f"{self.state_prefix}:{partition}"

    def _restore(self, partition: int, processor: StreamProcessor,
                 ids: EventIdFilter) -> None:
        if self.state is None:
            return
        data = self.state.load_state(self._state_name(partition))
        if data is None:
            return
        try:
            hotspot_state.restore(processor, data)
        except hotspot_state.CheckpointError as exc:
            log.warning("hot-spot state of partition %d not restored, starting cold: %s",
                        partition, exc)
            return
        # a redelivered detection the checkpoint already counted is not counted again
        for event_id, ts in hotspot_state.held_event_ids(processor):
            ids.seen(event_id, ts)
        self.counts["restored"] += 1

    def _checkpoint(self, partitions: Iterable[int]) -> None:
        if self.state is None:
            return
        for partition in sorted(partitions):
            processor = self._processors.get(partition)
            if processor is not None and processor.hotspots.open_hour is not None:
                self.state.save_state(self._state_name(partition),
                                      hotspot_state.dump(processor))
                self.counts["checkpoints"] += 1
            self._due.discard(partition)

    def stream(self, partition: int, cell_id: str, detection: Detection) -> list[StreamOutput]:
        """The stream stage for one detection of a cell on ``partition``."""
        with self._lock:
            processor, ids, seeded = self._partition(partition)
            if cell_id not in seeded:
                # the first time this processor sees the cell: remember what its tickets
                # hold, so a redelivered detection is dropped before it re-opens an
                # incident (as the embedded service does at start-up)
                for event_id, ts in self.sink.held_event_ids(cell_id):
                    ids.seen(event_id, ts)
                seeded.add(cell_id)
            if ids.seen(detection.event_id, detection.observed_at.timestamp()):
                self.counts["duplicates"] += 1
                return []
            self.counts["processed"] += 1
            hour_before = processor.hotspots.open_hour
            outputs = processor.push(detection, cell_id)
            if hour_before is not None and processor.hotspots.open_hour != hour_before:
                self._due.add(partition)
            return outputs

    def apply(self, outputs: Sequence[StreamOutput]) -> list[str]:
        """Apply outputs to tickets (the sink makes a repeat harmless), then checkpoint
        the partitions that closed an hour (so a checkpoint never holds findings whose
        tickets are not written)."""
        with self._lock:
            written = self.sink.apply(outputs) if outputs else []
            if self._due:
                self._checkpoint(list(self._due))
            return written

    def flush(self) -> list[str]:
        """Close open hot-spot windows of every owned partition (the end of a finite
        input; a worker that stops and starts again uses :meth:`shutdown`)."""
        with self._lock:
            outputs = [o for p in sorted(self._processors) for o in self._processors[p].flush()]
        return self.apply(outputs)

    def shutdown(self) -> list[str]:
        """The shutdown flush: with a state sink, checkpoint every owned partition (the
        open hour stays open: the next run continues it, as an uninterrupted one would);
        without one, close the open windows (:meth:`flush`) so their findings are not
        lost. Returns the tickets written."""
        if self.state is None:
            return self.flush()
        with self._lock:
            self._checkpoint(list(self._processors))
        return []

    def revoke(self, partitions: Iterable[int]) -> None:
        """Checkpoint (with a state sink) and forget the state of partitions this worker
        no longer owns; whoever gets them restores the checkpoint and takes the
        redelivered detections on from there."""
        partitions = list(partitions)
        with self._lock:
            try:
                self._checkpoint([p for p in partitions if p in self._processors])
            except StoreUnavailable as exc:
                log.warning("checkpoint of revoked partitions %s failed (%s); their next "
                            "owner starts from the previous one", partitions, exc)
            for partition in partitions:
                self._processors.pop(partition, None)
                self._ids.pop(partition, None)
                self._seeded.pop(partition, None)

    @property
    def partitions(self) -> list[int]:
        return sorted(self._processors)


# -- the faust app ------------------------------------------------------------------------------

Sender = Callable[[str, bytes | None, bytes], Awaitable[None]]
_T = TypeVar("_T")


class Scaleout:
    """The faust app, its topics and its two agents, over one :class:`CellWorker`.

    Args:
        settings: broker, partitions, web port.
        grid: the cell grid (ingest looks cells up in it).
        worker: the stream state and the ticket sink.
        sender: ``await sender(topic, key, value)`` publishes one record; defaults to the
            faust topics. Tests pass a recorder, since faust has no in-memory broker.
    """

    retry_delay_s = 0.5  # first wait when the store is unavailable; doubles to 30 s

    def __init__(self, settings: ScaleoutSettings, *, grid: Grid, worker: CellWorker,
                 sender: Sender | None = None,
                 skew_clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        # live: the clock detections are checked against (clock_skew); None: no check
        self.skew_clock = skew_clock
        self.grid = grid
        self.worker = worker
        self.counts: Counter[str] = Counter()
        self.app = faust.App(
            settings.app_id,
            broker=settings.broker_url,
            store="memory://",  # no faust tables: ticket state lives in the SQL store
            autodiscover=False,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            processing_guarantee="at_least_once",
            web_enabled=settings.web_port is not None,
            web_port=settings.web_port or 6066,
        )
        self.detections_topic = self._raw_topic(TOPIC_DETECTIONS)
        self.by_cell_topic = self._raw_topic(TOPIC_BY_CELL, partitions=settings.partitions)
        self.deadletter_topic = self._raw_topic(TOPIC_DEADLETTER)
        self._topics = {t.get_topic_name(): t for t in
                        (self.detections_topic, self.by_cell_topic, self.deadletter_topic)}
        self.send: Sender = sender or self._send_to_kafka
        self.ingest_agent = self.app.agent(self.detections_topic, name="gridwatch.ingest")(
            self._ingest)
        self.cell_agent = self.app.agent(self.by_cell_topic, name="gridwatch.cells")(
            self._cells)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]

    def _raw_topic(self, name: str, *, partitions: int | None = None) -> Any:
        # bytes in, bytes out: validation is ours (parse_detection), not a codec's
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=partitions)

    async def _send_to_kafka(self, topic: str, key: bytes | None, value: bytes) -> None:
        # buffered by the producer; faust flushes it before committing offsets
        await self._topics[topic].send(key=key, value=value)

    async def _on_revoked(self, _sender: Any, *args: Any, signal: Any = None,
                          **_: Any) -> None:
        revoked = args[0] if args else set()
        partitions = [tp.partition for tp in revoked if tp.topic == TOPIC_BY_CELL]
        if partitions:
            log.info("partitions %s of %s revoked; dropping their state", partitions,
                     TOPIC_BY_CELL)
            self.worker.revoke(partitions)

    async def _on_shutdown(self, _sender: Any, **_: Any) -> None:
        # after the consumer stopped, before the producer's last flush
        try:
            tickets = await asyncio.to_thread(self.worker.shutdown)
            log.info("shutdown flush: partitions %s checkpointed, %d tickets written",
                     self.worker.partitions, len(tickets))
        except StoreUnavailable as exc:
            log.error("shutdown flush failed, the ticket store is unavailable (%s); the "
                      "next start restores the last hourly checkpoints", exc)

    async def _dead_letter(self, event: Any, code: str, reason: str) -> None:
        message = event.message
        self.counts[f"rejected:{code}"] += 1
        log.info("dead letter from %s[%s]@%s: %s", message.topic, message.partition,
                 message.offset, reason)
        await self.send(TOPIC_DEADLETTER, event.key, dead_letter(
            event.value, code=code, reason=reason, topic=message.topic,
            partition=message.partition, offset=message.offset))

    async def _ingest(self, stream: Any) -> AsyncIterator[dict[str, Any]]:
        async for event in stream.events():
            clock = self.skew_clock
            routed = route(event.value, self.grid, limits=self.worker.settings,
                           now=None if clock is None else clock())
            self.counts[routed.outcome] += 1
            if routed.code is not None:
                await self._dead_letter(event, routed.code, routed.reason or "")
            elif routed.cell_id is not None:
                # the cell id is the record key: Kafka's key partitioner keeps a cell on
                # one partition, so one worker holds all of its state
                await self.send(TOPIC_BY_CELL, routed.cell_id.encode(),
                                event.value.strip())
            yield {"outcome": routed.outcome, "cell_id": routed.cell_id,
                   "code": routed.code, "reason": routed.reason}

    async def _cells(self, stream: Any) -> AsyncIterator[dict[str, Any]]:
        async for event in stream.events():
            cell_id = event.key.decode() if isinstance(event.key, bytes) else event.key
            if not cell_id or cell_id not in self.grid:
                await self._dead_letter(event, "unknown_cell",
                                        f"record key {cell_id!r} is not a cell of the grid")
                yield {"outcome": "rejected", "code": "unknown_cell"}
                continue
            try:
                detection = parse_detection(event.value)
            except DetectionRejected as exc:
                await self._dead_letter(event, exc.code.value, exc.reason)
                yield {"outcome": "rejected", "code": exc.code.value}
                continue
            partition = event.message.partition
            outputs = await self._until_stored(self.worker.stream, partition, cell_id,
                                               detection)
            tickets = await self._until_stored(self.worker.apply, outputs)
            yield {"outcome": "processed", "cell_id": cell_id, "tickets": tickets}

    async def _until_stored(self, work: Callable[..., _T], *args: Any) -> _T:
        # the store is down: retry (seeding reads only; the desk path is idempotent)
        # instead of moving on, so no offset is committed past a detection that never
        # reached a ticket. In a worker thread: the store's I/O is blocking.
        delay = self.retry_delay_s
        while True:
            try:
                return await asyncio.to_thread(work, *args)
            except StoreUnavailable as exc:
                log.warning("ticket store unavailable (%s); retrying in %.1fs",
                            exc.__cause__ or exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX_S)
