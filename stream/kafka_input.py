"""The input topic read straight from aiokafka, not through a faust agent.

faust delivers each record through its conductor, a channel queue and the agent's stream
(~100 µs of a worker's CPU per record, measured in ``benchmarks/scaleout_bench.py``), and
the input topic has one record per detection. :class:`InputPump` reads it with
``getmany`` in batches instead, hands each batch to ingest, and commits a batch's offsets
only after the broker acknowledged every record ingest sent for it:

* **a consumer group of its own**, ``<app id>-input`` (:func:`input_group`): faust's group
  keeps the by-cell and hot-spot topics. The first time the new group owns a partition
  with no commit of its own, it starts where faust's group (``<app id>``, versions before
  this one) had committed, so an upgrade does not re-read the topic;
* **commits in order**: a batch whose records were not all delivered stops every later
  commit; the pump reads again from the last commit (a new *generation*: whatever was
  read before the failure is never committed);
* **a revoke waits** (at most ``stop_flush_s``) for the commits of the batches already
  ingested, so the next owner does not read them again; batches it could not commit are
  read again by the next owner (duplicates the event-id filter and the idempotent desk
  drop);
* **a backlog is read in event-time step** (``align_s``): while catching up, a partition
  more than ``align_s`` of event time (or two of its batches, where those span more)
  ahead of the slowest owned partition with records left is paused until that one
  catches up. Downstream stages release a detection only
  once every input partition has passed its time, so a backlog read one partition after
  another was held in their reorder buffers whole and processed in one burst at the end
  (and a hot-spot stage behind them sat idle until then).

Imported by :mod:`stream.faust_app` only (it imports aiokafka, which faust brings).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError

from stream.retry import Backoff

log = logging.getLogger(__name__)
trace = logging.getLogger("gridwatch.trace")

MAX_IN_FLIGHT = 4  # batches ingested whose deliveries are not confirmed yet


def input_group(app_id: str) -> str:
    """The consumer group that reads the input topic: ``<app id>-input``."""
    return f"{app_id}-input"


SPARED = b"spared"  # a member's user data: give it no partition while others can read


def sparing_assignor(spared: Callable[[], bool]) -> type[AbstractPartitionAssignor]:
    """Round robin, except that members whose ``spared()`` was true when they joined get
    no partition while the group has a member that is not (the worker that runs the
    hot-spot stage: see :func:`stream.faust_app.spare_hotspot_owner`). Offered before
    plain round robin, which a group with an older member falls back to."""

    class SparingAssignor(RoundRobinPartitionAssignor):  # type: ignore[misc]
        name = "gridwatch-sparing"
        version = 0

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, sorted(topics),
                                                  SPARED if spared() else b"")

        @classmethod
        def assign(cls, cluster: Any, members: Mapping[str, Any]) -> dict[str, Any]:
            busy = {m: meta for m, meta in members.items() if meta.user_data != SPARED}
            if not busy or len(busy) == len(members):
                return super().assign(cluster, members)  # type: ignore[no-any-return]
            out: dict[str, Any] = super().assign(cluster, busy)
            for member in members:
                if member not in busy:
                    out[member] = ConsumerProtocolMemberAssignment(cls.version, [], b"")
            return out

    return SparingAssignor


@dataclass(frozen=True, slots=True)
class InputEvent:
    """One input record, shaped as ingest reads a faust event (``.key``, ``.value``,
    ``.headers``, ``.message.topic/.partition/.offset``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def message(self) -> InputEvent:
        return self


Ingest = Callable[[Sequence[InputEvent], list[Awaitable[Any]]], Awaitable[Any]]


@dataclass
class _Batch:
    generation: int
    offsets: dict[TopicPartition, int]  # next offset to read, per partition
    deliveries: list[Awaitable[Any]]


class InputPump(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reads ``topic`` in batches for ``ingest`` and commits what was delivered.

    Args:
        topic: the input topic.
        group_id: this pump's consumer group (:func:`input_group`).
        legacy_group: where to start a partition this group never committed (faust's
            group of earlier versions); ``None``: the topic's beginning.
        ingest: ``await ingest(events, deliveries)`` sends what the batch produces and
            appends each send's delivery (an awaitable raising when not delivered).
        on_revoked: called with the input partitions this worker no longer owns.
        consumer_factory: builds the consumer (tests pass a fake); the default is
            :class:`aiokafka.AIOKafkaConsumer` with ``consumer_options``.
        batch_max: records per batch at most.
        wait_s: how long one read waits for records.
        flush_s: how long a revoke or a stop waits for outstanding deliveries.
        align_s: event-time seconds a partition may run ahead of the slowest one with
            records left, while the slowest is more than that behind the wall clock (a
            backlog); ``None``: no alignment.
        high_of: a partition's event-time high mark so far (ingest's; ``None`` before
            any valid detection), for ``align_s``.
    """

    retry = Backoff(0.5, 30.0)

    def __init__(self, *, topic: str, group_id: str, legacy_group: str | None,
                 ingest: Ingest, on_revoked: Callable[[set[int]], None],
                 consumer_factory: Callable[[], Any] | None = None,
                 consumer_options: Mapping[str, Any] | None = None, batch_max: int = 2000,
                 wait_s: float = 0.2, flush_s: float = 3.0, align_s: float | None = None,
                 high_of: Callable[[int], float | None] | None = None) -> None:
        self.topic = topic
        self.group_id = group_id
        self.legacy_group = legacy_group
        self._ingest = ingest
        self._on_revoked = on_revoked
        self._options = dict(consumer_options or {})
        self._factory = consumer_factory or self._aiokafka
        self.batch_max = batch_max
        self.wait_s = wait_s
        self.flush_s = flush_s
        self.align_s = align_s
        self._high_of = high_of
        self.spared = False  # see spare()
        self._assigned_at: dict[TopicPartition, float] = {}  # monotonic
        # per partition: the event time its latest batch spanned (see _align)
        self._span: dict[int, float] = {}
        self.consumer: Any = None
        self.assigned: frozenset[int] = frozenset()
        self.read: dict[int, int] = {}  # partition -> last offset read
        self.committed: dict[int, int | None] = {}  # partition -> committed offset
        self.counts = {"batches": 0, "records": 0, "commits": 0, "rewinds": 0,
                       "aligned": 0}  # aligned: pauses of a partition ahead of the others
        self._generation = 0
        self._rewind = False
        self._seeks: dict[TopicPartition, int] = {}  # applied before the next read
        self._ready: set[TopicPartition] = set()  # assigned, and where to start is known
        self._stopping = False
        self._queue: asyncio.Queue[_Batch] | None = None
        self._task: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None

    def _aiokafka(self) -> Any:
        return AIOKafkaConsumer(
            group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            partition_assignment_strategy=(sparing_assignor(lambda: self.spared),
                                           RoundRobinPartitionAssignor),
            **self._options)

    def spare(self, spared: bool) -> None:
        """Ask for no input partition while another member can read them (``spared``),
        or for a share again; rejoins the group when that changes."""
        if spared == self.spared:
            return
        self.spared = spared
        # a spared member owns partitions only when no other member could take them, and
        # an unspared one that owns some got them since: a rejoin changes nothing then
        # (a survivor of a kill -9 already got every input partition from its group)
        if bool(self.assigned) != spared:
            return
        log.info("%s the input partitions (rejoining %s)",
                 "leaving the other workers" if spared else "taking a share of",
                 self.group_id)
        coordinator = getattr(self.consumer, "_coordinator", None)  # aiokafka: no API
        if coordinator is not None and hasattr(coordinator, "request_rejoin"):
            coordinator.request_rejoin()

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Join the group and pump until :meth:`stop`."""
        self._queue = asyncio.Queue(MAX_IN_FLIGHT)
        self.consumer = self._factory()
        self.consumer.subscribe([self.topic], listener=self)
        delays = self.retry.delays()
        while not self._stopping:
            try:
                await self.consumer.start()
                break
            except KafkaError as exc:
                delay = next(delays)
                log.warning("the input consumer cannot reach the broker (%s); retrying in "
                            "%.1f s", exc, delay)
                await asyncio.sleep(delay)
        self._committer = asyncio.create_task(self._commit_loop())
        self._task = asyncio.current_task()
        try:
            while not self._stopping:
                await self._pump_once()
        finally:
            self._task = None

    async def _pump_once(self) -> None:
        if self._rewind:
            self._rewind = False
            await self._seek_committed()
        self._apply_seeks()
        generation = self._generation
        batch = await self.consumer.getmany(timeout_ms=int(self.wait_s * 1000),
                                            max_records=self.batch_max)
        # aiokafka fetches a new partition while our listener still looks up where it
        # starts: what it read before we were ready is read again from there
        early = [tp for tp, records in batch.items() if records and tp not in self._ready]
        for tp in early:
            self._seeks.setdefault(tp, batch.pop(tp)[0].offset)
        if self._seeks:
            batch = {tp: records for tp, records in batch.items() if tp not in self._seeks}
        events = [InputEvent(r.topic, r.partition, r.offset, r.key, r.value,
                             dict(r.headers or ()))
                  for records in batch.values() for r in records]
        if not events or self._stopping:
            return  # a stop: what was read and not ingested is read again next start
        deliveries: list[Awaitable[Any]] = []
        high_of = self._high_of
        before = {tp.partition: high_of(tp.partition) for tp in batch} if high_of else {}
        await self._ingest(events, deliveries)
        if high_of is not None:  # the event time each partition's batch spanned
            for partition, low in before.items():
                high = high_of(partition)
                if low is not None and high is not None and high > low:
                    self._span[partition] = high - low
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        for tp, records in batch.items():
            if records:
                self.read[tp.partition] = records[-1].offset
        self.counts["batches"] += 1
        self.counts["records"] += len(events)
        assert self._queue is not None
        await self._queue.put(_Batch(generation, offsets, deliveries))
        self._align()

    # -- event-time alignment -------------------------------------------------------------

    # a partition not read yet holds the others back this long after it was assigned (its
    # first records set its mark); after that it no longer counts (empty, or unreadable)
    align_wait_s = 2.0

    def _pending(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` has records this pump has not read (unknown: yes)."""
        try:
            high = self.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet
            high = None
        read = self.read.get(tp.partition)
        return high is None or (read is None and high > 0) or \
            (read is not None and read + 1 < high)

    def _align(self) -> None:
        """Pause the owned partitions more than the window ahead of the slowest one with
        records left, while that one is more than ``align_s`` behind the wall clock;
        resume the rest. The window is ``align_s``, or twice the event time a partition's
        latest batch spanned where that is more (a sparse backlog: one batch of a
        partition can span a day, and a window under it paused every partition after
        every batch, dropping what aiokafka had fetched for it: the backlog was read in
        lock-step with a fetch round trip a batch), so a partition runs at most about
        two batches ahead. The slowest is never paused, so reading always goes on; a
        partition not read yet counts as the slowest for ``align_wait_s``."""
        if self.align_s is None or self._high_of is None:
            return
        now = time.monotonic()
        floor = math.inf
        ahead: dict[TopicPartition, float] = {}
        for tp in self.consumer.assignment():
            if not self._pending(tp):
                continue
            high = self._high_of(tp.partition)
            if high is None:
                if now - self._assigned_at.get(tp, now) < self.align_wait_s:
                    floor = -math.inf
                continue
            ahead[tp] = high
            floor = min(floor, high)
        catching_up = floor < time.time() - self.align_s
        window = max([self.align_s, *(2 * self._span.get(tp.partition, 0.0)
                                      for tp in ahead)])
        pause = {tp for tp, high in ahead.items()
                 if catching_up and high > floor + window}
        paused = set(self.consumer.paused())
        if pause - paused:
            self.consumer.pause(*(pause - paused))
            self.counts["aligned"] += len(pause - paused)
        if paused - pause:
            self.consumer.resume(*(paused - pause))

    def _apply_seeks(self) -> None:
        seeks, self._seeks = self._seeks, {}
        owned = self.consumer.assignment()
        for tp, offset in seeks.items():
            if tp in owned:
                self.consumer.seek(tp, offset)

    async def stop(self) -> None:
        """Stop reading, commit what was delivered (waiting ``flush_s`` at most), leave
        the group."""
        self._stopping = True
        if self._task is not None and self._task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(self._wait_pump()), self.wait_s + 5)
            except TimeoutError:
                pass
        await self._flush()
        if self._committer is not None:
            self._committer.cancel()
        if self.consumer is not None:
            try:
                await self.consumer.stop()
            except KafkaError as exc:  # the broker is gone: the group times us out
                log.warning("the input consumer did not leave its group cleanly: %s", exc)

    async def _wait_pump(self) -> None:
        while self._task is not None:
            await asyncio.sleep(0.01)

    async def _flush(self) -> None:
        if self._queue is None or self._committer is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), self.flush_s)
        except TimeoutError:
            log.warning("input offsets of %d batches not committed within %.1f s (the "
                        "broker did not confirm their records); they are read again",
                        self._queue.qsize(), self.flush_s)

    # -- commits --------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batches = [await queue.get()]
            while not queue.empty():
                batches.append(queue.get_nowait())
            try:
                await self._commit(batches)
            finally:
                for _ in batches:
                    queue.task_done()

    async def _commit(self, batches: list[_Batch]) -> None:
        """Commit the batches' offsets in order, each once all its records are
        delivered; what is already delivered is committed before waiting for more."""
        offsets: dict[TopicPartition, int] = {}
        for batch in batches:
            if batch.generation != self._generation:
                continue  # read before a failed delivery: read again, never committed
            if offsets and not all(asyncio.isfuture(d) and d.done()
                                   for d in batch.deliveries):
                await self._commit_offsets(offsets)
                offsets = {}
            try:
                for delivery in batch.deliveries:
                    await delivery
            except Exception as exc:  # noqa: BLE001 - any failed send: read it again
                self._generation += 1
                self._rewind = True
                self.counts["rewinds"] += 1
                log.warning("a record sent for input %s was not delivered (%s); reading "
                            "the input again from the last commit", ", ".join(
                                f"{tp.partition}@<{o}" for tp, o in sorted(
                                    batch.offsets.items())), exc)
                break
            offsets.update(batch.offsets)
        await self._commit_offsets(offsets)

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        owned = self.consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # rebalancing: the next owner reads them again
            log.warning("input offsets not committed (%s); they are read again", exc)
            return
        self.counts["commits"] += 1
        for tp, offset in offsets.items():
            self.committed[tp.partition] = offset
        trace.debug("input-commit %s", " ".join(
            f"in/{tp.partition}={o}" for tp, o in sorted(offsets.items())))

    async def _seek_committed(self) -> None:
        for tp in self.consumer.assignment():
            offset = self.committed.get(tp.partition)
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
            self.read.pop(tp.partition, None)

    # -- the group ------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        if not revoked:
            return
        await self._flush()  # commit what was ingested while it is still ours
        partitions = {tp.partition for tp in revoked}
        self._ready -= revoked
        for partition in partitions:
            self.read.pop(partition, None)
            self.committed.pop(partition, None)
            self._span.pop(partition, None)
        self.assigned = self.assigned - partitions
        trace.debug("input-revoked %s", sorted(partitions))
        self._on_revoked(partitions)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        offsets = {tp: await self.consumer.committed(tp) for tp in assigned}
        never = [tp for tp, offset in offsets.items() if offset is None]
        if never and self.legacy_group:
            for tp, offset in (await self._legacy_offsets(never)).items():
                # seeking here is undone: aiokafka resets a partition without a commit
                # (auto_offset_reset) after the listener; the pump seeks before it reads
                self._seeks[tp] = offset
                offsets[tp] = offset
                log.info("%s[%d]: no commit of %s yet; starting at %d, where %s had "
                         "committed", self.topic, tp.partition, self.group_id, offset,
                         self.legacy_group)
        for tp, offset in offsets.items():
            self.committed[tp.partition] = offset
        self._ready |= assigned
        now = time.monotonic()
        self._assigned_at = {tp: self._assigned_at.get(tp, now)
                             for tp in self.consumer.assignment()}
        self.assigned = frozenset(tp.partition for tp in self.consumer.assignment())
        log.info("assigned %s partitions %s", self.topic, sorted(self.assigned))
        trace.debug("input-assigned %s", sorted(self.assigned))

    async def _legacy_offsets(self, tps: Iterable[TopicPartition]
                              ) -> dict[TopicPartition, int]:
        # a consumer of the old group, assigned (not subscribed: it never joins), reads
        # its commits through the group coordinator (Tansu 0.6 answers the admin
        # client's requests in a form aiokafka cannot parse)
        options = {k: v for k, v in self._options.items()
                   if k in ("bootstrap_servers", "request_timeout_ms")}
        old = AIOKafkaConsumer(group_id=self.legacy_group, enable_auto_commit=False,
                               **options)
        old.assign(list(tps))
        found: dict[TopicPartition, int] = {}
        try:
            await asyncio.wait_for(old.start(), 10)
            for tp in tps:
                offset = await asyncio.wait_for(old.committed(tp), 10)
                if offset is not None and offset >= 0:
                    found[tp] = offset
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("could not read %s's committed offsets (%s); partitions without "
                        "a commit of %s start at the beginning", self.legacy_group, exc,
                        self.group_id)
        finally:
            await old.stop()
        return found

    def held_back(self, partition: int) -> bool:
        """Whether the pump has paused ``partition`` while aligning a backlog (it has
        records left to read)."""
        if self.consumer is None:
            return False
        return TopicPartition(self.topic, partition) in self.consumer.paused()

    def lag(self) -> dict[int, dict[str, int | None]]:
        """Per owned input partition: last offset read, committed offset, records not
        read yet (from the consumer's high water; ``None`` when unknown)."""
        out: dict[int, dict[str, int | None]] = {}
        for partition in sorted(self.assigned):
            read = self.read.get(partition)
            high = None
            try:
                high = self.consumer.highwater(TopicPartition(self.topic, partition))
            except Exception:  # noqa: BLE001 - not fetched yet, stopping
                high = None
            lag = None if high is None or read is None else max(0, high - read - 1)
            out[partition] = {"read": read, "committed": self.committed.get(partition),
                              "lag": lag}
        return out
