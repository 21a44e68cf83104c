"""The runtime core (gridwatch/pipeline.py) and the scale-out worker's adapter over it
(``StoreSink``), against real SQLite and PostgreSQL stores."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from gridwatch.commands.worker import StoreSink
from gridwatch.config import load_config
from gridwatch.pipeline import (
    STORE_UNAVAILABLE,
    Pipeline,
    held_event_ids,
    live_config,
    read_lines,
    until_stored,
)
from stream.processor import StreamOutput
from stream.retry import Backoff
from tests.builders import T0, line, make_detection, make_grid
from tests.gridwatch.test_embedded_faults import store_factory  # noqa: F401, F811 (a fixture)
from tests.ticketing.builders import refuse_poison
from ticketing.store import MemoryTicketStore, SqlTicketStore


@pytest.fixture
def sql_store(store_factory: Any) -> SqlTicketStore:  # noqa: F811
    """A real SQLite file or a fresh PostgreSQL schema (``store_factory``'s params)."""
    return store_factory()  # type: ignore[no-any-return]


def smoke_outputs(*extra_ids: str) -> tuple[list[StreamOutput], list[str]]:
    """The stream outputs of ten smoke alarms in nine cells (nine tickets), plus one
    alarm per ``extra_ids`` in cell C00; and every event id."""
    detections = [make_detection(event_id=f"smoke-{i}", at=timedelta(seconds=i),
                                 lon=0.5 + i % 3, lat=0.5 + (i // 3) % 3) for i in range(10)]
    detections += [make_detection(event_id=e, at=timedelta(seconds=20 + k))
                   for k, e in enumerate(extra_ids)]
    core = Pipeline(load_config(), make_grid(), MemoryTicketStore(), live=True)
    return core.stream(detections), [d.event_id for d in detections]


class Calls:
    """Counts the calls of some of a store's methods (the store itself is real)."""

    def __init__(self, store: SqlTicketStore, *names: str,
                 fail: dict[str, int] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.fail = Counter(fail or {})
        for name in names:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            if self.fail[name]:
                self.fail[name] -= 1
                raise OperationalError("UPDATE ...", {}, ConnectionError("server closed"))
            return method(*args, **kwargs)
        return call


# -- the scale-out worker's sink ------------------------------------------------------------

def test_the_worker_sink_writes_a_call_in_one_transaction(sql_store):
    outputs, ids = smoke_outputs()
    calls = Calls(sql_store, "save_many", "save")
    sink = StoreSink(load_config(), make_grid(), sql_store)
    written = sink.apply(outputs)
    assert calls.counts == {"save_many": 1}  # one round trip, not one per output
    tickets = list(sql_store.all())
    assert len(tickets) == 9 and set(written) == {t.ticket_id for t in tickets}
    assert sorted(e for t in tickets for e in t.event_ids) == sorted(ids)


def test_the_worker_sink_refuses_a_poison_output_alone(sql_store):
    refuse_poison(sql_store)
    outputs, ids = smoke_outputs("poison-1")
    sink = StoreSink(load_config(), make_grid(), sql_store)
    sink.apply(outputs)
    assert sink.refused == 1
    held = sorted(e for t in sql_store.all() for e in t.event_ids)
    assert held == sorted(e for e in ids if e != "poison-1")


def test_the_worker_sink_retried_after_an_outage_writes_nothing_twice(sql_store):
    from stream.faust_app import StoreUnavailable

    outputs, ids = smoke_outputs()
    Calls(sql_store, "save_many", fail={"save_many": 1})
    sink = StoreSink(load_config(), make_grid(), sql_store)
    with pytest.raises(StoreUnavailable, match="server closed"):
        sink.apply(outputs)
    assert list(sql_store.all()) == []
    sink.apply(outputs)  # the agent's retry, with the same outputs
    sink.apply(outputs)  # and a redelivery of the same partition: absorbed
    held = Counter(e for t in sql_store.all() for e in t.event_ids)
    assert sorted(held) == sorted(ids) and max(held.values()) == 1


def test_the_worker_sink_seeds_a_cell_from_its_tickets(sql_store):
    outputs, _ = smoke_outputs("c00-second")
    sink = StoreSink(load_config(), make_grid(), sql_store)
    sink.apply(outputs)
    assert sorted(e for e, _ in sink.held_event_ids("C00")) == [
        "c00-second", "smoke-0", "smoke-9"]
    assert [e for e, _ in sink.held_event_ids("C22")] == ["smoke-8"]


# -- the writer -------------------------------------------------------------------------------

def test_a_resumed_write_writes_the_durable_state_once(sql_store):
    """A poison split commits the first half (with the hot-spot journal), then the store
    goes away: the retry resumes with the rest and does not append the journal again."""
    from ticketing import checkpoints

    refuse_poison(sql_store)
    outputs, ids = smoke_outputs("poison-1")
    save_many = sql_store.save_many
    calls = 0

    def flaky_save_many(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # 1: all (poison), 2: the first half (commits), 3: the second half
            raise OperationalError("INSERT ...", {}, ConnectionError("server closed"))
        return save_many(*args, **kwargs)

    sql_store.save_many = flaky_save_many  # type: ignore[method-assign]
    writer = Pipeline(load_config(), make_grid(), sql_store, live=True).tickets

    def journal(conn: Any) -> None:
        checkpoints.append_journal(conn, name="t", lines="one batch")

    pending = list(outputs)
    with pytest.raises(OperationalError):
        writer.write(pending, journal)
    assert 0 < len(pending) < len(outputs)  # the first half is written and gone
    writer.write(pending, journal, resume=True)
    assert pending == []
    with sql_store.connection() as conn:
        assert checkpoints.load(conn, name="t").journal == ["one batch"]
    held = sorted(e for t in sql_store.all() for e in t.event_ids)
    assert held == sorted(e for e in ids if e != "poison-1")
    assert [r.output.new_event_ids for r in writer.take_refused()] == [("poison-1",)]


# -- the pieces -------------------------------------------------------------------------------

def test_until_stored_retries_a_passing_outage_with_the_backoff():
    results = iter([OSError("disk full"), OperationalError("x", {}, Exception("gone")), 7])
    seen: list[tuple[str, float | None]] = []

    def attempt() -> int:
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    ok, value = until_stored(attempt, stop=threading.Event(),
                             backoff=Backoff(first_s=0.001, max_s=0.002),
                             on_error=lambda exc, delay: seen.append((type(exc).__name__,
                                                                      delay)))
    assert (ok, value) == (True, 7)
    assert seen == [("OSError", 0.001), ("OperationalError", 0.002)]


def test_until_stored_gives_up_when_stopped_and_lets_other_errors_through():
    stop = threading.Event()
    stop.set()
    seen: list[float | None] = []

    def down() -> None:
        raise OSError("disk full")

    assert until_stored(down, stop=stop, on_error=lambda e, d: seen.append(d)) == (False, None)
    assert seen == [None]

    def bug() -> None:
        raise KeyError("not a store outage")

    with pytest.raises(KeyError):
        until_stored(bug, stop=threading.Event())
    assert not issubclass(KeyError, STORE_UNAVAILABLE)


@pytest.mark.parametrize(("first_s", "max_s", "expected", "error"), [
    (0.5, 30.0, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0], None),
    (1.0, 1.0, [1.0, 1.0], None),
    (0.0, 1.0, None, "expected 0 < first_s <= max_s, got first_s=0.0"),
    (2.0, 1.0, None, "got first_s=2.0, max_s=1.0"),
])
def test_backoff_doubles_up_to_its_cap(first_s, max_s, expected, error):
    if error is not None:
        with pytest.raises(ValueError, match=error):
            Backoff(first_s=first_s, max_s=max_s)
        return
    delays = Backoff(first_s=first_s, max_s=max_s).delays()
    assert [next(delays) for _ in expected] == expected


def test_held_event_ids_of_a_memory_store_and_a_sql_store(sql_store):
    outputs, ids = smoke_outputs()
    memory = MemoryTicketStore()
    for store in (memory, sql_store):
        Pipeline(load_config(), make_grid(), store, live=True).tickets.write(list(outputs))
    assert sorted(e for e, _ in held_event_ids(memory)) == sorted(ids)
    recent = held_event_ids(sql_store, horizon_s=3600)
    assert sorted(e for e, _ in recent) == sorted(ids)
    assert all(T0.timestamp() <= ts <= T0.timestamp() + 10 for _, ts in recent)
    with pytest.raises(ValueError, match="expected horizon_s"):
        held_event_ids(sql_store)


def test_read_lines_numbers_refused_lines_and_skips_blank_ones():
    lines = [line(event_id="a") + "\n", "\n", "{not json\n", line(event_id="b"), "   "]
    [batch] = list(read_lines(lines))
    assert [d.event_id for d in batch.valid] == ["a", "b"]
    assert batch.read == 3  # blank lines are not records
    [(number, exc, raw)] = batch.refused
    assert (number, exc.code.value, raw) == (3, "invalid_json", "{not json")


def test_live_config_drops_only_the_reorder_buffer():
    config = load_config()
    live = live_config(config)
    assert config.stream.lateness_s > 0 and live.stream.lateness_s == 0
    assert live.model_copy(update={"stream": config.stream}) == config
    assert Pipeline(config, make_grid(), MemoryTicketStore(), live=True) \
        .processor.settings.lateness_s == 0


# -- merged joins: one desk application per busy incident and batch ----------------------

def busy_detections(seed: int, n: int = 900) -> list[Any]:
    """Alarms of the three incident kinds in a 3 x 3 grid from a few sources each, mostly
    in time order with some late ones (older than their incident: incidents of their
    own that join the same open ticket), confidences low and high (a ticket waiting for
    review, then confirmed), and repeats from one source within its cooldown."""
    import random

    rng = random.Random(seed)
    kinds = [("smoke", "smoke_sensor"), ("door_forced", "access_control"),
             ("door_held_open", "access_control")]
    out = []
    for i in range(n):
        kind, source_type = kinds[rng.randrange(3)]
        at = timedelta(seconds=i * 7)
        if rng.random() < 0.05:
            at -= timedelta(seconds=rng.randrange(600, 4000))  # a late delivery
        out.append(make_detection(
            event_id=f"busy-{seed}-{i}", at=at, kind=kind, source_type=source_type,
            source_id=f"{kind}-{rng.randrange(4)}", confidence=rng.choice((0.3, 0.7, 0.95)),
            lon=0.5 + rng.randrange(3), lat=0.5 + rng.randrange(3)))
    return out


def write_in_batches(store: SqlTicketStore, detections: list[Any], sizes: list[int]
                     ) -> tuple[dict[str, Any], tuple[int, int], int]:
    """The live core's tickets after writing ``detections`` batch by batch (``sizes``
    in turn); the desk's (opened, updated); how many outputs the desk applied."""
    core = Pipeline(load_config(), make_grid(), store, live=True)
    applied = 0
    apply = core.tickets._apply_one

    def counting(output: StreamOutput) -> Any:
        nonlocal applied
        applied += 1
        return apply(output)

    core.tickets._apply_one = counting
    start = 0
    for k in range(10**6):
        part = detections[start:start + sizes[k % len(sizes)]]
        if not part:
            break
        core.tickets.write(core.stream(part))
        start += len(part)
    stats = core.desk.stats
    return ({t.ticket_id: t.to_public() for t in store.all()},
            (stats.opened, stats.updated), applied)


def restart_and_resend(store: SqlTicketStore, detections: list[Any]) -> dict[str, Any]:
    """A restarted centre (a fresh core on the same store) sent ``detections`` again in
    one batch: its incidents open afresh and are found re-opened."""
    core = Pipeline(load_config(), make_grid(), store, live=True)
    core.tickets.write(core.stream(detections))
    return {t.ticket_id: t.to_public() for t in store.all()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merged_joins_give_the_tickets_applying_them_one_by_one_gives(
        seed: int, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ticketing.idempotent import IdempotentDesk
    from ticketing.store import SqliteTicketStore

    detections = busy_detections(seed)
    sizes = [1, 250, 37, 400, 3]
    first = SqliteTicketStore(tmp_path / "merged.db")
    merged, merged_stats, merged_applied = write_in_batches(first, detections[:600], sizes)
    # re-sent after a restart: 200 the store holds (their incidents re-open), 300 new
    resent = restart_and_resend(first, detections[400:])
    monkeypatch.setattr(IdempotentDesk, "merge_joins", lambda self, outputs: list(outputs))
    second = SqliteTicketStore(tmp_path / "one_by_one.db")
    one_by_one, stats, applied = write_in_batches(second, detections[:600], sizes)
    assert resent == restart_and_resend(second, detections[400:])
    assert sum(t["detection_count"] for t in resent.values()) == len(detections)

    assert merged_applied < applied / 2  # merging happened (the tickets below are busy)
    assert merged_stats == stats
    assert len(merged) >= 10
    assert merged == one_by_one  # ids in the same order, counts, versions, review, clocks


def test_a_poison_detection_among_merged_joins_is_refused_alone(sql_store: SqlTicketStore
                                                                ) -> None:
    refuse_poison(sql_store)
    ids = ["s0", "s1", "poison-s2", "s3", "s4"]
    detections = [make_detection(event_id=e, at=timedelta(seconds=k)) for k, e in
                  enumerate(ids)]
    core = Pipeline(load_config(), make_grid(), sql_store, live=True)
    core.tickets.write(core.stream(detections[:1]))  # the incident is open: the rest join
    outputs = core.stream(detections[1:])
    assert len(core.tickets.idempotent.merge_joins(outputs)) == 1  # type: ignore[union-attr]
    core.tickets.write(outputs)
    refused = core.tickets.take_refused()
    assert [r.output.new_event_ids for r in refused] == [("poison-s2",)]  # type: ignore[union-attr]
    (ticket,) = sql_store.all()
    assert ticket.event_ids == ["s0", "s1", "s3", "s4"]
    assert ticket.detection_count == 4
