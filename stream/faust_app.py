"""The scale-out runtime: faust agents on Kafka, keyed by grid cell.

Three stages, the same pure core as replay and the embedded service
(:class:`~stream.processor.StreamProcessor` → :class:`~ticketing.desk.TicketDesk`)::

    gridwatch.detections.v1 ──ingest──► gridwatch.detections.by_cell ──cells──► tickets (SQL)
      (raw detection v1 JSON)  │          (key = cell id, value = the raw JSON)
                               └──► gridwatch.deadletter (JSON: code, reason, raw)

* **ingest** (read by :class:`~stream.kafka_input.InputPump`, not a faust agent)
  validates each message (:func:`~detectors.schema.parse_detection`), looks up
  its cell and re-publishes it keyed by the cell id, so Kafka's key partitioner puts every
  detection of a cell on one partition and so in one worker. Invalid messages go to the
  dead-letter topic with the reason; detections outside every cell are counted only.
* **cells** keeps one :class:`StreamProcessor` per partition it owns for the incident
  kinds (state is dropped when a partition is revoked) and hands the outputs to the
  :class:`TicketSink` (the idempotent desk over a SQL ticket store, PostgreSQL in
  production). Detections of hot-spot kinds go on to ``gridwatch.detections.hotspot``.
* **hotspots** (:class:`HotspotStage`, the topic's one partition) runs one
  :class:`StreamProcessor` and :class:`HotspotEngine` over the whole grid, in event-time
  order across the by-cell partitions, checkpointed with :mod:`stream.hotspot_state`.

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
import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit

import faust
import numpy as np
from faust.assignor import PartitionAssignor
from faust.transport.drivers import aiokafka as faust_aiokafka
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from detectors.schema import Detection, DetectionRejected, parse_detection
from geo.grid import Grid
from stream import hotspot_state
from stream.dedup import EventIdFilter
from stream.hotspot import HotspotEngine, HotspotSettings
from stream.kafka_input import InputPump, input_group
from stream.policy import Mode, PolicyBook, StreamSettings
from stream.processor import StreamOutput, StreamProcessor, live_stream_settings
from stream.retry import Backoff

log = logging.getLogger(__name__)

TOPIC_DETECTIONS = "gridwatch.detections.v1"
TOPIC_BY_CELL = "gridwatch.detections.by_cell"
TOPIC_DEADLETTER = "gridwatch.deadletter"
# one partition: the cells stage forwards every hot-spot-kind detection here (keyed by
# cell, in event-time order per by-cell partition, with watermark markers); one hot-spot
# stage runs the whole grid's HotspotEngine over it
TOPIC_HOTSPOT = "gridwatch.detections.hotspot"
HOTSPOT_STATE = "hotspots"  # checkpoint name suffix: <state_prefix>:hotspots

STORE_RETRY_MAX_S = 30.0
BROKER_RETRY_MAX_S = 30.0

# headers ingest puts on every by-cell record and watermark marker: the input partition
# it came from and that partition's event-time high mark (latest observed_at) so far
HEADER_SOURCE = "gw-source"
HEADER_HIGH = "gw-high"
HEADER_MARK = "gw-mark"  # present on a watermark marker (no detection in the value)
IDLE = b"idle"  # HEADER_HIGH of a marker from an input partition with nothing pending
# present on a packed record: its value is a JSON list of detections (see pack()), all
# from the one upstream partition its HEADER_SOURCE names
HEADER_PACK = "gw-pack"


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
    input_partitions: int = Field(8, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1)
    # the cells stage holds detections until every input partition has passed their
    # event time by this much (0: only as long as the slowest input partition lags)
    lateness_s: float = Field(0.0, ge=0)
    # an input partition ingest has read nothing from for idle_s is announced idle: the
    # cells stage stops waiting for it (until it delivers again)
    idle_s: float = Field(5.0, gt=0)
    tick_s: float = Field(1.0, gt=0)  # how often ingest announces its partitions' marks
    metrics_s: float = Field(10.0, gt=0)  # how often the worker logs its metrics line
    batch_max: int = Field(2000, ge=1)  # input / hot-spot records per batch
    # packed by-cell records (up to PACK_MAX_BYTES of detections each) per cells batch
    # (at most batch_max): small, so the hot-spot stage behind it gets work as it comes
    cells_batch_max: int = Field(16, ge=1)
    batch_within_s: float = Field(0.2, gt=0)
    # how long a fetch may wait at the broker for records (Kafka's fetch.max.wait.ms,
    # both consumers): a broker that answers a waiting fetch only when it expires
    # (Tansu 0.6) hands records from one stage to the next this late (faust's own 1.5 s
    # made the hot-spot stage wait ~0.55 s a time for what ingest had already sent)
    fetch_wait_s: float = Field(0.1, gt=0, le=30)
    # catching up a backlog, an input partition more than this far (event time) ahead of
    # the slowest with records left waits for it (0: off; see kafka_input.InputPump)
    align_s: float = Field(600.0, ge=0)
    # the worker that owns the hot-spot stage gets no by-cell and no input partition
    # while there are other workers (see spare_hotspot_owner)
    spare_hotspot_owner: bool = True
    # while the broker is down: the first of each repeated Kafka-client warning or error,
    # then at most one line (with the count held back) per this many seconds
    log_repeat_s: float = Field(30.0, gt=0)
    # at shutdown, how long the producer's last flush may wait for the broker (records
    # still buffered then are dropped: their input offsets were not committed either)
    stop_flush_s: float = Field(3.0, gt=0)
    # SIGTERM: a worker still stopping after this long exits anyway (the bound
    # is 10 s; an orderly stop with the broker up takes 2-5 s)
    stop_s: float = Field(8.0, gt=0)
    # deadline clocks start at event time and no clock_skew check: re-processing history
    # (and tests); tickets then equal replay's field for field
    event_clock: bool = False
    # consumer-group timeouts (faust's broker_session_timeout etc.); tests shorten them
    session_timeout_s: float = Field(30.0, gt=0)
    heartbeat_s: float = Field(3.0, gt=0)
    rebalance_timeout_s: float = Field(60.0, gt=0)
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
        "input_partitions": "GRIDWATCH_KAFKA_INPUT_PARTITIONS",
        "lateness_s": "GRIDWATCH_KAFKA_LATENESS_S",
        "idle_s": "GRIDWATCH_KAFKA_IDLE_S",
        "tick_s": "GRIDWATCH_KAFKA_TICK_S",
        "batch_max": "GRIDWATCH_KAFKA_BATCH_MAX",
        "fetch_wait_s": "GRIDWATCH_KAFKA_FETCH_WAIT_S",
        "cells_batch_max": "GRIDWATCH_KAFKA_CELLS_BATCH_MAX",
        "spare_hotspot_owner": "GRIDWATCH_KAFKA_SPARE_HOTSPOT_OWNER",
        "align_s": "GRIDWATCH_KAFKA_ALIGN_S",
        "metrics_s": "GRIDWATCH_KAFKA_METRICS_S",
        "log_repeat_s": "GRIDWATCH_KAFKA_LOG_REPEAT_S",
        "stop_flush_s": "GRIDWATCH_KAFKA_STOP_FLUSH_S",
        "stop_s": "GRIDWATCH_KAFKA_STOP_S",
        "session_timeout_s": "GRIDWATCH_KAFKA_SESSION_TIMEOUT_S",
        "heartbeat_s": "GRIDWATCH_KAFKA_HEARTBEAT_S",
        "rebalance_timeout_s": "GRIDWATCH_KAFKA_REBALANCE_TIMEOUT_S",
        "event_clock": "GRIDWATCH_KAFKA_EVENT_CLOCK",
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
          limits: StreamSettings | None = None, lookup: bool = True) -> Routed:
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
    if not lookup:  # route_many looks the batch up at once
        return Routed(detection=detection)
    [index] = grid.lookup(np.array([detection.lon]), np.array([detection.lat])).tolist()
    cell_id = grid.cells[index].cell_id if index >= 0 else None
    return Routed(detection=detection, cell_id=cell_id)


def route_many(raws: Sequence[bytes | str | None], grid: Grid, *,
               now: datetime | None = None,
               limits: StreamSettings | None = None) -> list[Routed]:
    """:func:`route` for a batch: the same outcomes, one vectorised grid lookup for all
    the valid detections (a one-point lookup costs about as much as a hundred)."""
    out: list[Routed | None] = []
    valid: list[tuple[int, Detection]] = []
    for raw in raws:
        routed = route(raw, grid, now=now, limits=limits, lookup=False)
        if routed.detection is not None and routed.code is None:
            valid.append((len(out), routed.detection))
            out.append(None)
        else:
            out.append(routed)
    if valid:
        cell_ids = grid.lookup_ids((d.lon for _, d in valid), (d.lat for _, d in valid))
        for (i, detection), cell_id in zip(valid, cell_ids, strict=True):
            out[i] = Routed(detection=detection, cell_id=cell_id)
    return out  # type: ignore[return-value]


# -- packed records: many detections in one record on the internal topics ----------------------

@dataclass(frozen=True, slots=True)
class Packed:
    """One detection inside a packed record: its cell, where it entered (the input
    partition and offset, so a dead letter can name that record) and its JSON."""

    cell_id: str
    partition: int | None
    offset: int | None
    raw: str


def pack(items: Iterable[Packed]) -> bytes:
    """The value of a packed record: ``[[cell id, input partition, input offset, detection
    JSON], ...]``."""
    return json.dumps([[i.cell_id, i.partition, i.offset, i.raw] for i in items],
                      ensure_ascii=False, separators=(",", ":")).encode()


# a packed record stays well under the producer's batch (256 KiB) and aiokafka's request
# limit (1 MiB): a longer list is split over several records
PACK_MAX_BYTES = 128 * 1024


def packs(items: Sequence[Packed], max_bytes: int = PACK_MAX_BYTES, *,
          inline: bool = False) -> Iterator[bytes]:
    """:func:`pack` (``inline``: :func:`pack_inline`) over consecutive slices of
    ``items``, each record's value about ``max_bytes`` at most (a single larger
    detection gets a record of its own)."""
    write = pack_inline if inline else pack
    start, size = 0, 0
    for i, item in enumerate(items):
        raw = item.raw  # JSON in JSON: each quote and backslash gets escaped
        cost = len(raw) + len(item.cell_id) + 32
        if not inline:
            cost += raw.count('"') + raw.count("\\")
        if size and size + cost > max_bytes:
            yield write(items[start:i])
            start, size = i, 0
        size += cost
    if start < len(items):
        yield write(items[start:])


def unpack(value: bytes | str | None) -> list[Packed]:
    """The detections of a packed record (either form: :func:`pack`, or
    :func:`pack_inline` — an inline detection comes back as compact JSON). Raises
    ``ValueError`` when the value is not a list of ``[str, int|null, int|null, str or
    object]`` (each detection is checked later, one by one)."""
    if value is None:
        raise ValueError("a packed record without a value")
    rows = json.loads(value)
    if not isinstance(rows, list):
        raise ValueError(f"expected a list of detections, got {type(rows).__name__}")
    out: list[Packed] = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str)
                and isinstance(row[3], (str, dict))
                and all(v is None or (isinstance(v, int) and not isinstance(v, bool))
                        for v in row[1:3])):
            raise ValueError(f"expected [cell id, partition, offset, detection], got "
                             f"{str(row)[:80]}")
        raw = row[3] if isinstance(row[3], str) else json.dumps(
            row[3], ensure_ascii=False, separators=(",", ":"))
        out.append(Packed(row[0], row[1], row[2], raw))
    return out


# the hot-spot stage's batch window (at most batch_within_s): see Scaleout._hotspots
HOT_BATCH_WITHIN_S = 0.01

# HEADER_PACK of a record written by pack_inline (b"1": pack)
PACK_INLINE = b"2"


def pack_inline(items: Iterable[Packed]) -> bytes:
    """A packed record whose detections are inline JSON objects, not strings:
    ``[[cell id, input partition, input offset, {detection}], ...]`` — each item's
    ``raw`` must be one JSON object, as :meth:`Detection.to_json` writes it. Nothing is
    escaped on the way in, and :func:`unpack_inline` validates a whole record in one
    call (the hot-spot stage reads every hot-spot-kind detection of the grid)."""
    def number(value: int | None) -> str:
        return "null" if value is None else str(int(value))

    return ("[" + ",".join(
        f"[{json.dumps(i.cell_id, ensure_ascii=False)},{number(i.partition)},"
        f"{number(i.offset)},{i.raw}]" for i in items) + "]").encode()


_INLINE = TypeAdapter(list[tuple[str, StrictInt | None, StrictInt | None, Detection]])


def unpack_inline(value: bytes | str) -> list[tuple[str, int | None, int | None, Detection]]:
    """The rows of a :func:`pack_inline` record, every detection validated as
    :func:`~detectors.schema.parse_detection` does. Raises pydantic's
    ``ValidationError`` if any part is not (then read it with :func:`unpack`, item by
    item, to refuse only the bad ones)."""
    return _INLINE.validate_json(value)


def partition_for(cell_id: str, partitions: int) -> int:
    """The partition of ``gridwatch.detections.by_cell`` that holds a cell: what the
    producer's default key partitioner (aiokafka's murmur2, as in the Java client) picks
    for the record key ``cell_id``."""
    from aiokafka.partitioner import murmur2

    if partitions < 1:
        raise ValueError(f"expected partitions >= 1, got {partitions}")
    return (murmur2(cell_id.encode()) & 0x7FFFFFFF) % partitions


def dead_letter(raw: bytes | str | None, *, code: str, reason: str, topic: str,
                partition: int | None, offset: int | None,
                via: Mapping[str, Any] | None = None) -> bytes:
    """The dead-letter record: why, where from, and the raw text. A detection refused
    inside a packed record names its input record (``topic``, ``partition``, ``offset``)
    and, as ``via``, the packed record it was refused in."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    letter: dict[str, Any] = {"code": code, "reason": reason, "raw": text, "topic": topic,
                              "partition": partition, "offset": offset}
    if via is not None:
        letter["via"] = dict(via)
    return json.dumps(letter, ensure_ascii=False, sort_keys=True).encode()


# -- topics: declared at start ------------------------------------------------------------------

class TopicMismatch(ValueError):
    """A topic exists with another partition count than the settings ask for."""


def wanted_topics(settings: ScaleoutSettings) -> dict[str, int]:
    """Topic name → partition count the worker needs."""
    return {TOPIC_DETECTIONS: settings.input_partitions,
            TOPIC_BY_CELL: settings.partitions,
            TOPIC_DEADLETTER: 1,
            TOPIC_HOTSPOT: 1}


def bootstrap_servers(broker_url: str) -> list[str]:
    """``host:port`` of each ``kafka://host:port`` in a ``;``-separated broker URL."""
    return [urlsplit(part.strip()).netloc for part in broker_url.split(";") if part.strip()]


async def declare_topics(settings: ScaleoutSettings, *, timeout_s: float = 60.0
                         ) -> dict[str, int]:
    """Create the worker's topics with the configured partition counts (an existing topic
    is kept) and check the counts; returns name → partitions.

    Raises:
        TopicMismatch: a topic exists with another partition count — the key → partition
            mapping (murmur2 of the key modulo the count) would differ from the one the
            settings promise, so the worker must not start.
        TimeoutError: the broker did not answer within ``timeout_s`` (retried quietly,
            with back-off, until then).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    wanted = wanted_topics(settings)
    deadline = asyncio.get_running_loop().time() + timeout_s
    delay = 0.5
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings.broker_url),
                                    request_timeout_ms=10_000)
        try:
            await admin.start()
            # create first: describing a missing topic auto-creates it on some brokers
            # (Tansu creates 4 partitions), which would defeat the check
            response = await admin.create_topics([
                NewTopic(name, count, settings.replication_factor)
                for name, count in wanted.items()])
            for name, code, message in (e[:3] for e in response.topic_errors):
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
                    raise TopicMismatch(f"cannot create topic {name}: error {code} "
                                        f"({message})")
            described = await admin.describe_topics(list(wanted))
            break
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise TimeoutError(f"the Kafka broker {settings.broker_url} did not answer "
                                   f"within {timeout_s:.0f} s: {exc!r}") from exc
            log.warning("Kafka broker %s not answering (%s); retrying in %.1f s",
                        settings.broker_url, type(exc).__name__, delay)
        finally:
            await admin.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, BROKER_RETRY_MAX_S)
    actual = {d["topic"]: len(d["partitions"]) for d in described}
    for name, count in wanted.items():
        if actual.get(name) != count:
            setting = {TOPIC_DETECTIONS: "input_partitions (--input-partitions, "
                                         "$GRIDWATCH_KAFKA_INPUT_PARTITIONS)",
                       TOPIC_BY_CELL: "partitions (--partitions, "
                                      "$GRIDWATCH_KAFKA_PARTITIONS)"}.get(name, "-")
            raise TopicMismatch(
                f"topic {name} exists with {actual.get(name)} partitions, but the worker is "
                f"configured for {count} ({setting}); set the setting to the topic's count "
                f"or recreate the topic — never change a running system's count, cells "
                f"would move between partitions")
    return actual


# -- event-time order across input partitions -------------------------------------------------

class Watermarks:
    """How far in event time each input partition has got, as one by-cell partition has
    heard (from the headers ingest puts on records and markers).

    The watermark is the minimum over the input partitions that are not idle: nothing
    older can still arrive from a partition that has not announced itself idle, whichever
    partition drains faster. Until every input partition has been heard of, it is
    ``-inf`` (hold everything). Records without the headers (a producer writing to the
    by-cell topic directly) advance a partition-local mark instead, used only while no
    input partition has been heard of.
    """

    __slots__ = ("sources", "high", "idle", "direct")

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.high: dict[int, float] = {}
        self.idle: set[int] = set()
        self.direct = float("-inf")

    def observe(self, source: int, high: float | None) -> None:
        """``high`` is the input partition's latest event time, ``None``: idle."""
        if high is None:
            self.idle.add(source)
            return
        self.idle.discard(source)
        if high > self.high.get(source, float("-inf")):
            self.high[source] = high

    def observe_direct(self, ts: float) -> None:
        if ts > self.direct:
            self.direct = ts

    def value(self) -> float:
        if not self.high and not self.idle:
            return self.direct
        if len(self.idle | self.high.keys()) < self.sources:
            return float("-inf")
        active = [h for s, h in self.high.items() if s not in self.idle]
        return min(active) if active else float("inf")


def read_mark(headers: Mapping[str, Any] | None) -> tuple[int, float | None] | None:
    """(input partition, high mark or ``None`` for idle) from a record's headers, or
    ``None`` when it carries none. Raises ``ValueError`` on malformed headers."""
    if not headers or HEADER_SOURCE not in headers:
        return None
    source = int(_text(headers[HEADER_SOURCE]))
    high = headers.get(HEADER_HIGH)
    if high is None or _text(high) == IDLE.decode():
        return source, None
    return source, float(_text(high))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class Held:
    """A by-cell record waiting in the reorder buffer; ``token`` is acked on release."""

    cell_id: str
    detection: Detection
    token: Any = None
    # (input partition, offset) the detection entered through, when known
    origin: tuple[int | None, int | None] | None = None
    ts: float | None = None  # observed_at as a timestamp, once a reorder buffer has it


class ReorderBuffer:
    """Detections held until the watermark of their upstream partitions has passed them
    (then released in event-time order, ties in arrival order). The cells stage keeps one
    per by-cell partition, the hot-spot stage one for its topic (sources: the input
    partitions, for both). Not thread-safe: the owner locks."""

    __slots__ = ("marks", "heap", "_seq")

    def __init__(self, sources: int) -> None:
        self.marks = Watermarks(sources)
        self.heap: list[tuple[float, int, Held]] = []
        self._seq = itertools.count()

    def hold(self, held: Held, *, direct: bool = False) -> None:
        ts = held.ts = held.detection.observed_at.timestamp()
        if direct:
            self.marks.observe_direct(ts)
        heapq.heappush(self.heap, (ts, next(self._seq), held))

    def until(self, lateness_s: float) -> float:
        """Event time up to which :meth:`release` releases."""
        return self.marks.value() - lateness_s

    def release(self, lateness_s: float, *, everything: bool = False) -> list[Held]:
        heap = self.heap
        until = float("inf") if everything else self.until(lateness_s)
        out: list[Held] = []
        while heap and heap[0][0] <= until:
            out.append(heapq.heappop(heap)[2])
        return out

    def __len__(self) -> int:
        return len(self.heap)


def _unlocked(read: Callable[[], Any]) -> Any:
    """``read()`` without the stage's lock: the metrics timer runs on the event loop, and
    the lock is held by the worker thread for a whole batch (waiting for it stalled the
    loop ~30 ms a call). Counters are read as they are; a dict that changed size while
    being read is read again."""
    for _ in range(4):
        try:
            return read()
        except RuntimeError:  # dictionary changed size during iteration
            continue
    return read()


# -- the cell worker: stream core + desk for the partitions this worker owns ------------------

class CellWorker:
    """One :class:`StreamProcessor` and event-id filter per owned by-cell partition for
    the incident kinds; outputs go to one :class:`TicketSink`. Detections of hot-spot
    kinds are not counted here: ingest sends them to the hot-spot stage
    (:class:`HotspotStage`, one for the whole grid), since the occurrence deduper and the
    multiple-testing correction span cells of every partition; one that reaches the cells
    stage all the same (written to the by-cell topic directly) is handed on by
    :meth:`take_forwarded`, in event-time order.

    Incident state is not checkpointed: it is seeded from the tickets (``held_event_ids``)
    the first time a partition sees a cell.

    Thread-safe: the faust agent runs :meth:`process` and :meth:`apply` in a worker thread
    (the store does blocking I/O) while rebalance callbacks call :meth:`revoke` on the
    event loop.
    """

    def __init__(self, *, stream: StreamSettings, policies: PolicyBook,
                 hotspot: HotspotSettings, grid: Grid, sink: TicketSink,
                 lateness_s: float = 0.0, sources: int = 1) -> None:
        self.settings = live_stream_settings(stream)
        self.lateness_s = lateness_s
        self.sources = sources  # partitions of the input topic (watermark sources)
        self._order: dict[int, ReorderBuffer] = {}
        # per by-cell partition: processed, duplicates, late, dead_letters, forwarded
        self.partition_counts: dict[int, Counter[str]] = {}
        self.policies = policies
        self.hotspot = hotspot
        self.grid = grid
        self.sink = sink
        self._processors: dict[int, StreamProcessor] = {}
        self._ids: dict[int, EventIdFilter] = {}
        self._seeded: dict[int, set[str]] = {}
        self._lock = threading.Lock()  # processors, filters, sink (the worker thread)
        # the reorder buffers: the event loop holds and releases while the worker thread
        # processes and writes (a batch's store writes held up the whole loop before)
        self._order_lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._hot_kinds: dict[str, bool] = {}
        # hot-spot-kind detections processed, not yet taken by the agent: (partition, held)
        self._forward: list[tuple[int, Held]] = []

    def is_hotspot_kind(self, kind: str) -> bool:
        hot = self._hot_kinds.get(kind)
        if hot is None:
            hot = self._hot_kinds[kind] = self.policies.for_kind(kind).mode is Mode.HOTSPOT
        return hot

    def _partition(self, partition: int) -> tuple[StreamProcessor, EventIdFilter, set[str]]:
        processor = self._processors.get(partition)
        if processor is None:
            # its engine stays empty: hot-spot kinds never reach this processor
            # the event-id filter beside it is the one filter (seeded, checkpointed)
            processor = StreamProcessor(self.settings, self.policies,
                                        HotspotEngine(self.hotspot, self.grid),
                                        filter_event_ids=False)
            self._processors[partition] = processor
            self._ids[partition] = EventIdFilter(self.settings.dedup_horizon_s)
            self._seeded[partition] = set()
        return processor, self._ids[partition], self._seeded[partition]

    def stream(self, partition: int, cell_id: str, detection: Detection) -> list[StreamOutput]:
        """The stream stage for one detection of a cell on ``partition``, now (no
        reorder buffer: :meth:`hold` and :meth:`release` are the ordered path)."""
        with self._lock:
            self._seed(partition, [cell_id])
            return self._push(partition, Held(cell_id, detection))

    def _seed(self, partition: int, cell_ids: Iterable[str]) -> None:
        # may raise StoreUnavailable; what succeeded stays done, so a retry resumes
        _, ids, seeded = self._partition(partition)
        for cell_id in cell_ids:
            if cell_id not in seeded:
                # the first time this processor sees the cell: remember what its tickets
                # hold, so a redelivered detection is dropped before it re-opens an
                # incident (as the embedded service does at start-up)
                for event_id, ts in self.sink.held_event_ids(cell_id):
                    ids.seen(event_id, ts)
                seeded.add(cell_id)

    def _push(self, partition: int, held: Held) -> list[StreamOutput]:
        counts = self.partition_counts.setdefault(partition, Counter())
        detection = held.detection
        if self.is_hotspot_kind(detection.kind):
            # the hot-spot stage dedups these (its own event-id filter and checkpoint)
            self._forward.append((partition, held))
            self.counts["forwarded"] += 1
            counts["forwarded"] += 1
            return []
        processor, ids, _ = self._partition(partition)
        if ids.seen(detection.event_id, detection.observed_at.timestamp()):
            self.counts["duplicates"] += 1
            counts["duplicates"] += 1
            return []
        self.counts["processed"] += 1
        counts["processed"] += 1
        late_before = processor.stats.late
        outputs = processor.push(detection, held.cell_id)
        if processor.stats.late != late_before:
            self.counts["late"] += 1
            counts["late"] += 1
        return outputs

    def take_forwarded(self) -> list[tuple[int, Held]]:
        """The hot-spot-kind detections processed since the last call, (by-cell
        partition, detection) in the order processed."""
        with self._lock:
            out, self._forward = self._forward, []
            return out

    # -- the ordered path: hold in a reorder buffer, release by watermark ------------------

    def mark(self, partition: int, source: int, high: float | None) -> None:
        """Input partition ``source`` has got to event time ``high`` (``None``: idle)."""
        with self._order_lock:
            self._buffer(partition).marks.observe(source, high)

    def _buffer(self, partition: int) -> ReorderBuffer:
        order = self._order.get(partition)
        if order is None:
            order = self._order[partition] = ReorderBuffer(self.sources)
        return order

    def hold(self, partition: int, cell_id: str, detection: Detection, token: Any = None,
             *, direct: bool = False,
             origin: tuple[int | None, int | None] | None = None) -> None:
        """Put a detection in ``partition``'s reorder buffer (``direct``: it carried no
        watermark headers and advances the partition-local mark)."""
        with self._order_lock:
            self._buffer(partition).hold(Held(cell_id, detection, token, origin),
                                         direct=direct)

    def release(self, partition: int, *, everything: bool = False) -> list[Held]:
        """Take the held detections the watermark has passed (minus ``lateness_s``), in
        event-time order (ties in arrival order); ``everything``: all of them."""
        with self._order_lock:
            order = self._order.get(partition)
            if order is None:
                return []
            return order.release(self.lateness_s, everything=everything)

    def process(self, partition: int, released: Sequence[Held]) -> list[StreamOutput]:
        """The stream stage for released detections of ``partition``, in order. Seeding
        reads the store first (may raise :class:`StoreUnavailable`: call again with the
        same detections); processing itself does no I/O."""
        with self._lock:
            self._seed(partition, dict.fromkeys(
                h.cell_id for h in released if not self.is_hotspot_kind(h.detection.kind)))
            outputs: list[StreamOutput] = []
            for held in released:
                outputs.extend(self._push(partition, held))
            return outputs

    def held(self, partition: int | None = None) -> int:
        """Detections waiting in the reorder buffer (of one partition, or all)."""
        with self._order_lock:
            if partition is not None:
                return len(self._order.get(partition, ()))
            return sum(map(len, self._order.values()))

    def metrics(self) -> dict[int, dict[str, Any]]:
        """Per owned by-cell partition: processed, duplicates, late, dead letters,
        forwarded (hot-spot kinds, to the hot-spot stage), held (waiting for the
        watermark) and the watermark (event-time seconds). Read without the lock (see
        :func:`_unlocked`)."""
        return _unlocked(self._metrics)

    def _metrics(self) -> dict[int, dict[str, Any]]:
        parts = sorted(set(self._processors) | set(self._order)
                       | set(self.partition_counts))
        return {p: {"processed": self.partition_counts.get(p, Counter())["processed"],
                    "duplicates": self.partition_counts.get(p, Counter())["duplicates"],
                    "late": self.partition_counts.get(p, Counter())["late"],
                    "dead_letters":
                        self.partition_counts.get(p, Counter())["dead_letters"],
                    "forwarded": self.partition_counts.get(p, Counter())["forwarded"],
                    "held": len(self._order[p]) if p in self._order else 0,
                    "watermark":
                        self._order[p].marks.value() if p in self._order else None}
                for p in parts}

    def count_dead_letter(self, partition: int) -> None:
        with self._lock:
            self.partition_counts.setdefault(partition, Counter())["dead_letters"] += 1

    def apply(self, outputs: Sequence[StreamOutput]) -> list[str]:
        """Apply outputs to tickets (the sink makes a repeat harmless)."""
        with self._lock:
            return self.sink.apply(outputs) if outputs else []

    def flush(self) -> list[str]:
        """Release and process everything held (the end of a finite input); hot-spot
        kinds among it wait in :meth:`take_forwarded`."""
        outputs: list[StreamOutput] = []
        for partition in sorted(self._order):
            outputs.extend(self.process(partition, self.release(partition, everything=True)))
        with self._lock:
            outputs += [o for p in sorted(self._processors)
                        for o in self._processors[p].flush()]
        return self.apply(outputs)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget the state of partitions this worker no longer owns; whoever gets them
        seeds from the tickets and takes the redelivered detections on from there."""
        with self._lock, self._order_lock:
            for partition in partitions:
                self._processors.pop(partition, None)
                self._ids.pop(partition, None)
                self._seeded.pop(partition, None)
                # held detections were never acked: the next owner gets them again
                self._order.pop(partition, None)
                self.partition_counts.pop(partition, None)
                self._forward = [f for f in self._forward if f[0] != partition]

    @property
    def partitions(self) -> list[int]:
        return sorted(self._processors.keys() | self.partition_counts.keys())


# -- the hot-spot stage: one engine over the whole grid ---------------------------------------

class HotspotStage:
    """ONE :class:`StreamProcessor` for the hot-spot kinds of the whole grid (occurrence
    dedup, the :class:`HotspotEngine`, the multiple-testing correction over every cell),
    fed by ingest through :data:`TOPIC_HOTSPOT` and ordered across the input partitions
    by a :class:`ReorderBuffer` (the marks ingest stamps on each record and announces).
    Findings go to the same :class:`TicketSink`.

    With a ``state`` sink its state is durable (:mod:`stream.hotspot_state`, under
    ``state_name``): restored the first time the stage processes (a restart, or a worker
    taking the partition over), checkpointed after the outputs of an hour it closes are
    applied (at most every :attr:`checkpoint_min_s` while a backlog closes hours faster
    than that), when :attr:`checkpoint_max_pending` detections or
    :attr:`checkpoint_max_s` seconds have gone by since the last one, on revoke and at
    shutdown. The scale-out app acknowledges a hot-spot record only once a checkpoint
    holds its detections (:attr:`unsaved` is 0), so a ``kill -9`` redelivers exactly what
    the restored state lacks. After a restore, the event ids the checkpoint counted are
    seeded into the stage's event-id filter: a redelivered detection is not counted
    twice.
    """

    # a checkpoint costs ~50 ms on the sample (the deduper's state, compressed); while a
    # backlog is caught up, hours close every few milliseconds
    checkpoint_min_s = 5.0
    checkpoint_max_s = 30.0
    checkpoint_max_pending = 20_000

    def __init__(self, *, stream: StreamSettings, policies: PolicyBook,
                 hotspot: HotspotSettings, grid: Grid, sink: TicketSink,
                 state: StateSink | None = None, state_name: str = f"worker:{HOTSPOT_STATE}",
                 lateness_s: float = 0.0, sources: int = 1) -> None:
        self.settings = live_stream_settings(stream)
        self.policies = policies
        self.hotspot = hotspot
        self.grid = grid
        self.sink = sink
        self.state = state
        self.state_name = state_name
        self.lateness_s = lateness_s
        self.sources = sources  # partitions of the input topic (watermark sources)
        self.order = ReorderBuffer(sources)
        self.counts: Counter[str] = Counter()
        self._processor: StreamProcessor | None = None
        self._ids = EventIdFilter(self.settings.dedup_horizon_s)
        self._due = False  # an hour closed since the last checkpoint
        self.unsaved = 0  # detections counted since the last checkpoint
        self._saved_at = float("-inf")  # monotonic time of the last checkpoint
        self._unsaved_since = 0.0  # monotonic time the first of them was counted
        self._lock = threading.Lock()  # processors, filters, sink (the worker thread)
        # the reorder buffers: the event loop holds and releases while the worker thread
        # processes and writes (a batch's store writes held up the whole loop before)
        self._order_lock = threading.Lock()

    @property
    def processor(self) -> StreamProcessor:
        """The stage's processor, restored from the checkpoint on first use (may raise
        :class:`StoreUnavailable`)."""
        if self._processor is None:
            # the event-id filter beside it is the one filter (seeded, checkpointed)
            processor = StreamProcessor(self.settings, self.policies,
                                        HotspotEngine(self.hotspot, self.grid),
                                        filter_event_ids=False)
            ids = EventIdFilter(self.settings.dedup_horizon_s)
            self._restore(processor, ids)
            self._processor, self._ids = processor, ids
        return self._processor

    def _restore(self, processor: StreamProcessor, ids: EventIdFilter) -> None:
        if self.state is None:
            return
        data = self.state.load_state(self.state_name)
        if data is None:
            return
        try:
            hotspot_state.restore(processor, data)
        except hotspot_state.CheckpointError as exc:
            log.warning("hot-spot state %s not restored, starting cold: %s",
                        self.state_name, exc)
            return
        for event_id, ts in hotspot_state.held_event_ids(processor):
            ids.seen(event_id, ts)
        self.counts["restored"] += 1

    def _checkpoint(self) -> None:
        processor = self._processor
        if self.state is not None and processor is not None and \
                processor.hotspots.open_hour is not None:
            self.state.save_state(self.state_name, hotspot_state.dump(processor))
            self.counts["checkpoints"] += 1
        self._due = False
        self.unsaved = 0
        self._saved_at = time.monotonic()

    def _checkpoint_due(self) -> bool:
        if self.state is None or not self.unsaved:
            return False
        now = time.monotonic()
        return (self._due and now - self._saved_at >= self.checkpoint_min_s) or \
            self.unsaved >= self.checkpoint_max_pending or \
            now - self._unsaved_since >= self.checkpoint_max_s

    def maybe_checkpoint(self) -> bool:
        """Checkpoint if one is due (see the class); whether nothing is left unsaved."""
        with self._lock:
            if self._checkpoint_due():
                self._checkpoint()
            return self.unsaved == 0

    def mark(self, source: int, high: float | None) -> None:
        """By-cell partition ``source`` has released up to ``high`` (``None``: idle)."""
        with self._order_lock:
            self.order.marks.observe(source, high)

    def hold(self, cell_id: str, detection: Detection, token: Any = None, *,
             direct: bool = False,
             origin: tuple[int | None, int | None] | None = None) -> None:
        self.hold_many([(cell_id, detection, origin)], token, direct=direct)

    def hold_many(self, keyed: Iterable[tuple[str, Detection,
                                              tuple[int | None, int | None] | None]],
                  token: Any = None, *, direct: bool = False) -> None:
        """:meth:`hold` for each (cell, detection, origin) of one record."""
        with self._order_lock:
            hold = self.order.hold
            for cell_id, detection, origin in keyed:
                hold(Held(cell_id, detection, token, origin), direct=direct)

    def release(self, *, everything: bool = False) -> list[Held]:
        with self._order_lock:
            return self.order.release(self.lateness_s, everything=everything)

    def held(self) -> int:
        with self._order_lock:
            return len(self.order)

    def process(self, released: Sequence[Held]) -> list[StreamOutput]:
        """Count released detections in order (the restore on first use may raise
        :class:`StoreUnavailable`: call again with the same detections)."""
        with self._lock:
            processor = self.processor
            outputs: list[StreamOutput] = []
            for held in released:
                d = held.detection
                ts = d.observed_at.timestamp() if held.ts is None else held.ts
                if self._ids.seen(d.event_id, ts):
                    self.counts["duplicates"] += 1
                    continue
                self.counts["processed"] += 1
                if not self.unsaved:
                    self._unsaved_since = time.monotonic()
                self.unsaved += 1
                hour_before = processor.hotspots.open_hour
                outputs.extend(processor.push(d, held.cell_id, ts=ts))
                if hour_before is not None and processor.hotspots.open_hour != hour_before:
                    self._due = True
            return outputs

    def apply(self, outputs: Sequence[StreamOutput]) -> list[str]:
        """Apply findings to tickets, then checkpoint if one is due (so a checkpoint
        never holds findings whose tickets are not written)."""
        with self._lock:
            written = self.sink.apply(outputs) if outputs else []
            if self._checkpoint_due():
                self._checkpoint()
            return written

    def flush(self) -> list[str]:
        """The end of a finite input: process everything held, close the open hour."""
        outputs = self.process(self.release(everything=True))
        with self._lock:
            outputs += self.processor.flush()
        return self.apply(outputs)

    def shutdown(self) -> list[str]:
        """With a state sink, checkpoint (the open hour stays open: the next run continues
        it); without one, close the open hour (:meth:`flush`) so its findings are not
        lost. Returns the tickets written."""
        if self.state is None:
            return self.flush() if self._processor is not None or len(self.order) else []
        with self._lock:
            self._checkpoint()
        return []

    def revoke(self) -> None:
        """Checkpoint (with a state sink) and forget everything: the partition's next
        owner restores the checkpoint and takes the redelivered records on from there."""
        with self._lock, self._order_lock:
            try:
                if self.state is not None:
                    self._checkpoint()
            except StoreUnavailable as exc:
                log.warning("checkpoint of the hot-spot stage failed (%s); its next owner "
                            "starts from the previous one", exc)
            self._processor = None
            self._ids = EventIdFilter(self.settings.dedup_horizon_s)
            # held records were never acked: the next owner gets them again
            self.order = ReorderBuffer(self.sources)
            self._due = False
            self.unsaved = 0

    def metrics(self) -> dict[str, Any]:
        """Processed, duplicates (redelivered or re-sent), restored, checkpoints, held
        (waiting for the watermark) and the watermark (event-time seconds). Read without
        the lock (see :func:`_unlocked`)."""
        return _unlocked(self._metrics)

    def _metrics(self) -> dict[str, Any]:
        return {**{k: self.counts[k] for k in ("processed", "duplicates", "restored",
                                                 "checkpoints")},
                "held": len(self.order), "watermark": self.order.marks.value()}

    @property
    def active(self) -> bool:
        """Whether the stage holds state (it owns the partition and has processed)."""
        return self._processor is not None


# -- acknowledgements in offset order ---------------------------------------------------------

class _Slot:
    """One delivered record in :class:`InOrderAcks`: acked to faust once it and every
    record delivered before it on its partition are done."""

    __slots__ = ("event", "done", "queue", "pending")

    def __init__(self, event: Any, queue: deque[_Slot]) -> None:
        self.event = event
        self.done = False
        self.queue = queue
        self.pending = 1  # a packed record: one per detection it holds


class InOrderAcks:
    """Acknowledges the records of each partition to faust in the order they were
    delivered, whatever order the stage finishes them in.

    faust (0.15.3, ``Consumer._new_offset``) commits the run of consecutive acked offsets
    that starts at the smallest acked one, and refuses only when that run starts MORE
    than one past the committed offset (``min(acked) - committed > 1``; none at all while
    the committed offset is 0 or unknown). The committed offset is the next record to
    read, so a record AT it that is still unacked is committed past as soon as the record
    after it is acked. The cells and hot-spot stages hold detections (unacked) in their
    reorder buffers while markers and released detections behind them are acked: a
    commit could then cover a held detection, and a kill or a revoke dropped it for good
    (the next owner starts after it). Acking in delivery order keeps every acked run
    starting at the committed offset, so a commit never passes a record not done.

    Event-loop only (the agents and the rebalance callbacks), no lock.
    """

    def __init__(self) -> None:
        self._queues: dict[tuple[str, int], deque[_Slot]] = {}

    def take(self, event: Any) -> _Slot:
        """Register a delivered record (in delivery order) and hold its ack: faust's
        own ack (``take_events``) then only drops this extra reference."""
        message = event.message
        key = (message.topic, message.partition)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        message.incref()
        slot = _Slot(event, queue)
        queue.append(slot)
        return slot

    def expect(self, slot: _Slot, count: int) -> None:
        """The record is done after ``count`` calls of :meth:`done` (a packed record:
        one per detection it holds); 0: done now."""
        slot.pending = count
        if count <= 0:
            slot.pending = 1
            self.done(slot)

    def done(self, slot: _Slot) -> None:
        """The stage has finished with the record (a packed record: with one more of its
        detections): once it is finished with all, ack it and every record after it that
        is done, as far as the first that is not."""
        slot.pending -= 1
        if slot.pending > 0:
            return
        slot.done = True
        queue = slot.queue
        message = slot.event.message
        if self._queues.get((message.topic, message.partition)) is not queue:
            return  # revoked since: the next owner reads it again
        while queue and queue[0].done:
            queue.popleft().event.ack()

    def revoke(self, tps: Iterable[Any]) -> None:
        """Forget the records of revoked partitions without acking them."""
        for tp in tps:
            self._queues.pop((tp.topic, tp.partition), None)

    def pending(self, topic: str, partition: int) -> int:
        """Records delivered and not acked yet (done or not)."""
        return len(self._queues.get((topic, partition), ()))


# -- an opt-in trace of offsets (investigation aid) -------------------------------------------

trace = logging.getLogger("gridwatch.trace")
trace.propagate = False
_tracing = False  # set by _trace_setup: the trace lines are built only then


def _trace_setup(app: Any) -> None:
    """With ``$GRIDWATCH_KAFKA_TRACE`` = a directory: one line per by-cell record read,
    held, acked, and per commit, into ``<dir>/<pid>.trace`` (line-buffered: survives a
    kill -9)."""
    global _tracing
    where = os.environ.get("GRIDWATCH_KAFKA_TRACE")
    if not where or _tracing:
        return
    Path(where).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(where) / f"{os.getpid()}.trace")
    handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
    trace.addHandler(handler)
    trace.setLevel(logging.DEBUG)
    _tracing = True


def _trace_commits(app: Any) -> None:
    if not _tracing:
        return
    consumer = app.consumer
    if getattr(consumer, "_gw_traced", False):
        return
    original = consumer._commit

    async def _commit(offsets: Mapping[Any, int]) -> bool:
        trace.debug("commit %s", " ".join(f"{tp.topic[-7:]}/{tp.partition}={o}"
                                           for tp, o in sorted(offsets.items())))
        return await original(offsets)

    consumer._commit = _commit
    consumer._gw_traced = True


# -- the faust app ------------------------------------------------------------------------------

class Sender(Protocol):
    """``await sender(topic, key, value, partition=None, headers=None)`` publishes one
    record (the faust topics in production; a recorder in tests) and returns its delivery:
    an awaitable that raises when the broker did not take the record (``None``: nothing
    to wait for)."""

    def __call__(self, topic: str, key: bytes | None, value: bytes, *,
                 partition: int | None = None,
                 headers: Mapping[str, bytes] | None = None
                 ) -> Awaitable[Awaitable[Any] | None]:
        ...


_T = TypeVar("_T")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust passes fetch_max_wait_ms=1500 and has no setting for it; the consumer
        # reads it when it starts (building its fetcher), after this
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_wait_s", 1.5) * 1000)
        return consumer


class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = _Consumer


class _App(faust.App):
    """faust's App with a bounded last flush: faust waits for the producer's buffer
    without a limit, so a SIGTERM while the broker is down never finished. The records
    still buffered after ``stop_flush_s`` are dropped — their input offsets were not
    committed (faust commits after flushing), so they are delivered again. Its consumer
    waits ``fetch_wait_s`` at the broker, not faust's fixed 1.5 s."""

    stop_flush_s = 3.0
    fetch_wait_s = 0.1
    spare_hotspot_owner = True  # read by _Assignor

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    async def _producer_flush(self, logger: Any) -> None:
        if not self.should_stop:  # a rebalance: wait as faust does
            await super()._producer_flush(logger)
            return
        try:
            await asyncio.wait_for(super()._producer_flush(logger), self.stop_flush_s)
        except TimeoutError:
            logger.warning("the broker did not take the producer's buffer within %.1f s; "
                           "stopping without it (the uncommitted input is delivered "
                           "again)", self.stop_flush_s)


def spare_hotspot_owner(assignments: Mapping[str, Any]) -> None:
    """Move the by-cell partitions of the member that owns the hot-spot partition to the
    other members (each to the one with the fewest, then by member id), when there are
    others: the hot-spot stage is one process's work over the whole grid — as much as
    the cells stage's over all of it — and the worker that runs it otherwise sets the
    pace of the group. ``assignments``: faust's ``ClientAssignment`` per member, changed
    in place."""
    owners = [m for m, a in assignments.items() if a.actives.get(TOPIC_HOTSPOT)]
    others = sorted(m for m in assignments if m not in owners)
    if not owners or not others:
        return
    load = {m: len(assignments[m].actives.get(TOPIC_BY_CELL, ())) for m in others}
    for owner in owners:
        for partition in sorted(assignments[owner].actives.get(TOPIC_BY_CELL, ())):
            to = min(others, key=lambda m: (load[m], m))
            assignments[to].actives.setdefault(TOPIC_BY_CELL, []).append(partition)
            load[to] += 1
        assignments[owner].actives[TOPIC_BY_CELL] = []
    for member in others:
        assignments[member].actives[TOPIC_BY_CELL] = sorted(
            assignments[member].actives.get(TOPIC_BY_CELL, []))


class _Assignor(PartitionAssignor):  # type: ignore[misc]
    """faust's assignor, then :func:`spare_hotspot_owner` (unless the app's
    ``spare_hotspot_owner`` is off)."""

    def _global_table_standby_assignments(self, assignments: Any,
                                          partitions_by_topic: Mapping[str, int]) -> Any:
        # faust's last step over the members' ClientAssignments before they are encoded
        assignments = super()._global_table_standby_assignments(assignments,
                                                                partitions_by_topic)
        if getattr(self.app, "spare_hotspot_owner", True):
            spare_hotspot_owner(assignments)
        return assignments


class Scaleout:
    """The faust app, its topics and its three agents, over one :class:`CellWorker` and
    one :class:`HotspotStage`.

    Args:
        settings: broker, partitions, web port, batching, group timeouts.
        grid: the cell grid (ingest looks cells up in it).
        worker: the incident stream state and the ticket sink.
        hotspots: the hot-spot stage (runs while this worker owns
            :data:`TOPIC_HOTSPOT`'s one partition); ``None``: one without a state sink
            over the worker's settings and sink.
        sender: publishes one record (:class:`Sender`); defaults to the faust topics.
            Tests pass a recorder, since faust has no in-memory broker.
    """

    retry_delay_s = 0.5  # first wait when the store is unavailable; doubles to 30 s

    def __init__(self, settings: ScaleoutSettings, *, grid: Grid, worker: CellWorker,
                 hotspots: HotspotStage | None = None, sender: Sender | None = None,
                 skew_clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.hotspots = hotspots or HotspotStage(
            stream=worker.settings, policies=worker.policies, hotspot=worker.hotspot,
            grid=grid, sink=worker.sink, lateness_s=settings.lateness_s,
            sources=settings.input_partitions)
        # by-cell and hot-spot records are acked in delivery order (see InOrderAcks)
        self.acks = InOrderAcks()
        # hot-spot records counted but not in a checkpoint yet: acked once one holds them
        self._hot_unsaved: list[_Slot] = []
        self._cell_partition: dict[str, int] = {}  # cell id -> by-cell partition
        # live: the clock detections are checked against (clock_skew); None: no check
        self.skew_clock = skew_clock
        self.grid = grid
        self.worker = worker
        self.counts: Counter[str] = Counter()
        self.app = _App(
            settings.app_id,
            broker=settings.broker_url,
            store="memory://",  # no faust tables: ticket state lives in the SQL store
            autodiscover=False,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=False,  # declare_topics() creates and checks them
            processing_guarantee="at_least_once",
            web_enabled=settings.web_port is not None,
            web_port=settings.web_port or 6066,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.heartbeat_s,
            broker_rebalance_timeout=settings.rebalance_timeout_s,
            broker_commit_interval=1.0,
            consumer_auto_offset_reset="earliest",
            # the cells stage holds acks of detections waiting in its reorder buffer; a
            # rebalance must not wait for them (they are redelivered to the next owner)
            stream_wait_empty=False,
            # batch the producer's records (a produce request carried ~2.5 records)
            producer_linger=0.010,
            producer_max_batch_size=256 * 1024,
            PartitionAssignor=_Assignor,
        )
        self.app.spare_hotspot_owner = settings.spare_hotspot_owner
        self.app.fetch_wait_s = settings.fetch_wait_s
        _trace_setup(self.app)
        self.detections_topic = self._raw_topic(TOPIC_DETECTIONS,
                                                partitions=settings.input_partitions)
        self.by_cell_topic = self._raw_topic(TOPIC_BY_CELL, partitions=settings.partitions)
        self.deadletter_topic = self._raw_topic(TOPIC_DEADLETTER, partitions=1)
        self.hotspot_topic = self._raw_topic(TOPIC_HOTSPOT, partitions=1)
        self._topics = {t.get_topic_name(): t for t in
                        (self.detections_topic, self.by_cell_topic, self.deadletter_topic,
                         self.hotspot_topic)}
        self.send: Sender = sender or self._send_to_kafka
        # ingest's view of the input partitions it owns: event-time high mark, when it
        # last read from each (monotonic), to announce marks and idleness downstream
        self._high: dict[int, float] = {}
        self._last_read: dict[int, float] = {}
        # the input topic: read by our own consumer (one faust event per detection cost
        # ~100 us of CPU), in the consumer group <app id>-input (kafka_input.InputPump)
        self.input = InputPump(
            topic=TOPIC_DETECTIONS, group_id=input_group(settings.app_id),
            legacy_group=settings.app_id, ingest=self.ingest_batch,
            on_revoked=self._input_revoked, batch_max=settings.batch_max,
            wait_s=min(settings.batch_within_s, 0.5), flush_s=settings.stop_flush_s,
            align_s=settings.align_s or None, high_of=self._high.get,
            consumer_options={
                "bootstrap_servers": bootstrap_servers(settings.broker_url),
                "client_id": f"{settings.app_id}-input",
                "fetch_max_wait_ms": int(settings.fetch_wait_s * 1000),
                "session_timeout_ms": int(settings.session_timeout_s * 1000),
                "heartbeat_interval_ms": int(settings.heartbeat_s * 1000),
                "rebalance_timeout_ms": int(settings.rebalance_timeout_s * 1000)})
        self.app.task(self._run_input)
        self.cell_agent = self.app.agent(self.by_cell_topic, name="gridwatch.cells")(
            self._cells)
        self.hotspot_agent = self.app.agent(self.hotspot_topic, name="gridwatch.hotspots")(
            self._hotspots)
        self.app.timer(settings.tick_s, name="gridwatch.marks")(self._announce)
        self.app.timer(settings.metrics_s, name="gridwatch.metrics")(self._log_metrics)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        self.app.stop_flush_s = settings.stop_flush_s

    def _raw_topic(self, name: str, *, partitions: int | None = None) -> Any:
        # bytes in, bytes out: validation is ours (parse_detection), not a codec's
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=partitions)

    async def _send_to_kafka(self, topic: str, key: bytes | None, value: bytes, *,
                             partition: int | None = None,
                             headers: Mapping[str, bytes] | None = None) -> Awaitable[Any]:
        # buffered by the producer; faust flushes it before committing its offsets, the
        # input pump awaits the returned delivery before committing the input's
        return await self._topics[topic].send(key=key, value=value, partition=partition,
                                              headers=dict(headers) if headers else None)

    async def _run_input(self) -> None:
        await self.input.run()

    def _input_revoked(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._high.pop(partition, None)
            self._last_read.pop(partition, None)

    async def _on_revoked(self, _sender: Any, *args: Any, signal: Any = None,
                          **_: Any) -> None:
        revoked = args[0] if args else set()
        if _tracing:
            trace.debug("revoked %s", sorted((tp.topic[-7:], tp.partition) for tp in revoked))
        partitions = [tp.partition for tp in revoked if tp.topic == TOPIC_BY_CELL]
        self.acks.revoke(revoked)
        if partitions:
            log.info("partitions %s of %s revoked; dropping their state", partitions,
                     TOPIC_BY_CELL)
            self.worker.revoke(partitions)
        if any(tp.topic == TOPIC_HOTSPOT for tp in revoked):
            log.info("%s revoked; checkpointing the hot-spot stage", TOPIC_HOTSPOT)
            self._hot_unsaved = []  # the next owner reads them again
            await asyncio.to_thread(self.hotspots.revoke)

    async def _on_assigned(self, _sender: Any, *args: Any, **_: Any) -> None:
        assigned = args[0] if args else set()
        _trace_commits(self.app)
        if _tracing:
            trace.debug("assigned %s", sorted((tp.topic[-7:], tp.partition) for tp in assigned))
        for topic in (TOPIC_BY_CELL, TOPIC_HOTSPOT):
            log.info("assigned %s partitions %s", topic,
                     sorted(tp.partition for tp in assigned if tp.topic == topic))
        # the hot-spot stage's owner, spared the by-cell partitions (so there is another
        # worker), leaves the input to the others too
        topics = {tp.topic for tp in assigned}
        self.input.spare(self.settings.spare_hotspot_owner and TOPIC_HOTSPOT in topics
                         and TOPIC_BY_CELL not in topics)

    async def _on_shutdown(self, _sender: Any, **_: Any) -> None:
        # after faust's consumer stopped, before the producer's last flush
        await self.input.stop()
        try:
            tickets = await asyncio.wait_for(asyncio.to_thread(self.hotspots.shutdown), 5.0)
            log.info("shutdown flush: hot-spot stage %s, %d tickets written",
                     "checkpointed" if self.hotspots.state is not None else "flushed",
                     len(tickets))
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("shutdown flush failed (%s); the next start restores the last "
                      "hourly checkpoints", exc or "timed out")

    async def _read_record(self, event: Any) -> tuple[
            tuple[int, float | None] | None,
            list[tuple[str, Detection, tuple[int | None, int | None] | None]], int]:
        """A by-cell or hot-spot record: (its watermark mark, its detections — (cell,
        detection, (input partition, offset) or None) — and how many were
        dead-lettered). Unreadable watermark headers dead-letter the record, mark and
        all; a marker record carries a mark and no detection; a packed record
        (:data:`HEADER_PACK`) carries many, each refused on its own (dead-lettered with
        the input record it came from)."""
        headers = event.headers
        try:
            mark = read_mark(headers)
        except ValueError as exc:
            await self._dead_letter(event, "bad_headers",
                                    f"unreadable watermark headers: {exc}")
            return None, [], 1
        if headers and HEADER_MARK in headers:
            return mark, [], 0
        if headers and HEADER_PACK in headers:
            return (mark, *await self._unpacked(event))
        keyed = await self._keyed_detection(event)
        return mark, [] if keyed is None else [(*keyed, None)], keyed is None

    async def _unpacked(self, event: Any) -> tuple[
            list[tuple[str, Detection, tuple[int | None, int | None] | None]], int]:
        if (event.headers or {}).get(HEADER_PACK) == PACK_INLINE and event.value is not None:
            try:
                rows = unpack_inline(event.value)
            except ValidationError:
                pass  # a bad detection, or not a pack at all: item by item, below
            else:
                grid = self.grid
                if all(row[0] in grid for row in rows):
                    return [(cell_id, detection, (partition, offset))
                            for cell_id, partition, offset, detection in rows], 0
        try:
            items = unpack(event.value)
        except ValueError as exc:  # also JSONDecodeError
            await self._dead_letter(event, "bad_pack", f"unreadable packed record: {exc}")
            return [], 1
        out: list[tuple[str, Detection, tuple[int | None, int | None] | None]] = []
        rejected = 0
        grid = self.grid
        for item in items:
            origin = (item.partition, item.offset)
            if item.cell_id not in grid:
                await self._dead_letter(event, "unknown_cell",
                                        f"cell {item.cell_id!r} is not a cell of the grid",
                                        item=item)
                rejected += 1
                continue
            try:
                out.append((item.cell_id, parse_detection(item.raw), origin))
            except DetectionRejected as exc:
                await self._dead_letter(event, exc.code.value, exc.reason, item=item)
                rejected += 1
        return out, rejected

    async def _keyed_detection(self, event: Any) -> tuple[str, Detection] | None:
        """The cell (the record key) and the detection of a by-cell or hot-spot record;
        None when either is bad (then dead-lettered with the reason)."""
        cell_id = event.key.decode() if isinstance(event.key, bytes) else event.key
        if not cell_id or cell_id not in self.grid:
            await self._dead_letter(event, "unknown_cell",
                                    f"record key {cell_id!r} is not a cell of the grid")
            return None
        try:
            return cell_id, parse_detection(event.value)
        except DetectionRejected as exc:
            await self._dead_letter(event, exc.code.value, exc.reason)
            return None

    async def _dead_letter(self, event: Any, code: str, reason: str, *,
                           item: Packed | None = None) -> Awaitable[Any] | None:
        """Dead-letter a record, or (``item``) one detection of a packed record: then the
        letter names the input record it entered through, and the packed record as
        ``via``."""
        message = event.message
        self.counts[f"rejected:{code}"] += 1
        if message.topic == TOPIC_BY_CELL:
            self.worker.count_dead_letter(message.partition)
        if item is None:
            log.info("dead letter from %s[%s]@%s: %s", message.topic, message.partition,
                     message.offset, reason)
            body = dead_letter(event.value, code=code, reason=reason, topic=message.topic,
                               partition=message.partition, offset=message.offset)
            key = event.key
        else:
            log.info("dead letter from %s[%s]@%s (in %s[%s]@%s): %s", TOPIC_DETECTIONS,
                     item.partition, item.offset, message.topic, message.partition,
                     message.offset, reason)
            body = dead_letter(item.raw, code=code, reason=reason, topic=TOPIC_DETECTIONS,
                               partition=item.partition, offset=item.offset,
                               via={"topic": message.topic, "partition": message.partition,
                                    "offset": message.offset})
            key = item.cell_id.encode()
        return await self.send(TOPIC_DEADLETTER, key, body)

    # -- ingest -------------------------------------------------------------------------

    def _mark_headers(self, source: int) -> dict[str, bytes]:
        high = self._high.get(source)
        return {HEADER_SOURCE: str(source).encode(),
                HEADER_HIGH: IDLE if high is None else repr(high).encode()}

    def _partition_of(self, cell_id: str) -> int:
        partition = self._cell_partition.get(cell_id)
        if partition is None:
            partition = self._cell_partition[cell_id] = partition_for(
                cell_id, self.settings.partitions)
        return partition

    async def ingest_batch(self, events: Sequence[Any],
                           deliveries: list[Awaitable[Any]] | None = None
                           ) -> list[dict[str, Any]]:
        """Validate and route a batch of input records (:class:`InputEvent`); send the
        routed detections as ONE packed record per (input partition, by-cell partition)
        — explicit partition, keyed by the partition number, the input partition's high
        mark in its headers — and dead-letter the refused ones, each naming its record.
        One result per record, in order; each send's delivery is appended to
        ``deliveries`` (the input pump commits the batch once all are confirmed)."""
        sent: list[Awaitable[Any]] = [] if deliveries is None else deliveries
        clock = self.skew_clock
        routed_all = route_many([e.value for e in events], self.grid,
                                limits=self.worker.settings,
                                now=None if clock is None else clock())
        now = asyncio.get_running_loop().time()
        groups: dict[tuple[int, int], list[Packed]] = {}
        hot: dict[int, list[Packed]] = {}  # per input partition: hot-spot kinds
        is_hot = self.worker.is_hotspot_kind
        results: list[dict[str, Any]] = []
        high = self._high
        before = dict(high)  # the marks already announced
        for event, routed in zip(events, routed_all, strict=True):
            message = event.message
            source = message.partition
            self._last_read[source] = now
            self.counts[routed.outcome] += 1
            if routed.detection is not None and routed.code is None:
                # every valid detection moves its partition's event time on, forwarded
                # or not (out of area): the cells stage waits for no partition longer
                # than it must
                ts = routed.detection.observed_at.timestamp()
                if ts > high.get(source, float("-inf")):
                    high[source] = ts
            if routed.code is not None:
                delivery = await self._dead_letter(event, routed.code, routed.reason or "")
                if delivery is not None:
                    sent.append(delivery)
            elif routed.cell_id is not None:
                # all of a cell's detections on one partition (murmur2 of the cell id,
                # as the key partitioner would), so one worker holds all of its state
                raw = event.value
                text = (raw.decode("utf-8", errors="replace") if isinstance(raw, bytes)
                        else raw).strip()
                packed = Packed(routed.cell_id, source, message.offset, text)
                if routed.detection is not None and is_hot(routed.detection.kind):
                    # straight to the one hot-spot stage: the cells stage would only
                    # order and forward it (a hop that cost more than the stage itself)
                    hot.setdefault(source, []).append(packed)
                else:
                    groups.setdefault((source, self._partition_of(routed.cell_id)),
                                      []).append(packed)
                if _tracing and routed.detection is not None:
                    trace.debug("ingest in=%s@%s eid=%s cell=%s", source, message.offset,
                                routed.detection.event_id, routed.cell_id)
            results.append({"outcome": routed.outcome, "cell_id": routed.cell_id,
                            "code": routed.code, "reason": routed.reason})
        for (source, partition), items in groups.items():
            for value, headers in self._stamped(source, packs(items), b"1", before):
                delivery = await self.send(TOPIC_BY_CELL, str(partition).encode(), value,
                                           partition=partition, headers=headers)
                if delivery is not None:
                    sent.append(delivery)
        for source, items in hot.items():
            # each raw detection is one JSON object: it was just validated as one
            for value, headers in self._stamped(source, packs(items, inline=True),
                                                PACK_INLINE, before):
                delivery = await self.send(TOPIC_HOTSPOT, str(source).encode(), value,
                                           partition=0, headers=headers)
                if delivery is not None:
                    sent.append(delivery)
            self.counts["hotspot"] += len(items)
        return results

    def _stamped(self, source: int, values: Iterator[bytes], form: bytes,
                 before: Mapping[int, float]) -> Iterator[tuple[bytes, dict[str, bytes]]]:
        """The packed records of one input partition's detections for one topic
        partition, with their watermark headers: the last carries the mark after the
        whole batch (every detection of the input partition for that topic partition up
        to it is in this record or an earlier one); one split off before it carries the
        mark before the batch, since detections up to the new mark follow it."""
        after = {**self._mark_headers(source), HEADER_PACK: form}
        earlier = {**after, HEADER_HIGH: repr(before.get(source, float("-inf"))).encode()}
        pending: bytes | None = None
        for value in values:
            if pending is not None:
                yield pending, earlier
            pending = value
        if pending is not None:
            yield pending, after

    def owned_input_partitions(self) -> list[int]:
        return sorted(self.input.assigned)

    async def _announce(self) -> None:
        """Tell every by-cell partition how far each owned input partition has got (or
        that it is idle), so a partition without records still moves the watermark."""
        await self.announce(self.owned_input_partitions())
        await self.checkpoint_hotspots()

    async def announce(self, sources: Iterable[int]) -> None:
        now = asyncio.get_running_loop().time()
        for source in sources:
            last = self._last_read.setdefault(source, now)
            headers = self._mark_headers(source)
            # a partition the pump holds back (aligning a backlog) has records to come
            # behind its mark: never idle, or they would arrive behind the watermark
            if now - last >= self.settings.idle_s and not self.input.held_back(source):
                headers[HEADER_HIGH] = IDLE
            headers[HEADER_MARK] = b"1"
            for partition in range(self.settings.partitions):
                await self.send(TOPIC_BY_CELL, None, b"", partition=partition,
                                headers=headers)
            await self.send(TOPIC_HOTSPOT, None, b"", partition=0, headers=headers)

    def metrics(self) -> dict[str, Any]:
        """What the worker has done: ingest outcomes; per owned by-cell partition
        processed, duplicates, late, dead letters, forwarded (to the hot-spot stage),
        held (waiting for the watermark), the watermark, and lag (records not yet read;
        ``None`` when unknown); the hot-spot stage's counts (:meth:`HotspotStage.metrics`)."""
        parts = self.worker.metrics()
        for partition, row in parts.items():
            row["lag"] = self._lag(partition)
        return {"ingest": dict(sorted(self.counts.items())),
                "input": {str(p): row for p, row in self.input.lag().items()},
                "partitions": {str(p): row for p, row in parts.items()},
                "hotspots": self.hotspots.metrics()}

    def _lag(self, partition: int) -> int | None:
        from faust.types import TP

        try:
            tp = TP(TOPIC_BY_CELL, partition)
            consumer = self.app.consumer
            high = consumer.highwater(tp)
            read = getattr(consumer, "_read_offset", {}).get(tp)  # faust internals: no API
            # (Tansu's high water can under-report batched records: read it as a hint)
            return None if high is None or read is None else max(0, high - read - 1)
        except Exception:  # noqa: BLE001 - no consumer (tests, shutdown): unknown
            return None

    async def _log_metrics(self) -> None:
        log.info("metrics %s", json.dumps(self.metrics(), sort_keys=True))

    # -- cells ----------------------------------------------------------------------------

    async def _cells(self, stream: Any) -> AsyncIterator[dict[str, Any]]:
        async for events in stream.take_events(min(self.settings.cells_batch_max,
                                                   self.settings.batch_max),
                                               self.settings.batch_within_s):
            yield await self.cells_batch(events)

    async def cells_batch(self, events: Sequence[Any]) -> dict[str, Any]:
        """One batch of by-cell records: hold their detections in the reorder buffers,
        release what the watermark passed, process and write it, forward hot-spot kinds,
        then ack what is finished (a packed record once all its detections are)."""
        worker = self.worker
        touched: set[int] = set()
        rejected = 0

        # all at once, before any await: a revoke in between drops them together
        slots = [self.acks.take(event) for event in events]
        for event, slot in zip(events, slots, strict=True):
            partition = event.message.partition
            mark, keyed, bad = await self._read_record(event)
            rejected += bad
            if mark is not None:
                worker.mark(partition, *mark)
                touched.add(partition)
            if _tracing:
                trace.debug("cell-read p=%s@%s %s mark=%s", partition, event.message.offset,
                            " ".join(f"eid={d.event_id}" for _, d, _ in keyed) or "marker",
                            mark)
            # held: not acked (so not committed) until released and written, nor is any
            # record after it on the partition (InOrderAcks); a packed record when all
            # its detections are
            self.acks.expect(slot, len(keyed))
            for cell_id, detection, origin in keyed:
                worker.hold(partition, cell_id, detection, slot, direct=mark is None,
                            origin=origin)
                touched.add(partition)
        released = {p: worker.release(p) for p in sorted(touched)}
        outputs: list[StreamOutput] = []
        for partition, held in released.items():
            if held:
                outputs += await self._until_stored(worker.process, partition, held)
        tickets = await self._until_stored(worker.apply, outputs)
        await self._forward_hotspots()
        processed = 0
        for held in released.values():
            for item in held:
                processed += 1
                if item.token is not None:
                    if _tracing:
                        trace.debug("cell-ack p=%s@%s eid=%s", item.token.event.message.partition,
                                    item.token.event.message.offset, item.detection.event_id)
                    self.acks.done(item.token)
        return {"outcome": "batch", "processed": processed, "rejected": rejected,
                "held": worker.held(), "tickets": tickets}

    async def _forward_hotspots(self) -> None:
        """Publish the hot-spot-kind detections the batch released to the hot-spot
        stage: ONE packed record per by-cell partition, without watermark headers.
        Ingest sends hot-spot kinds to the stage itself (with the input partitions'
        marks), so these are only what a producer wrote to the by-cell topic directly
        (or a worker of an earlier version routed there); the stage holds them until the
        marks it has from ingest pass them, or, with none, until a later one does."""
        groups: dict[int, list[Packed]] = {}
        for partition, held in self.worker.take_forwarded():
            source, offset = held.origin or (None, None)
            groups.setdefault(partition, []).append(
                Packed(held.cell_id, source, offset, held.detection.to_json()))
        for partition, items in groups.items():
            for value in packs(items, inline=True):
                await self.send(TOPIC_HOTSPOT, str(partition).encode(), value,
                                partition=0, headers={HEADER_PACK: PACK_INLINE})

    # -- hot spots ------------------------------------------------------------------------

    async def _hotspots(self, stream: Any) -> AsyncIterator[dict[str, Any]]:
        # faust's take_events waits the whole window unless batch_max records came: the
        # hot-spot records are packed (hundreds of detections each) and never fill it, so
        # with batch_within_s the stage sat idle ~0.2 s after every batch (a third of
        # its time while catching up); what came meanwhile is taken after a short wait
        async for events in stream.take_events(self.settings.batch_max,
                                               min(self.settings.batch_within_s,
                                                   HOT_BATCH_WITHIN_S)):
            yield await self.hotspots_batch(events)

    async def hotspots_batch(self, events: Sequence[Any]) -> dict[str, Any]:
        """One batch of hot-spot records (packed or single): hold, release by the
        by-cell partitions' watermark, count, write, ack what is finished."""
        stage = self.hotspots
        rejected = 0
        slots = [self.acks.take(event) for event in events]  # before any await
        for event, slot in zip(events, slots, strict=True):
            mark, keyed, bad = await self._read_record(event)
            rejected += bad
            if mark is not None:
                stage.mark(*mark)
            # acked when released and written (and all before it: InOrderAcks)
            self.acks.expect(slot, len(keyed))
            stage.hold_many(keyed, slot, direct=mark is None)
        released = stage.release()
        outputs = await self._until_stored(stage.process, released) if released else []
        tickets = await self._until_stored(stage.apply, outputs)
        self._hot_unsaved += [item.token for item in released if item.token is not None]
        if stage.state is None or stage.unsaved == 0:
            self._ack_hot_saved()
        return {"outcome": "hotspots", "processed": len(released), "rejected": rejected,
                "held": stage.held(), "tickets": tickets}

    def _ack_hot_saved(self) -> None:
        tokens, self._hot_unsaved = self._hot_unsaved, []
        for token in tokens:
            self.acks.done(token)

    async def checkpoint_hotspots(self) -> None:
        """Checkpoint the hot-spot stage if one is due (the marks timer calls it every
        ``tick_s``), then acknowledge what the checkpoint holds."""
        if not self._hot_unsaved:
            return
        saved: bool = await self._until_stored(self.hotspots.maybe_checkpoint)
        if saved:
            self._ack_hot_saved()

    async def _until_stored(self, work: Callable[..., _T], *args: Any) -> _T:
        # the store is down: retry (seeding reads only; the desk path is idempotent)
        # instead of moving on, so no offset is committed past a detection that never
        # reached a ticket. In a worker thread: the store's I/O is blocking.
        for delay in Backoff(self.retry_delay_s, STORE_RETRY_MAX_S).delays():
            try:
                return await asyncio.to_thread(work, *args)
            except StoreUnavailable as exc:
                log.warning("ticket store unavailable (%s); retrying in %.1fs",
                            exc.__cause__ or exc, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: Backoff.delays() never ends")
