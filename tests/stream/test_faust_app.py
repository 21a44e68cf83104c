"""The scale-out runtime's faust agents, driven with ``agent.test_context()``.

faust has no in-memory broker and no Kafka is installable here, so each agent is run in
its test context and what it publishes is recorded by the ``sender`` hook; the records the
ingest agent publishes to the by-cell topic are then fed to the cell agent, on the
partition Kafka's key partitioner would give them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from gridwatch.cli import main as cli_main
from gridwatch.commands import worker as worker_command
from gridwatch.commands.worker import resolved_store_url, scaleout_for
from gridwatch.config import load_config
from gridwatch.replay import replay_lines
from stream.faust_app import (
    HEADER_HIGH,
    HEADER_PACK,
    HEADER_SOURCE,
    TOPIC_BY_CELL,
    TOPIC_DEADLETTER,
    TOPIC_DETECTIONS,
    TOPIC_HOTSPOT,
    Scaleout,
    ScaleoutSettings,
    partition_for,
    unpack,
)
from stream.kafka_input import InputEvent
from tests.builders import T0, line, make_grid, make_grid_geojson
from ticketing.models import TicketStatus
from ticketing.store import SqliteTicketStore, SqlTicketStore

PARTITIONS = 4
Record = tuple[str, bytes | None, bytes]


class Recorder:
    """Stands in for the Kafka producer: remembers (topic, key, value). A packed by-cell
    record is kept as sent (:attr:`packed`) and, in :attr:`records`, as one
    (topic, cell id, detection JSON) per detection it holds, with its headers."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.headers: list[dict[str, bytes]] = []  # of each record, in the same order
        self.marks: list[tuple[int, dict[str, bytes]]] = []  # (partition, headers)
        # what the cells stage sends the hot-spot stage (records and markers, in order)
        self.hot: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
        # packed by-cell records as sent: (partition, key, value, headers)
        self.packed: list[tuple[int, bytes | None, bytes, dict[str, bytes]]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, *,
                       partition: int | None = None,
                       headers: dict[str, bytes] | None = None) -> None:
        if topic == TOPIC_HOTSPOT:
            assert partition == 0
            self.hot.append((key, value, dict(headers or {})))
            return
        if headers and "gw-mark" in headers:
            assert partition is not None
            self.marks.append((partition, dict(headers)))
            return
        if headers and HEADER_PACK in headers:
            assert topic == TOPIC_BY_CELL and partition is not None
            assert key == str(partition).encode()
            self.packed.append((partition, key, value, dict(headers)))
            rest = {k: v for k, v in headers.items() if k != HEADER_PACK}
            for item in unpack(value):
                self.records.append((topic, item.cell_id.encode(), item.raw.encode()))
                self.headers.append(dict(rest))
            return
        self.records.append((topic, key, value))
        self.headers.append(dict(headers or {}))

    def on(self, topic: str) -> list[Record]:
        return [r for r in self.records if r[0] == topic]


def make_scaleout(store: SqlTicketStore, recorder: Recorder | None = None) -> Scaleout:
    # received=None: deadline clocks on event time, so runs compare with each other and
    # with replay field for field (production starts them on the wall clock)
    return scaleout_for(ScaleoutSettings(partitions=PARTITIONS, batch_max=1), load_config(),
                        make_grid(),
                        store, sender=recorder or Recorder(), received=None)


async def ingest_records(scaleout: Scaleout,
                         records: list[tuple[bytes | None, bytes | None, int]]
                         ) -> dict[int, Any]:
    """(value, key, input partition) records through ingest as the input pump hands
    them over: in batches of ``batch_max``, offsets counted per partition."""
    offsets: Counter[int] = Counter()
    events = []
    for value, key, partition in records:
        events.append(InputEvent(TOPIC_DETECTIONS, partition, offsets[partition], key, value))
        offsets[partition] += 1
    results: dict[int, Any] = {}
    size = scaleout.settings.batch_max
    for start in range(0, len(events), size):
        for i, result in enumerate(await scaleout.ingest_batch(events[start:start + size])):
            results[start + i] = result
    return results


async def ingest(scaleout: Scaleout, lines: list[str | bytes]) -> dict[int, Any]:
    return await ingest_records(scaleout, [
        (raw.encode() if isinstance(raw, str) else raw, f"st/{i}".encode(), 0)
        for i, raw in enumerate(lines)])


async def cells(scaleout: Scaleout, records: list[Record]) -> dict[int, Any]:
    async with scaleout.cell_agent.test_context() as agent:
        for _, key, value in records:
            assert key is not None
            await agent.put(value, key=key,
                            partition=partition_for(key.decode(), PARTITIONS))
        return dict(agent.results)


async def cells_packed(scaleout: Scaleout, recorder: Recorder) -> dict[int, Any]:
    """The packed by-cell records ingest sent, on their partitions, without their
    watermark headers (each partition orders by its own records, as for direct ones)."""
    async with scaleout.cell_agent.test_context() as agent:
        for partition, key, value, _ in recorder.packed:
            await agent.put(value, key=key, partition=partition,
                            headers={HEADER_PACK: b"1"})
        return dict(agent.results)


def run_through(store: SqlTicketStore, lines: list[str | bytes]) -> Recorder:
    """Both agents, as a Kafka deployment would chain them (packed records)."""
    recorder = Recorder()
    scaleout = make_scaleout(store, recorder)
    asyncio.run(ingest(scaleout, lines))
    asyncio.run(cells_packed(scaleout, recorder))
    return recorder


def tickets(store: SqlTicketStore) -> dict[str, dict[str, Any]]:
    return {t.ticket_id: t.to_public() for t in store.all()}


def incident_input() -> list[str]:
    """Smoke and forced doors in three cells: joins within a window, a second incident
    joining the open ticket hours later, plus an invalid line, a duplicate, an
    out-of-area detection and a self-test. In event-time order."""
    spots = {"C00": (0.5, 0.5), "C11": (1.5, 1.5), "C21": (2.5, 1.5)}
    rows: list[tuple[timedelta, str]] = []
    for n, (cell, (lon, lat)) in enumerate(spots.items()):
        for burst in (timedelta(0), timedelta(hours=3)):
            for i in range(4):
                at = burst + timedelta(minutes=n, seconds=50 * i)
                rows.append((at, line(event_id=f"{cell}-smoke-{burst.seconds}-{i}",
                                      observed_at=T0 + at, lon=lon, lat=lat,
                                      source_id=f"smoke-{i % 2}")))
        at = timedelta(minutes=30 + n)
        rows.append((at, line(event_id=f"{cell}-door", observed_at=T0 + at, lon=lon,
                              lat=lat, kind="door_forced", source_type="access_control",
                              source_id="door-1", confidence=0.6)))
    rows.append((timedelta(minutes=5), line(event_id="far", observed_at=T0, lon=10.0)))
    rows.append((timedelta(minutes=6), line(event_id="selftest", observed_at=T0,
                                            attributes={"test": True})))
    rows.sort(key=lambda r: r[0])
    out = [r[1] for r in rows]
    out.insert(3, out[2])  # a re-sent detection
    out.insert(5, '{"schema": "gridwatch.detection/1", "event_id": 7}')
    return out


# -- ingest ------------------------------------------------------------------------------------

def test_a_valid_detection_becomes_a_ticket(tmp_path: Path) -> None:
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    raw = line(event_id="smoke-1")
    recorder = Recorder()
    scaleout = make_scaleout(store, recorder)

    results = asyncio.run(ingest(scaleout, [raw]))
    assert results == {0: {"outcome": "routed", "cell_id": "C00", "code": None,
                           "reason": None}}
    assert recorder.records == [(TOPIC_BY_CELL, b"C00", raw.encode())]

    results = asyncio.run(cells(scaleout, recorder.on(TOPIC_BY_CELL)))
    [ticket] = store.all()
    assert results[0] == {"outcome": "batch", "processed": 1, "rejected": 0, "held": 0,
                          "tickets": [ticket.ticket_id]}
    assert (ticket.kind, ticket.cell_id, ticket.event_ids) == ("smoke", "C00", ["smoke-1"])
    assert ticket.status is TicketStatus.DISPATCHED


@pytest.mark.parametrize(("raw", "code", "in_reason"), [
    (b"not json", "invalid_json", ""),
    (b"[1, 2]", "not_an_object", ""),
    (b'{"schema": "gridwatch.detection/2"}', "wrong_schema", "schema"),
    (line(observed_at="2026-05-04T06:00:00").encode(), "naive_timestamp", "observed_at"),
    (line(confidence=1.5).encode(), "out_of_range", "confidence"),
    (line(colour="red").encode(), "unknown_field", "colour"),
    (None, "empty", "no value"),
])
def test_an_invalid_message_is_dead_lettered_with_its_reason(
        tmp_path: Path, raw: bytes | None, code: str, in_reason: str) -> None:
    recorder = Recorder()
    scaleout = make_scaleout(SqliteTicketStore(tmp_path / "t.sqlite3"), recorder)

    results = asyncio.run(ingest_records(scaleout, [(raw, b"st1/smoke-1", 0)]))
    assert results[0]["outcome"] == "rejected" and results[0]["code"] == code
    assert recorder.on(TOPIC_BY_CELL) == []
    [(topic, key, value)] = recorder.records
    assert (topic, key) == (TOPIC_DEADLETTER, b"st1/smoke-1")
    letter = json.loads(value)
    assert letter["code"] == code
    assert in_reason in letter["reason"] and letter["reason"]
    assert letter["raw"] == (None if raw is None else raw.decode())
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        TOPIC_DETECTIONS, 0, 0)


def test_out_of_area_detections_are_counted_not_forwarded(tmp_path: Path) -> None:
    recorder = Recorder()
    scaleout = make_scaleout(SqliteTicketStore(tmp_path / "t.sqlite3"), recorder)
    results = asyncio.run(ingest(scaleout, [line(lon=10.0, lat=10.0)]))
    assert results[0]["outcome"] == "out_of_area"
    assert recorder.records == []
    assert scaleout.counts["out_of_area"] == 1


def test_the_cell_id_is_the_partition_key(tmp_path: Path) -> None:
    recorder = Recorder()
    scaleout = make_scaleout(SqliteTicketStore(tmp_path / "t.sqlite3"), recorder)
    points = {"C00": (0.5, 0.5), "C12": (1.5, 2.5), "C20": (2.2, 0.7), "C21": (2.5, 1.5)}
    lines = [line(lon=lon, lat=lat, station_id=f"st{i}", source_id=f"s{j}")
             for i, (lon, lat) in enumerate(points.values()) for j in range(3)]
    asyncio.run(ingest(scaleout, lines))

    keys = [key for _, key, _ in recorder.on(TOPIC_BY_CELL)]
    assert keys == [cell.encode() for cell in points for _ in range(3)]
    assert scaleout.by_cell_topic.partitions == PARTITIONS
    # the same partition the producer's default partitioner picks for that key
    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    for cell in points:
        assert partition_for(cell, PARTITIONS) == partitioner(cell.encode(), every, every)

    # the cell agent keeps state per partition it was given, and drops it on revoke
    asyncio.run(cells(scaleout, recorder.on(TOPIC_BY_CELL)))
    owned = sorted({partition_for(c, PARTITIONS) for c in points})
    assert scaleout.worker.partitions == owned
    asyncio.run(scaleout._on_revoked(scaleout.app, {TP(TOPIC_BY_CELL, owned[0]),
                                                    TP(TOPIC_DETECTIONS, owned[-1])}))
    assert scaleout.worker.partitions == owned[1:]


def test_the_cell_agent_dead_letters_a_record_keyed_by_no_cell(tmp_path: Path) -> None:
    recorder = Recorder()
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    scaleout = make_scaleout(store, recorder)
    results = asyncio.run(cells(scaleout, [(TOPIC_BY_CELL, b"NOPE", line().encode())]))
    assert results[0] == {"outcome": "batch", "processed": 0, "rejected": 1, "held": 0,
                          "tickets": []}
    [(topic, _, value)] = recorder.records
    assert topic == TOPIC_DEADLETTER and "NOPE" in json.loads(value)["reason"]
    assert store.count() == 0



def test_a_record_with_unreadable_watermark_headers_is_dead_lettered(tmp_path: Path) -> None:
    # both stages read the headers through one path: the record goes to the dead-letter
    # topic with the reason and its bad mark moves no watermark; a good one after it is held
    recorder = Recorder()
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    scaleout = make_scaleout(store, recorder)
    [(_, key, value)] = _by_cell_records([line()])
    assert key is not None

    async def run() -> dict[int, Any]:
        async with scaleout.cell_agent.test_context() as agent:
            await agent.put(value, key=key, partition=partition_for(key.decode(), PARTITIONS),
                            headers={HEADER_SOURCE: b"zero", HEADER_HIGH: b"1.0"})
            return dict(agent.results)

    results = asyncio.run(run())
    assert results[0]["rejected"] == 1 and results[0]["processed"] == 0
    [(topic, _, dead)] = recorder.on(TOPIC_DEADLETTER)
    letter = json.loads(dead)
    assert letter["code"] == "bad_headers" and "unreadable watermark headers" in letter["reason"]
    assert scaleout.counts["rejected:bad_headers"] == 1


# -- idempotency -------------------------------------------------------------------------------

def _by_cell_records(lines: list[str]) -> list[Record]:
    recorder = Recorder()
    asyncio.run(ingest(make_scaleout(SqliteTicketStore(":memory:"), recorder), lines))
    return recorder.on(TOPIC_BY_CELL)


@pytest.fixture(params=["seeded", "desk_guard_only"])
def seeding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Redelivery is caught twice: a fresh worker's event-id filter is seeded from the
    store, and the desk skips event ids a ticket already holds. Test each alone."""
    if request.param == "desk_guard_only":
        monkeypatch.setattr(worker_command, "SEED_TICKETS_PER_CELL", 0)
    return str(request.param)


def assert_no_duplicate_event_ids(store: SqlTicketStore) -> None:
    held = Counter(e for t in store.all() for e in t.event_ids)
    assert held and max(held.values()) == 1


@pytest.mark.parametrize("resume_at", [0, 5, 17])
def test_redelivery_through_a_fresh_agent_duplicates_nothing(
        tmp_path: Path, seeding: str, resume_at: int) -> None:
    """A restart or rebalance: a fresh agent instance gets the partition again from an
    uncommitted offset (here: from the start, or mid-incident) against the same store."""
    records = _by_cell_records(incident_input())
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    asyncio.run(cells(make_scaleout(store), records))
    before = tickets(store)
    assert len(before) >= 4
    assert_no_duplicate_event_ids(store)

    again = make_scaleout(SqliteTicketStore(tmp_path / "t.sqlite3"))
    asyncio.run(cells(again, records[resume_at:]))

    after = tickets(store)
    assert set(after) == set(before)
    for ticket_id, ticket in after.items():
        assert ticket["event_ids"] == before[ticket_id]["event_ids"]
    assert_no_duplicate_event_ids(store)
    if resume_at == 0:
        assert after == before  # not even a version bump


def test_redelivery_to_the_same_agent_duplicates_nothing(tmp_path: Path) -> None:
    records = _by_cell_records(incident_input())
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    scaleout = make_scaleout(store)
    asyncio.run(cells(scaleout, records))
    before, resent = tickets(store), scaleout.worker.counts["duplicates"]
    assert resent == 1  # the re-sent detection in the input
    asyncio.run(cells(scaleout, records))
    assert tickets(store) == before
    assert scaleout.worker.counts["duplicates"] == resent + len(records)


def test_redelivery_leaves_a_closed_ticket_closed(tmp_path: Path, seeding: str) -> None:
    """An operator closed a ticket; then its detections are redelivered. The redelivered
    incident must neither re-create the ticket under its deterministic id (a version
    conflict loop) nor add to it."""
    records = _by_cell_records(incident_input())
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    asyncio.run(cells(make_scaleout(store), records))
    [closing] = [t for t in store.all() if t.cell_id == "C11" and t.kind == "smoke"]
    closing.status = TicketStatus.CLOSED
    closing.version += 1
    store.save(closing)
    before = tickets(store)

    asyncio.run(cells(make_scaleout(SqliteTicketStore(tmp_path / "t.sqlite3")), records))
    assert tickets(store) == before
    assert_no_duplicate_event_ids(store)


@pytest.mark.services
def test_redelivery_on_postgresql_duplicates_nothing(pg_schema: tuple[str, str]) -> None:
    """The production store: two worker instances (a rebalance) on one database."""
    url, schema = pg_schema
    records = _by_cell_records(incident_input())
    first = SqlTicketStore(url, schema=schema, pool_size=2)
    asyncio.run(cells(make_scaleout(first), records))
    before = tickets(first)
    second = SqlTicketStore(url, schema=schema, pool_size=2)
    asyncio.run(cells(make_scaleout(second), records[7:]))
    assert tickets(second) == before
    assert_no_duplicate_event_ids(second)
    first.close()
    second.close()


class FlakyStore:
    """A store whose first ``failures`` writes fail as a lost database connection."""

    def __init__(self, inner: SqlTicketStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def save(self, ticket: Any, *, incident_id: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise OperationalError("INSERT ...", {}, ConnectionError("server closed"))
        self.inner.save(ticket, incident_id=incident_id)


def test_a_store_outage_is_retried_not_skipped(tmp_path: Path) -> None:
    """The agent must not move past (and later commit) a detection whose ticket write
    failed; it retries, and the retry does not duplicate what was already written."""
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    records = _by_cell_records(incident_input())
    flaky = FlakyStore(store, failures=3)
    scaleout = make_scaleout(flaky)  # type: ignore[arg-type]
    scaleout.retry_delay_s = 0.01
    results = asyncio.run(cells(scaleout, records))
    assert flaky.failures == 0  # the outage happened and was retried through
    assert sum(r["processed"] for r in results.values()) == len(records)

    expected = SqliteTicketStore(tmp_path / "expected.sqlite3")
    asyncio.run(cells(make_scaleout(expected), records))
    assert tickets(store) == tickets(expected)


# -- the same answer as replay -------------------------------------------------------------------

def test_the_agents_give_the_tickets_replay_gives(tmp_path: Path) -> None:
    lines = incident_input()
    replayed = replay_lines(lines, make_grid(), load_config())
    expected = {t.ticket_id: t.to_public() for t in replayed.tickets}
    assert len(expected) >= 4

    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    recorder = run_through(store, lines)

    got = tickets(store)
    assert {k: v["event_ids"] for k, v in got.items()} == \
        {k: v["event_ids"] for k, v in expected.items()}
    assert got == expected  # every field, not only the event ids
    letters = [json.loads(v)["code"] for _, _, v in recorder.on(TOPIC_DEADLETTER)]
    assert Counter(letters) == replayed.summary.rejected


# -- settings and the command -------------------------------------------------------------------

def test_settings_come_from_the_environment_and_keep_secrets_there() -> None:
    env = {"GRIDWATCH_KAFKA_BROKER": "kafka://k1:9092;kafka://k2:9092",
           "GRIDWATCH_KAFKA_PARTITIONS": "12", "GRIDWATCH_GRID": "g.geojson",
           "GRIDWATCH_TICKETS_URL": "postgresql://gw:s3cret@db/gridwatch"}
    settings = ScaleoutSettings.from_env(env, app_id="gw-test", partitions=None)
    assert (settings.broker_url, settings.partitions, settings.grid, settings.app_id) == (
        "kafka://k1:9092;kafka://k2:9092", 12, Path("g.geojson"), "gw-test")
    assert resolved_store_url(settings, load_config(), env) == \
        "postgresql://gw:s3cret@db/gridwatch"
    assert resolved_store_url(ScaleoutSettings(), load_config(), {}) == \
        worker_command.DEFAULT_STORE_URL


@pytest.mark.parametrize(("fields", "error"), [
    ({"store_url": "postgresql://gw:s3cret@db/gridwatch"}, "GRIDWATCH_TICKETS_URL"),
    ({"broker_url": "localhost:9092"}, "kafka://"),
    ({"partitions": 0}, "partitions"),
    ({"brokers": "kafka://x:1"}, "brokers"),
])
def test_bad_settings_fail_with_the_field(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ScaleoutSettings(**fields)


def test_worker_check_prints_the_plan_without_kafka(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    grid = tmp_path / "grid.geojson"
    grid.write_text(json.dumps(make_grid_geojson()))
    monkeypatch.delenv("GRIDWATCH_TICKETS_URL", raising=False)
    code = cli_main(["worker", "--grid", str(grid), "--partitions", "6", "--check",
                     "--store-url", f"sqlite:///{tmp_path / 'w.sqlite3'}"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{TOPIC_BY_CELL} (6 partitions, key = cell id)" in out
    assert "9 cells" in out and "w.sqlite3" in out
    assert (tmp_path / "w.sqlite3").exists()


def test_worker_refuses_a_password_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["worker", "--grid", "g.geojson", "--check",
                     "--store-url", "postgresql://gw:s3cret@db/gw"])
    assert code == 2
    err = capsys.readouterr().err
    assert "GRIDWATCH_TICKETS_URL" in err and "s3cret" not in err


def test_the_production_worker_starts_deadline_clocks_on_receipt(tmp_path: Path) -> None:
    from gridwatch.commands.worker import StoreSink, utc_now

    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    built = scaleout_for(ScaleoutSettings(partitions=PARTITIONS, batch_max=1), load_config(),
                        make_grid(),
                         store, sender=Recorder())
    sink = built.worker.sink
    assert isinstance(sink, StoreSink) and sink.desk.desk.received is utc_now
# -- hot spots: one stage over the whole grid -----------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def sample() -> tuple[Any, list[str]]:
    from geo.grid import Grid

    grid = Grid.from_file(SAMPLE / "grid.geojson")
    return grid, (SAMPLE / "detections.jsonl").read_text().splitlines()


def hot_scaleout(store: SqlTicketStore, recorder: Recorder, *, grid: Any = None,
                 cfg: Any = None, partitions: int = PARTITIONS) -> Scaleout:
    # deadline clocks on event time, so runs compare with each other and with replay
    return scaleout_for(ScaleoutSettings(partitions=partitions, input_partitions=partitions,
                                         batch_max=1),
                        cfg or load_config(), grid if grid is not None else sample()[0],
                        store, sender=recorder, received=None)


def hot(store: SqlTicketStore) -> list[dict[str, Any]]:
    return sorted((t.to_public() for t in store.all() if t.hotspot is not None),
                  key=lambda t: t["ticket_id"])


def replayed_hot(lines: list[str], grid: Any, cfg: Any = None) -> list[dict[str, Any]]:
    replayed = replay_lines(lines, grid, cfg or load_config())
    return sorted((t.to_public() for t in replayed.tickets if t.hotspot is not None),
                  key=lambda t: t["ticket_id"])


async def hotspots(scaleout: Scaleout, sent: list[tuple[bytes | None, bytes, dict[str, bytes]]]
                   ) -> dict[int, Any]:
    async with scaleout.hotspot_agent.test_context() as agent:
        for key, value, headers in sent:
            await agent.put(value, key=key, headers=headers, partition=0)
        return dict(agent.results)


def feed_worker(scaleout: Scaleout, recorder: Recorder, lines: list[str] | list[str | bytes],
                *, reverse: bool = False) -> None:
    """Ingest (round-robin keys over the input partitions) and the cells stage, then the
    hot-spot stage with what ingest sent it: its input partitions drained one after the
    other, highest first with ``reverse``."""
    recorder.records.clear()
    recorder.hot.clear()
    n = scaleout.settings.input_partitions
    asyncio.run(ingest_records(scaleout, [
        (raw.encode() if isinstance(raw, str) else raw, f"rr{i}".encode(), i % n)
        for i, raw in enumerate(lines)]))
    asyncio.run(scaleout.announce(range(n)))  # the marks timer's last tick
    asyncio.run(cells_on(scaleout, recorder.on(TOPIC_BY_CELL)))
    sent = list(recorder.hot)
    if reverse:
        sent.sort(key=lambda r: -int(r[2]["gw-source"]))  # stable: in order per partition
    asyncio.run(hotspots(scaleout, sent))


async def cells_on(scaleout: Scaleout, records: list[Record]) -> dict[int, Any]:
    async with scaleout.cell_agent.test_context() as agent:
        for _, key, value in records:
            assert key is not None
            await agent.put(value, key=key, partition=partition_for(
                key.decode(), scaleout.settings.partitions))
        return dict(agent.results)


@pytest.mark.parametrize(("partitions", "reverse"), [(1, False), (4, True), (7, True)])
def test_hot_spot_tickets_equal_replays_whatever_the_keying_and_drain_order(
        tmp_path: Path, partitions: int, reverse: bool) -> None:
    """Issue 16 part 3: the sample data replayed raises one hot-spot ticket (the Lishui
    bridge); the worker path gives exactly it, field for field, for one input partition
    or several drained one after the other (the hot-spot stage orders them by the marks
    ingest stamps and announces)."""
    grid, lines = sample()
    expected = replayed_hot(lines, grid)
    assert [(t["kind"], t["cell_id"]) for t in expected] == [("wrong_way_ebike",
                                                              "NH00120004")]
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    recorder = Recorder()
    scaleout = hot_scaleout(store, recorder, grid=grid, partitions=partitions)
    feed_worker(scaleout, recorder, lines, reverse=reverse)
    stage = scaleout.hotspots
    if partitions > 1:
        assert stage.held() > 0  # held for the partitions not drained yet
    scaleout.hotspots.flush()  # the end of the input, as replay ends
    assert hot(store) == expected
    # every hot-spot-kind detection went straight from ingest to the one stage, none
    # through the cells stage
    assert sum(row["forwarded"] for row in scaleout.worker.metrics().values()) == 0
    sent = scaleout.metrics()["ingest"]["hotspot"]
    assert sent == sum(len(unpack(v)) for _, v, h in recorder.hot if HEADER_PACK in h) > 0
    assert stage.counts["processed"] + stage.counts["duplicates"] == sent
    assert all(p.hotspots.open_hour is None for p in scaleout.worker._processors.values())


def test_hot_spot_stage_metrics_and_topic_are_declared(tmp_path: Path) -> None:
    from stream.faust_app import wanted_topics

    assert wanted_topics(ScaleoutSettings(partitions=5))[TOPIC_HOTSPOT] == 1
    recorder = Recorder()
    scaleout = hot_scaleout(SqliteTicketStore(tmp_path / "t.sqlite3"), recorder)
    grid, lines = sample()
    feed_worker(scaleout, recorder, lines[:300])
    metrics = scaleout.metrics()["hotspots"]
    assert metrics["processed"] == scaleout.hotspots.counts["processed"] > 0
    assert metrics["held"] == scaleout.hotspots.held()


def test_a_restarted_hot_spot_stage_gives_the_same_tickets(tmp_path: Path) -> None:
    """A worker stops in the middle (shutdown checkpoint), its successor restores the
    stage and is redelivered the records not committed yet: nothing is counted twice."""
    grid, lines = sample()
    expected = replayed_hot(lines, grid)
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    recorder = Recorder()
    first = hot_scaleout(store, recorder, grid=grid, partitions=1)
    at = len(lines) * 3 // 4  # into the burst day
    feed_worker(first, recorder, lines[:at])
    hourly = first.hotspots.counts["checkpoints"]
    assert hourly > 0  # one after every closed hour
    asyncio.run(first.app.on_before_shutdown.send())  # what faust's App.on_stop sends
    assert first.hotspots.counts["checkpoints"] == hourly + 1

    successor = hot_scaleout(store, recorder, grid=grid, partitions=1)
    feed_worker(successor, recorder, lines[at - 200:])  # 200 redelivered
    assert successor.hotspots.counts["restored"] == 1
    assert successor.hotspots.counts["duplicates"] > 0
    successor.hotspots.flush()
    assert hot(store) == expected


def test_a_revoked_hot_spot_partition_is_checkpointed_for_its_next_owner(
        tmp_path: Path) -> None:
    grid, lines = sample()
    expected = replayed_hot(lines, grid)
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    recorder = Recorder()
    first = hot_scaleout(store, recorder, grid=grid, partitions=1)
    at = len(lines) // 2
    feed_worker(first, recorder, lines[:at])
    asyncio.run(first._on_revoked(first.app, {TP(TOPIC_HOTSPOT, 0)}))
    assert not first.hotspots.active
    assert first.hotspots.counts["checkpoints"] >= 1

    other = hot_scaleout(store, recorder, grid=grid, partitions=1)
    feed_worker(other, recorder, lines[at:])
    assert other.hotspots.counts["restored"] == 1
    other.hotspots.flush()
    assert hot(store) == expected


class _HotMessage:
    def __init__(self, offset: int, acked: list[int]) -> None:
        self.topic, self.partition, self.offset = TOPIC_HOTSPOT, 0, offset
        self.refcount, self._acked = 1, acked

    def incref(self) -> None:
        self.refcount += 1

    def ack(self) -> None:
        self.refcount -= 1
        if self.refcount == 0:
            self._acked.append(self.offset)


class _HotEvent:
    def __init__(self, offset: int, sent: tuple[bytes | None, bytes, dict[str, bytes]],
                 acked: list[int]) -> None:
        self.key, self.value, self.headers = sent
        self.message = _HotMessage(offset, acked)

    def ack(self) -> None:
        self.message.ack()


def test_a_killed_hot_spot_stage_loses_no_count(tmp_path: Path) -> None:
    """``kill -9`` of the hot-spot stage's owner between two checkpoints: a hot-spot
    record is acknowledged (so its offset committed) only once a checkpoint holds its
    counts, so the successor, restoring the last checkpoint and redelivered everything
    after the last acknowledged record, gives replay's tickets."""
    grid, lines = sample()
    expected = replayed_hot(lines, grid)
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    recorder = Recorder()
    feeder = hot_scaleout(SqliteTicketStore(tmp_path / "feed.sqlite3"), recorder, grid=grid,
                          partitions=1)
    feed_worker(feeder, recorder, lines)  # what the cells stage sends the hot-spot topic
    sent = list(recorder.hot)

    acked: list[int] = []
    first = hot_scaleout(store, Recorder(), grid=grid, partitions=1)
    first.hotspots.checkpoint_min_s = 0.0  # a checkpoint at every closed hour
    crash = len(sent) * 3 // 4  # into the burst day
    for offset in range(crash):
        event = _HotEvent(offset, sent[offset], acked)
        asyncio.run(first.hotspots_batch([event]))
        event.ack()  # take_events drops the stream's reference after the batch
    assert first.hotspots.unsaved > 0  # counted since the last checkpoint: not acked
    committed = next(o for o in range(crash + 1) if o not in acked)
    assert committed < crash and acked == list(range(committed))
    # kill -9: no shutdown checkpoint; the successor reads from the committed offset
    successor = hot_scaleout(store, Recorder(), grid=grid, partitions=1)
    for offset in range(committed, len(sent)):
        event = _HotEvent(offset, sent[offset], [])
        asyncio.run(successor.hotspots_batch([event]))
        event.ack()
    assert successor.hotspots.counts["restored"] == 1
    successor.hotspots.flush()
    assert hot(store) == expected


def test_without_a_state_sink_shutdown_closes_the_open_hour(tmp_path: Path) -> None:
    from stream.faust_app import HotspotStage

    grid, lines = sample()
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    cfg = load_config()
    sink = worker_command.StoreSink(cfg, grid, store)
    stage = HotspotStage(stream=cfg.stream, policies=cfg.policies, hotspot=cfg.hotspot,
                         grid=grid, sink=sink)
    from detectors.schema import DetectionRejected, parse_detection

    for raw in lines[:300]:
        try:
            d = parse_detection(raw)
        except DetectionRejected:
            continue  # the sample data has some bad lines
        cell = grid.cell_at(d.lon, d.lat)
        if cell is not None:
            stage.hold(cell.cell_id, d, direct=True)
    stage.process(stage.release())
    hour = stage.processor.hotspots.open_hour
    assert hour is not None
    stage.shutdown()
    assert stage.processor.hotspots.open_hour == hour + 1


@pytest.mark.parametrize(("offset", "code"), [
    (timedelta(seconds=0), None),
    (timedelta(seconds=301), "clock_skew"),  # stream.max_future_s: 300
    (timedelta(days=-3), "clock_skew"),  # stream.max_age_s: dedup_horizon_s (2 days)
])
def test_the_live_worker_dead_letters_a_bad_clock(tmp_path: Path, offset, code) -> None:
    """Issue 12 part 3 in the scale-out runtime: the same limits as the embedded service
    against the worker's receive clock; replay-like runs (received=None) check nothing."""
    recorder = Recorder()
    scaleout = scaleout_for(ScaleoutSettings(partitions=PARTITIONS, batch_max=1), load_config(),
                            make_grid(), SqliteTicketStore(tmp_path / "t.sqlite3"),
                            sender=recorder, received=lambda: T0)
    results = asyncio.run(ingest(scaleout, [line(observed_at=(T0 + offset).isoformat())]))
    assert results[0]["code"] == code
    if code is None:
        assert len(recorder.on(TOPIC_BY_CELL)) == 1
    else:
        [(_, _, value)] = recorder.on(TOPIC_DEADLETTER)
        letter = json.loads(value)
        assert letter["code"] == "clock_skew" and "stream.max_" in letter["reason"]
    unchecked = make_scaleout(SqliteTicketStore(tmp_path / "u.sqlite3"))
    old = asyncio.run(ingest(unchecked, [line(observed_at=(T0 + offset).isoformat())]))
    assert old[0]["code"] is None


# -- event-time order across input partitions ------------------------------------------------

def test_results_do_not_depend_on_which_input_partition_drains_first(tmp_path: Path) -> None:
    """Ingest stamps each by-cell record with its input partition and that partition's
    high mark; the cells stage releases a detection only when every input partition has
    passed it. Two input partitions drained one after the other (the worst skew) give the
    tickets of the same input in event-time order."""
    from stream.faust_app import Watermarks

    lines = incident_input()
    expected_store = SqliteTicketStore(tmp_path / "expected.sqlite3")
    run_through(expected_store, lines)

    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    recorder = Recorder()
    scaleout = make_scaleout(store, recorder)
    settings = scaleout.settings.model_copy(update={"input_partitions": 2})
    scaleout.settings = settings
    scaleout.worker.sources = 2

    async def ingest_two() -> None:
        # round-robin keys: two input partitions
        await ingest_records(scaleout, [(raw.encode(), f"rr{i}".encode(), i % 2)
                                        for i, raw in enumerate(lines)])
        await scaleout.announce([0, 1])  # marks; the timer does this every tick_s

    asyncio.run(ingest_two())
    stamped = list(zip(recorder.records, recorder.headers, strict=True))
    by_source = sorted((r for r in stamped if r[0][0] == TOPIC_BY_CELL),
                       key=lambda r: r[1]["gw-source"])  # partition 0 first, then 1
    assert {h["gw-source"] for _, h in by_source} == {b"0", b"1"}

    async def cells_stamped() -> None:
        async with scaleout.cell_agent.test_context() as agent:
            for (_, key, value), headers in by_source:
                assert key is not None
                await agent.put(value, key=key, headers=headers,
                                partition=partition_for(key.decode(), PARTITIONS))
            # nothing is released before both partitions are heard of, so partition 1's
            # early detections are not behind partition 0's late ones
            assert scaleout.worker.held() > 0
            for partition, headers in recorder.marks:
                await agent.put(b"", key=None, headers={**headers, "gw-high": b"idle"},
                                partition=partition)
            assert scaleout.worker.held() == 0

    asyncio.run(cells_stamped())
    assert tickets(store) == tickets(expected_store)
    marks = Watermarks(2)
    marks.observe(0, 10.0)
    assert marks.value() == float("-inf")  # partition 1 not heard of yet
    marks.observe(1, 5.0)
    assert marks.value() == 5.0
    marks.observe(1, None)  # idle: no longer waited for
    assert marks.value() == 10.0
