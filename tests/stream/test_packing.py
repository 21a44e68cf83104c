"""Packed records on the internal topics, and acknowledgements in offset order.

Ingest sends ONE record per (input partition, by-cell partition) and batch, holding many
detections; the cells stage unpacks it, refuses a bad detection on its own (the dead
letter names the input record) and acks the packed record only once every detection in
it is released and written, and never before a record delivered ahead of it
(:class:`~stream.faust_app.InOrderAcks`). The stages' batch methods are driven directly
with stand-in events, so the acks can be watched.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from gridwatch.commands.worker import scaleout_for
from gridwatch.config import load_config
from stream.faust_app import (
    HEADER_HIGH,
    HEADER_MARK,
    HEADER_PACK,
    HEADER_SOURCE,
    PACK_INLINE,
    TOPIC_BY_CELL,
    TOPIC_DEADLETTER,
    TOPIC_DETECTIONS,
    TOPIC_HOTSPOT,
    InOrderAcks,
    Packed,
    Scaleout,
    ScaleoutSettings,
    pack,
    pack_inline,
    packs,
    partition_for,
    read_mark,
    route,
    route_many,
    unpack,
    unpack_inline,
)
from tests.builders import T0, line, make_grid
from ticketing.store import SqliteTicketStore

PARTITIONS = 4


class Message:
    """faust's Message as the stages use it: refcounted, acked once."""

    def __init__(self, topic: str, partition: int, offset: int, acked: list[Any]) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.refcount = 1  # the stream's reference, taken on delivery
        self.acked = False
        self._acked = acked

    def incref(self) -> None:
        self.refcount += 1

    def ack(self) -> None:
        self.refcount = max(self.refcount - 1, 0)
        if self.refcount == 0 and not self.acked:
            self.acked = True
            self._acked.append((self.topic, self.partition, self.offset))


class Event:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, *,
                 key: bytes | None = None, headers: dict[str, bytes] | None = None,
                 acked: list[Any]) -> None:
        self.message = Message(topic, partition, offset, acked)
        self.key, self.value, self.headers = key, value, headers or {}

    def ack(self) -> None:
        self.message.ack()

    def take_events_ack(self) -> None:
        # what faust's take_events does after the batch: drops the stream's reference;
        # the stage holds its own until it is finished with the record
        self.message.ack()


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int | None, dict[str, bytes]]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, *,
                       partition: int | None = None,
                       headers: dict[str, bytes] | None = None) -> None:
        self.sent.append((topic, key, value, partition, dict(headers or {})))

    def on(self, topic: str) -> list[tuple[bytes | None, bytes, int | None,
                                           dict[str, bytes]]]:
        return [(k, v, p, h) for t, k, v, p, h in self.sent if t == topic]


def make(tmp_path: Any, recorder: Recorder, *, input_partitions: int = 1) -> Scaleout:
    scaleout = scaleout_for(ScaleoutSettings(partitions=PARTITIONS,
                                             input_partitions=input_partitions),
                            load_config(), make_grid(),
                            SqliteTicketStore(tmp_path / "t.sqlite3"), sender=recorder,
                            received=None)
    return scaleout


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


# -- the format ---------------------------------------------------------------------------

def test_pack_and_unpack_round_trip_and_refuse_a_malformed_value() -> None:
    items = [Packed("C00", 1, 17, line(event_id="a")), Packed("C21", None, None, "{}")]
    assert unpack(pack(items)) == items
    for bad in (b"not json", b"{}", b"[[1, 2, 3, 4]]", b'[["C00", "x", 1, "{}"]]',
                b'[["C00", 1, 2]]', b'[["C00", true, 2, "{}"]]', None):
        with pytest.raises(ValueError):
            unpack(bad)


def test_an_inline_pack_round_trips_and_validates_every_detection_at_once() -> None:
    raws = [line(event_id="a"), line(event_id="b", kind="wrong_way_ebike")]
    items = [Packed("C00", 1, 17, raws[0]), Packed("C21", None, None, raws[1])]
    value = pack_inline(items)
    assert json.loads(value)[0][3] == json.loads(raws[0])  # an object, not a string
    rows = unpack_inline(value)
    assert [(c, p, o, d.event_id) for c, p, o, d in rows] == [
        ("C00", 1, 17, "a"), ("C21", None, None, "b")]
    # read item by item (the fallback), each detection comes back as its JSON
    assert [(i.cell_id, i.partition, i.offset) for i in unpack(value)] == [
        ("C00", 1, 17), ("C21", None, None)]
    assert [json.loads(i.raw) for i in unpack(value)] == [json.loads(r) for r in raws]
    bad = pack_inline([items[0], Packed("C00", 2, 3, '{"kind": 3}')])
    with pytest.raises(ValueError):  # pydantic's ValidationError
        unpack_inline(bad)
    with pytest.raises(ValueError):
        unpack_inline(b'[["C00", true, 3, ' + raws[0].encode() + b"]]")  # not an offset


def test_a_long_list_is_split_over_records_under_the_size_limit() -> None:
    items = [Packed("C00", 0, n, line(event_id=f"e-{n:04d}")) for n in range(600)]
    values = list(packs(items, max_bytes=20_000))
    assert len(values) > 1 and all(len(v) <= 20_000 for v in values)
    assert [i for v in values for i in unpack(v)] == items
    assert list(packs([], max_bytes=100)) == []
    [alone] = packs(items[:1], max_bytes=10)  # too big for the limit: on its own
    assert unpack(alone) == items[:1]
    inline = list(packs(items, max_bytes=20_000, inline=True))
    assert len(inline) > 1 and all(len(v) <= 20_000 for v in inline)
    assert [(c, p, o) for v in inline for c, p, o, _ in unpack_inline(v)] == [
        (i.cell_id, i.partition, i.offset) for i in items]


def test_route_many_gives_what_route_gives() -> None:
    grid = make_grid()
    raws: list[bytes | None] = [line(lon=0.5, lat=0.5).encode(), b"nope",
                                line(lon=10.0, lat=10.0).encode(), None,
                                line(lon=2.5, lat=1.5).encode()]
    assert route_many(raws, grid) == [route(r, grid) for r in raws]
    assert route_many([], grid) == []


# -- ingest -----------------------------------------------------------------------------------

def test_ingest_sends_one_packed_record_per_input_and_by_cell_partition(tmp_path) -> None:
    recorder = Recorder()
    scaleout = make(tmp_path, recorder, input_partitions=2)
    acked: list[Any] = []
    spots = {"C00": (0.5, 0.5), "C12": (1.5, 2.5), "C21": (2.5, 1.5)}
    events = []
    for offset, (cell, (lon, lat)) in enumerate(list(spots.items()) * 2):
        source = offset % 2
        events.append(Event(TOPIC_DETECTIONS, source, offset,
                            line(lon=lon, lat=lat, event_id=f"{cell}-{offset}",
                                 observed_at=at(offset)).encode(), acked=acked))
    events.append(Event(TOPIC_DETECTIONS, 1, 6, b"not json", key=b"st9", acked=acked))

    results = asyncio.run(scaleout.ingest_batch(events))

    assert [r["outcome"] for r in results] == ["routed"] * 6 + ["rejected"]
    packed = recorder.on(TOPIC_BY_CELL)
    groups: dict[tuple[int, int], list[Packed]] = {}
    for key, value, partition, headers in packed:
        assert partition is not None and key == str(partition).encode()
        assert headers[HEADER_PACK] == b"1" and HEADER_MARK not in headers
        source = int(headers[HEADER_SOURCE])
        assert (source, partition) not in groups  # one record per pair
        groups[(source, partition)] = unpack(value)
        # the input partition's mark after the whole batch
        last = max(o for o in range(6) if o % 2 == source)
        assert float(headers[HEADER_HIGH]) == (T0 + timedelta(minutes=last)).timestamp()
    items = sorted((i for group in groups.values() for i in group), key=lambda i: i.offset)
    assert [(i.cell_id, i.partition, i.offset) for i in items] == [
        (cell, o % 2, o) for o, cell in enumerate(list(spots) * 2)]
    for (source, partition), group in groups.items():
        assert {partition_for(i.cell_id, PARTITIONS) for i in group} == {partition}
        assert {i.partition for i in group} == {source}
    assert json.loads(items[0].raw)["event_id"] == "C00-0"  # the JSON unchanged
    [(key, dead, _, _)] = recorder.on(TOPIC_DEADLETTER)
    letter = json.loads(dead)
    assert (key, letter["code"], letter["topic"], letter["partition"], letter["offset"]) == (
        b"st9", "invalid_json", TOPIC_DETECTIONS, 1, 6)


# -- cells: unpack, poison, refcounted ack in offset order ------------------------------------

def packed_event(partition: int, offset: int, items: list[Packed], acked: list[Any], *,
                 source: int | None = None, high: str | None = None) -> Event:
    headers = {HEADER_PACK: b"1"}
    if source is not None:
        headers[HEADER_SOURCE] = str(source).encode()
        headers[HEADER_HIGH] = (b"idle" if high is None else
                                repr((T0 + timedelta(minutes=float(high))).timestamp())
                                .encode())
    return Event(TOPIC_BY_CELL, partition, offset, pack(items), key=str(partition).encode(),
                 headers=headers, acked=acked)


def marker(partition: int, offset: int, source: int, high: float | None,
           acked: list[Any]) -> Event:
    return Event(TOPIC_BY_CELL, partition, offset, b"", acked=acked, headers={
        HEADER_SOURCE: str(source).encode(), HEADER_MARK: b"1",
        HEADER_HIGH: b"idle" if high is None else
        repr((T0 + timedelta(minutes=high)).timestamp()).encode()})


def run_batch(scaleout: Scaleout, events: list[Event]) -> dict[str, Any]:
    result = asyncio.run(scaleout.cells_batch(events))
    for event in events:
        event.take_events_ack()
    return result


def test_a_packed_record_is_acked_when_all_its_detections_are_written_and_in_order(
        tmp_path) -> None:
    recorder = Recorder()
    scaleout = make(tmp_path, recorder, input_partitions=2)
    p = partition_for("C00", PARTITIONS)
    acked: list[Any] = []
    first = packed_event(p, 0, [
        Packed("C00", 0, 10, line(event_id="early", observed_at=at(0))),
        Packed("C00", 0, 11, line(event_id="late", observed_at=at(20)))], acked,
        source=0, high="20")
    behind = marker(p, 1, 1, 10, acked)  # input partition 1 has got to minute 10

    result = run_batch(scaleout, [first, behind])
    # "early" released and written; "late" held (partition 1 is only at minute 10):
    # the packed record is not acked, nor the marker behind it though it is finished
    assert (result["processed"], result["held"]) == (1, 1)
    assert acked == []
    [ticket] = scaleout.worker.sink.store.all()
    assert ticket.event_ids == ["early"]

    idle = marker(p, 2, 1, None, acked)  # partition 1 idle: nothing to wait for
    result = run_batch(scaleout, [idle])
    assert (result["processed"], result["held"]) == (1, 0)
    assert acked == [(TOPIC_BY_CELL, p, 0), (TOPIC_BY_CELL, p, 1), (TOPIC_BY_CELL, p, 2)]
    [ticket] = scaleout.worker.sink.store.all()
    assert ticket.event_ids == ["early", "late"]


def test_a_poison_detection_in_a_packed_record_is_dead_lettered_alone(tmp_path) -> None:
    recorder = Recorder()
    scaleout = make(tmp_path, recorder)
    p = partition_for("C00", PARTITIONS)
    acked: list[Any] = []
    event = packed_event(p, 5, [
        Packed("C00", 0, 40, line(event_id="good-1")),
        Packed("C00", 0, 41, '{"schema": "gridwatch.detection/1", "kind": 3}'),
        Packed("NOPE", 0, 42, line(event_id="lost")),
        Packed("C00", 0, 43, line(event_id="good-2"))], acked)

    result = run_batch(scaleout, [event])

    assert (result["processed"], result["rejected"], result["held"]) == (2, 2, 0)
    letters = [json.loads(v) for _, v, _, _ in recorder.on(TOPIC_DEADLETTER)]
    # each names the input record it entered through, and the packed record it was in
    assert [(d["topic"], d["partition"], d["offset"]) for d in letters] == [
        (TOPIC_DETECTIONS, 0, 41), (TOPIC_DETECTIONS, 0, 42)]
    assert all(d["via"] == {"topic": TOPIC_BY_CELL, "partition": p, "offset": 5}
               for d in letters)
    assert letters[1]["code"] == "unknown_cell" and "NOPE" in letters[1]["reason"]
    assert json.loads(letters[1]["raw"])["event_id"] == "lost"
    [ticket] = scaleout.worker.sink.store.all()
    assert ticket.event_ids == ["good-1", "good-2"]
    assert acked == [(TOPIC_BY_CELL, p, 5)]
    assert scaleout.worker.metrics()[p]["dead_letters"] == 2


def test_an_unreadable_packed_record_is_dead_lettered_whole(tmp_path) -> None:
    recorder = Recorder()
    scaleout = make(tmp_path, recorder)
    acked: list[Any] = []
    event = Event(TOPIC_BY_CELL, 2, 9, b"[not a pack", key=b"2",
                  headers={HEADER_PACK: b"1"}, acked=acked)
    result = run_batch(scaleout, [event])
    assert (result["processed"], result["rejected"]) == (0, 1)
    [(_, dead, _, _)] = recorder.on(TOPIC_DEADLETTER)
    letter = json.loads(dead)
    assert (letter["code"], letter["topic"], letter["partition"], letter["offset"]) == (
        "bad_pack", TOPIC_BY_CELL, 2, 9)
    assert acked == [(TOPIC_BY_CELL, 2, 9)]


def hot_line(n: int, **fields: Any) -> str:
    return line(event_id=f"ww-{n}", kind="wrong_way_ebike", source_type="camera",
                source_id="cam-1", observed_at=at(n), **fields)


def test_ingest_sends_hot_spot_kinds_straight_to_the_hot_spot_stage(tmp_path) -> None:
    """One inline packed record per input partition on the hot-spot topic, with that
    partition's mark; the by-cell topic gets only the incident kinds."""
    recorder = Recorder()
    scaleout = make(tmp_path, recorder, input_partitions=2)
    acked: list[Any] = []
    events = [Event(TOPIC_DETECTIONS, n % 2, n, hot_line(n).encode(), acked=acked)
              for n in range(6)]
    events.append(Event(TOPIC_DETECTIONS, 0, 6, line(event_id="smoke-6",
                                                     observed_at=at(9)).encode(),
                        acked=acked))
    results = asyncio.run(scaleout.ingest_batch(events))
    assert [r["outcome"] for r in results] == ["routed"] * 7
    assert [json.loads(i.raw)["event_id"] for _, v, _, _ in recorder.on(TOPIC_BY_CELL)
            for i in unpack(v)] == ["smoke-6"]
    hot = recorder.on(TOPIC_HOTSPOT)
    assert [(k, p, h[HEADER_SOURCE], h[HEADER_PACK]) for k, _, p, h in hot] == [
        (b"0", 0, b"0", PACK_INLINE), (b"1", 0, b"1", PACK_INLINE)]
    for source, (_, value, _, headers) in enumerate(hot):
        rows = unpack_inline(value)  # one validation for the record
        assert [(cell, part, off, d.event_id) for cell, part, off, d in rows] == [
            ("C00", source, n, f"ww-{n}") for n in range(source, 6, 2)]
        # the input partition's mark after the whole batch (the smoke detection too)
        last = 9 if source == 0 else 5
        assert float(headers[HEADER_HIGH]) == (T0 + timedelta(minutes=last)).timestamp()
    assert scaleout.metrics()["ingest"]["hotspot"] == 6

    # the marks timer tells the hot-spot stage too
    asyncio.run(scaleout.announce([0, 1]))
    marks = [h for _, _, _, h in recorder.on(TOPIC_HOTSPOT)[2:]]
    assert [(h[HEADER_SOURCE], HEADER_MARK in h) for h in marks] == [(b"0", True),
                                                                     (b"1", True)]

    # the stage counts them once both partitions' marks pass them
    processed = []
    for offset, (key, value, _, headers) in enumerate(recorder.on(TOPIC_HOTSPOT)):
        event = Event(TOPIC_HOTSPOT, 0, offset, value, key=key, headers=headers,
                      acked=acked)
        asyncio.run(scaleout.hotspots_batch([event]))
        event.take_events_ack()
        processed.append(scaleout.hotspots.counts["processed"])
    assert processed == [0, 6, 6, 6]  # nothing before partition 1 is heard of
    assert scaleout.hotspots.held() == 0


def test_a_batch_split_over_records_marks_only_the_last_with_its_new_mark(
        tmp_path) -> None:
    """Detections up to the batch's mark follow a record split off before the last, so
    that one carries the mark before the batch (or none yet: -inf)."""
    recorder = Recorder()
    scaleout = make(tmp_path, recorder)
    asyncio.run(scaleout.ingest_batch([Event(TOPIC_DETECTIONS, 0, 0,
                                             hot_line(0).encode(), acked=[])]))
    after = scaleout._mark_headers(0)[HEADER_HIGH]
    assert float(after) == T0.timestamp()
    stamped = list(scaleout._stamped(0, iter([b"a", b"b", b"c"]), PACK_INLINE, {0: 5.0}))
    assert [(v, h[HEADER_HIGH], h[HEADER_PACK]) for v, h in stamped] == [
        (b"a", b"5.0", PACK_INLINE), (b"b", b"5.0", PACK_INLINE), (b"c", after, PACK_INLINE)]
    [(_, h)] = scaleout._stamped(0, iter([b"a"]), b"1", {})
    assert h[HEADER_HIGH] == after
    first, _ = scaleout._stamped(0, iter([b"a", b"b"]), b"1", {})
    assert first[1][HEADER_HIGH] == b"-inf"
    assert read_mark(first[1]) == (0, float("-inf"))


def test_the_cells_stage_forwards_hot_spot_kinds_packed_with_their_input_record(
        tmp_path) -> None:
    """A hot-spot kind written to the by-cell topic directly still reaches the stage,
    without watermark headers (the stage's marks are ingest's, over the input
    partitions)."""
    recorder = Recorder()
    scaleout = make(tmp_path, recorder)
    p = partition_for("C00", PARTITIONS)
    acked: list[Any] = []
    rows = [Packed("C00", 0, n, hot_line(n)) for n in range(3)]
    run_batch(scaleout, [packed_event(p, 0, rows, acked)])
    [(key, value, partition, headers)] = recorder.on(TOPIC_HOTSPOT)
    assert (key, partition, headers) == (str(p).encode(), 0, {HEADER_PACK: PACK_INLINE})
    items = unpack(value)
    assert [(i.cell_id, i.partition, i.offset) for i in items] == [("C00", 0, n)
                                                                   for n in range(3)]
    assert [json.loads(i.raw)["event_id"] for i in items] == ["ww-0", "ww-1", "ww-2"]

    # the hot-spot stage refuses a bad one alone, naming its input record
    items.append(Packed("C00", 0, 7, "{broken"))
    hot_acked: list[Any] = []
    event = Event(TOPIC_HOTSPOT, 0, 3, pack(items), key=key,
                  headers={HEADER_PACK: b"1"}, acked=hot_acked)
    result = asyncio.run(scaleout.hotspots_batch([event]))
    event.take_events_ack()
    assert (result["processed"], result["rejected"]) == (3, 1)
    letter = json.loads(recorder.on(TOPIC_DEADLETTER)[-1][1])
    assert (letter["topic"], letter["partition"], letter["offset"], letter["via"]) == (
        TOPIC_DETECTIONS, 0, 7, {"topic": TOPIC_HOTSPOT, "partition": 0, "offset": 3})
    # counted, but acknowledged only once a checkpoint holds the counts
    assert hot_acked == [] and scaleout.hotspots.unsaved == 3
    asyncio.run(scaleout.checkpoint_hotspots())  # the marks timer: not due yet
    assert hot_acked == []
    scaleout.hotspots.checkpoint_max_s = 0.0
    asyncio.run(scaleout.checkpoint_hotspots())
    assert hot_acked == [(TOPIC_HOTSPOT, 0, 3)]
    assert scaleout.hotspots.unsaved == 0 and scaleout.hotspots.counts["checkpoints"] == 1

    # an inline pack with a bad detection, or a cell the grid lacks: read item by item,
    # the good ones counted, the bad ones refused alone
    rows = [Packed("C00", 0, 20, line(event_id="ww-20", kind="wrong_way_ebike",
                                      source_type="camera", source_id="cam-1",
                                      observed_at=at(20))),
            Packed("C00", 0, 21, '{"schema": "gridwatch.detection/1", "kind": 3}'),
            Packed("NOPE", 0, 22, line(event_id="ww-22", kind="wrong_way_ebike"))]
    event = Event(TOPIC_HOTSPOT, 0, 4, pack_inline(rows), key=key,
                  headers={HEADER_PACK: PACK_INLINE}, acked=hot_acked)
    result = asyncio.run(scaleout.hotspots_batch([event]))
    event.take_events_ack()
    assert (result["processed"], result["rejected"]) == (1, 2)
    letters = [json.loads(v) for _, v, _, _ in recorder.on(TOPIC_DEADLETTER)[-2:]]
    assert [(d["code"], d["offset"]) for d in letters] == [("missing_field", 21),
                                                           ("unknown_cell", 22)]


# -- acknowledgements in offset order -----------------------------------------------------------

def test_faust_commits_past_an_unacked_record_at_the_committed_offset() -> None:
    """Why :class:`InOrderAcks` exists: faust 0.15.3's commit takes the consecutive run
    of acked offsets from the smallest one and accepts it when it starts one past the
    committed offset — the committed offset itself being the next record to read, still
    unacked. (And with no commit yet it accepts any run.) Seen in the Tansu kill test:
    by-cell offset 13 held in the reorder buffer, 0-12 committed (13), the marker at 14
    acked, commit 15; the survivor started at 19 after a rebalance."""
    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    tp = TP(TOPIC_BY_CELL, 3)

    def new_offset(acked: list[int], committed: int | None) -> int | None:
        state = SimpleNamespace(_acked={tp: list(acked)}, _gap=defaultdict(IntervalTree),
                                _committed_offset={tp: committed},
                                _acked_index={tp: set(acked)})
        return Consumer._new_offset(state, tp)  # type: ignore[arg-type]

    assert new_offset([14], 13) == 15  # 13 was never acked
    assert new_offset([175, 176, 177], None) == 178  # 0-174 never acked
    assert new_offset([15], 13) is None  # two behind: refused


def test_in_order_acks_ack_a_partition_in_delivery_order_and_forget_it_on_revoke() -> None:
    acks = InOrderAcks()
    acked: list[Any] = []
    events = [Event(TOPIC_BY_CELL, 0, o, b"", acked=acked) for o in range(4)]
    other = Event(TOPIC_BY_CELL, 1, 0, b"", acked=acked)
    slots = [acks.take(e) for e in events]
    other_slot = acks.take(other)
    for e in (*events, other):
        e.take_events_ack()  # faust's own ack only drops its reference
    assert acked == []
    acks.expect(slots[1], 2)  # a packed record with two detections
    acks.done(slots[3])
    acks.done(slots[1])
    acks.done(other_slot)  # another partition: not held back by partition 0
    assert acked == [(TOPIC_BY_CELL, 1, 0)]
    acks.done(slots[0])
    assert acked[1:] == [(TOPIC_BY_CELL, 0, 0)]  # 1 still has a detection to go
    acks.done(slots[1])
    assert acked[2:] == [(TOPIC_BY_CELL, 0, 1)]  # 2 not done: 3 waits
    assert acks.pending(TOPIC_BY_CELL, 0) == 2
    acks.revoke({TP(TOPIC_BY_CELL, 0)})
    acks.done(slots[2])  # finished after the revoke: never acked (redelivered)
    assert acked[3:] == [] and acks.pending(TOPIC_BY_CELL, 0) == 0
    acks.expect(acks.take(Event(TOPIC_BY_CELL, 2, 0, b"", acked=acked)), 0)
    assert acked[3:] == []  # the stream's own reference is still there


def test_a_partition_held_back_while_aligning_is_never_announced_idle(tmp_path) -> None:
    """Idle means nothing to come: a partition read nothing from for ``idle_s`` is
    announced idle (the stages stop waiting for it), but not one the input pump paused
    while aligning a backlog, whose records would then arrive behind the watermark."""
    from aiokafka import TopicPartition

    recorder = Recorder()
    scaleout = make(tmp_path, recorder, input_partitions=2)
    scaleout._high.update({0: T0.timestamp(), 1: T0.timestamp()})
    scaleout._last_read.update({0: -1e9, 1: -1e9})  # long ago
    scaleout.input.consumer = SimpleNamespace(
        paused=lambda: {TopicPartition(TOPIC_DETECTIONS, 1)})
    asyncio.run(scaleout.announce([0, 1]))
    highs = {h[HEADER_SOURCE]: h[HEADER_HIGH] for _, _, _, h in recorder.on(TOPIC_HOTSPOT)}
    assert highs == {b"0": b"idle", b"1": repr(T0.timestamp()).encode()}
    by_cell = {(p, h[HEADER_SOURCE]): h[HEADER_HIGH] for _, _, p, h in
               recorder.on(TOPIC_BY_CELL)}
    assert len(by_cell) == 2 * PARTITIONS
    assert {v for (_, s), v in by_cell.items() if s == b"1"} == {repr(T0.timestamp()).encode()}
