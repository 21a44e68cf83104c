"""The input pump (``stream.kafka_input.InputPump``) over a fake consumer: what it commits,
when, and what it reads again after a record was not delivered. The real consumer on a
real broker is ``tests/stream/test_scaleout_tansu.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from stream.faust_app import TOPIC_DETECTIONS, ScaleoutSettings, declare_topics
from stream.kafka_input import InputEvent, InputPump, input_group
from tests.support.tansu import TansuProcess

TOPIC = "in"


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[()] = ()


class FakeConsumer:
    """Two partitions of ``TOPIC`` with ``records`` records each; seek moves the read
    position, commit records what was committed."""

    def __init__(self, records: int, committed: dict[int, int] | None = None) -> None:
        self.records = records
        self.position = {0: 0, 1: 0}
        self.commits: list[dict[int, int]] = []
        self.seeks: list[tuple[int, int]] = []
        self.stored = dict(committed or {})
        self.listener: Any = None
        self.tps = {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}
        self.stopped: set[TopicPartition] = set()  # paused

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def start(self) -> None:
        await self.listener.on_partitions_assigned(self.tps)
        for tp in self.tps:
            self.position[tp.partition] = self.stored.get(tp.partition, 0)

    async def stop(self) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.stored.get(tp.partition)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition,
                                                                       list[Rec]]:
        out: dict[TopicPartition, list[Rec]] = {}
        for tp in sorted(self.tps - self.stopped, key=lambda t: t.partition):
            start = self.position[tp.partition]
            end = min(self.records, start + max_records // 2)
            if end > start:
                out[tp] = [Rec(TOPIC, tp.partition, o, None, b"%d" % o)
                           for o in range(start, end)]
                self.position[tp.partition] = end
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append({tp.partition: o for tp, o in offsets.items()})
        self.stored.update({tp.partition: o for tp, o in offsets.items()})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp.partition, offset))
        self.position[tp.partition] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seek(tp, 0)

    def highwater(self, tp: TopicPartition) -> int:
        return self.records

    def paused(self) -> set[TopicPartition]:
        return set(self.stopped)

    def pause(self, *tps: TopicPartition) -> None:
        self.stopped |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.stopped -= set(tps)


def make_pump(consumer: FakeConsumer, ingest: Any, revoked: list[set[int]] | None = None
              ) -> InputPump:
    return InputPump(topic=TOPIC, group_id=input_group("app"), legacy_group=None,
                     ingest=ingest, on_revoked=(revoked if revoked is not None else []).append,
                     consumer_factory=lambda: consumer, batch_max=4, wait_s=0.01,
                     flush_s=2.0)


async def run_until(pump: InputPump, done: Any, timeout_s: float = 5.0) -> None:
    task = asyncio.create_task(pump.run())
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "the pump did not get there"
        await asyncio.sleep(0.01)
    await pump.stop()
    await asyncio.wait_for(task, 5)


def test_a_batch_is_committed_only_once_its_records_are_delivered() -> None:
    consumer = FakeConsumer(records=6)
    seen: list[tuple[int, int]] = []
    gates: list[asyncio.Future[None]] = []

    async def ingest(events: Sequence[InputEvent], deliveries: list[Awaitable[Any]]) -> None:
        seen.extend((e.message.partition, e.message.offset) for e in events)
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gates.append(gate)
        deliveries.append(gate)

    async def go() -> None:
        pump = make_pump(consumer, ingest)
        task = asyncio.create_task(pump.run())
        while len(gates) < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert consumer.commits == []  # nothing delivered yet: nothing committed
        gates[0].set_result(None)
        await asyncio.sleep(0.05)
        assert consumer.stored == {0: 2, 1: 2}
        for gate in gates[1:]:
            gate.set_result(None)
        await asyncio.sleep(0.05)
        await pump.stop()
        await asyncio.wait_for(task, 5)
        assert pump.counts["records"] == 12
        assert pump.lag() == {0: {"read": 5, "committed": 6, "lag": 0},
                              1: {"read": 5, "committed": 6, "lag": 0}}

    asyncio.run(go())
    assert sorted(seen) == [(p, o) for p in (0, 1) for o in range(6)]
    assert consumer.stored == {0: 6, 1: 6}


def test_after_a_failed_delivery_nothing_later_is_committed_and_the_input_is_read_again(
        ) -> None:
    consumer = FakeConsumer(records=6)
    # each batch as ingest saw it, with how many commits had happened by then
    batches: list[tuple[list[tuple[int, int]], int]] = []

    async def ingest(events: Sequence[InputEvent], deliveries: list[Awaitable[Any]]) -> None:
        batches.append(([(e.partition, e.offset) for e in events], len(consumer.commits)))
        if len(batches) == 3:  # queued while the committer waits for the second batch
            await asyncio.sleep(0.03)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(batches) == 2:  # the second batch's pack never reached the broker; the
            # producer says so only after the third batch was read and delivered
            asyncio.get_running_loop().call_later(
                0.1, future.set_exception, KafkaTimeoutError("expired"))
        else:
            future.set_result(None)
        deliveries.append(future)

    async def go() -> InputPump:
        pump = make_pump(consumer, ingest)
        await run_until(pump, lambda: consumer.stored == {0: 6, 1: 6} and
                        pump.counts["rewinds"] == 1)
        return pump

    pump = asyncio.run(go())
    failed = batches[1][0]
    assert failed == [(0, 2), (0, 3), (1, 2), (1, 3)]
    # read again from the last commit (2, after the first batch)
    assert {(0, 2), (1, 2)} <= set(consumer.seeks)
    reread_at = next(commits for events, commits in batches[2:] if events == failed)
    # no commit went past the failed records before they were read again
    past = [i for i, c in enumerate(consumer.commits) if max(c.values()) > 2]
    assert past and past[0] >= reread_at
    pairs = zip(consumer.commits, consumer.commits[1:], strict=False)
    assert all(a[p] <= b.get(p, a[p]) for a, b in pairs for p in a)  # never backwards
    assert pump.counts["rewinds"] == 1


def test_a_revoke_commits_what_was_delivered_then_hands_the_partitions_back() -> None:
    consumer = FakeConsumer(records=4)
    revoked: list[set[int]] = []

    async def ingest(events: Sequence[InputEvent], deliveries: list[Awaitable[Any]]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, future.set_result, None)
        deliveries.append(future)

    async def go() -> None:
        pump = make_pump(consumer, ingest, revoked)
        task = asyncio.create_task(pump.run())
        while pump.counts["batches"] < 2:
            await asyncio.sleep(0.005)
        await pump.on_partitions_revoked({TopicPartition(TOPIC, 1)})
        # the revoke waited for the outstanding deliveries and committed them first
        assert consumer.stored == {0: 4, 1: 4}
        assert pump.assigned == frozenset({0})
        await pump.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert revoked == [{1}]


def test_a_partition_already_committed_starts_there() -> None:
    consumer = FakeConsumer(records=6, committed={0: 4, 1: 6})
    read: list[tuple[int, int]] = []

    async def ingest(events: Sequence[InputEvent], deliveries: list[Awaitable[Any]]) -> None:
        read.extend((e.partition, e.offset) for e in events)

    async def go() -> None:
        pump = make_pump(consumer, ingest)
        await run_until(pump, lambda: consumer.stored == {0: 6, 1: 6} and len(read) == 2)

    asyncio.run(go())
    assert read == [(0, 4), (0, 5)]


# -- on a real broker ---------------------------------------------------------------------------

@pytest.mark.services
def test_a_new_input_group_starts_where_the_faust_group_had_committed(tmp_path: Path) -> None:
    """An upgrade from a version whose faust agent read the input (group ``<app id>``):
    the pump's own group has no commit yet and starts at the old group's offsets, not at
    the beginning of the topic (Tansu, the real consumer and admin client)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    with TansuProcess(log_path=tmp_path / "tansu.log") as broker:
        async def go() -> list[tuple[int, int]]:
            settings = ScaleoutSettings(broker_url=broker.url, partitions=1,
                                        input_partitions=1)
            await declare_topics(settings)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
            await producer.start()
            for n in range(10):
                await producer.send_and_wait(TOPIC_DETECTIONS, b"%d" % n, partition=0)
            await producer.stop()
            old = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="app",
                                   enable_auto_commit=False)
            old.assign([TopicPartition(TOPIC_DETECTIONS, 0)])
            await old.start()
            await old.commit({TopicPartition(TOPIC_DETECTIONS, 0): 6})
            await old.stop()

            read: list[tuple[int, int]] = []

            async def ingest(events: Sequence[InputEvent],
                             deliveries: list[Awaitable[Any]]) -> None:
                read.extend((e.partition, e.offset) for e in events)

            pump = InputPump(topic=TOPIC_DETECTIONS, group_id=input_group("app"),
                             legacy_group="app", ingest=ingest, on_revoked=lambda _: None,
                             consumer_options={"bootstrap_servers": broker.bootstrap,
                                               "session_timeout_ms": 6000,
                                               "heartbeat_interval_ms": 500})
            await run_until(pump, lambda: len(read) >= 4, timeout_s=60)
            return read

        read = asyncio.run(go())
    assert read == [(0, 6), (0, 7), (0, 8), (0, 9)]


@pytest.mark.parametrize("backlog", [True, False])
def test_a_backlog_is_read_in_event_time_step_across_partitions(backlog: bool) -> None:
    """Partition 0's detections are 1,000 s apart, partition 1's 10 s: read as they come,
    partition 0 would run days ahead (and every stage downstream hold it all, waiting
    for partition 1). Catching up, it waits while more than ``align_s`` ahead; live (its
    times near the wall clock), nothing waits."""
    consumer = FakeConsumer(records=40)
    start = time.time() - (86400 if backlog else 0)
    high: dict[int, float] = {}
    order: list[tuple[int, int]] = []

    async def ingest(events: Sequence[InputEvent], deliveries: list[Awaitable[Any]]) -> None:
        for e in events:
            ts = start + e.offset * (1000 if e.partition == 0 else 10)
            high[e.partition] = max(high.get(e.partition, ts), ts)
            order.append((e.partition, e.offset))

    pump = InputPump(topic=TOPIC, group_id=input_group("app"), legacy_group=None,
                     ingest=ingest, on_revoked=lambda _: None,
                     consumer_factory=lambda: consumer, batch_max=4, wait_s=0.01,
                     align_s=500.0, high_of=high.get)
    asyncio.run(run_until(pump, lambda: len(order) == 80))
    assert sorted(order) == [(p, o) for p in (0, 1) for o in range(40)]  # none starved
    first_later = order.index((0, 2))
    if backlog:
        # partition 0 paused after its first two records, until partition 1 had no
        # records left (it never got 500 s ahead of partition 0's first)
        assert pump.counts["aligned"] >= 1
        assert {o for p, o in order[:first_later] if p == 1} == set(range(40))
    else:
        assert pump.counts["aligned"] == 0
        assert order[:4] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert consumer.stopped == set()  # nothing left paused


def test_a_sparse_backlog_runs_up_to_two_batches_ahead_not_in_lock_step() -> None:
    """Where one batch of a partition spans more event time than ``align_s`` (here 2,000 s
    a batch of partition 0 against ``align_s`` 500), a window of ``align_s`` would pause
    it after every batch (dropping what aiokafka had fetched for it); it may run two of
    its batches ahead of the slowest, and no further."""
    consumer = FakeConsumer(records=40)
    start = time.time() - 86400
    high: dict[int, float] = {}
    gaps: list[float] = []

    async def ingest(events: Sequence[InputEvent], deliveries: list[Awaitable[Any]]) -> None:
        for e in events:
            ts = start + e.offset * (1000 if e.partition == 0 else 100)
            high[e.partition] = max(high.get(e.partition, ts), ts)
        if len(high) == 2 and consumer.position[1] < consumer.records:
            gaps.append(high[0] - high[1])

    pump = InputPump(topic=TOPIC, group_id=input_group("app"), legacy_group=None,
                     ingest=ingest, on_revoked=lambda _: None,
                     consumer_factory=lambda: consumer, batch_max=4, wait_s=0.01,
                     align_s=500.0, high_of=high.get)
    asyncio.run(run_until(pump, lambda: all(consumer.position[p] == 40 for p in (0, 1))))
    assert pump.counts["aligned"] >= 1  # still held back while far ahead
    # ahead by more than align_s + one batch (what the align_s window allows) ...
    assert max(gaps) > 500 + 2000
    # ... and never by more than the window (two batches) + the batch that crossed it
    assert max(gaps) <= 2 * 2000 + 2000
    assert consumer.stopped == set()
