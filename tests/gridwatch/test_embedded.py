"""The embedded single-box pipeline: intake from any thread, tickets in SQLite,
acknowledgements only after the store has the detection."""

from __future__ import annotations

import threading
from datetime import timedelta

from gridwatch.config import load_config
from gridwatch.embedded import EmbeddedPipeline
from tests.builders import T0, line, make_detection, make_grid
from ticketing.store import SqliteTicketStore


def _pipeline(tmp_path, name="t.sqlite3"):
    store = SqliteTicketStore(tmp_path / name)
    return EmbeddedPipeline(load_config(), make_grid(), store), store


def test_detections_become_tickets_and_acks_follow_the_store(tmp_path):
    pipeline, store = _pipeline(tmp_path)
    acked: list[str] = []
    for i in range(3):
        event_id = f"s{i}"
        result = pipeline.submit_raw(
            line(event_id=event_id, observed_at=(T0 + timedelta(seconds=30 * i)).isoformat()),
            origin="test", on_committed=lambda e=event_id: acked.append(e))
        assert result.accepted and not result.duplicate
    assert pipeline.drain()
    assert acked == ["s0", "s1", "s2"]
    [ticket] = list(store.all())
    assert ticket.event_ids == ["s0", "s1", "s2"]
    pipeline.close()


def test_bad_messages_are_refused_with_a_reason_and_counted(tmp_path):
    pipeline, store = _pipeline(tmp_path)
    result = pipeline.submit_raw(b'{"schema": 1}', origin="mqtt:x")
    assert not result.accepted
    assert result.code == "wrong_schema"
    assert "schema" in (result.reason or "")
    good = pipeline.submit_raw(line(), origin="mqtt:y")
    assert good.accepted
    pipeline.drain()
    stats = pipeline.stats()
    assert stats["rejected"] == 1 and stats["processed"] == 1
    assert len(list(store.all())) == 1
    pipeline.close()


def test_duplicates_are_acknowledged_but_not_counted_twice(tmp_path):
    pipeline, store = _pipeline(tmp_path)
    raw = line(event_id="dup-1")
    acks = []
    assert not pipeline.submit_raw(raw, origin="a", on_committed=lambda: acks.append(1)).duplicate
    assert pipeline.submit_raw(raw, origin="a", on_committed=lambda: acks.append(2)).duplicate
    pipeline.drain()
    assert sorted(acks) == [1, 2]
    [ticket] = list(store.all())
    assert ticket.event_ids == ["dup-1"]
    # one filter, at intake: the stream core saw the detection once and filtered nothing
    stats = pipeline.stats()
    assert stats["duplicates"] == 1 and stats["stream"]["duplicates"] == 0
    assert stats["stream"]["accepted"] == 1
    pipeline.close()


def test_a_restart_recognises_already_stored_detections(tmp_path):
    pipeline, _ = _pipeline(tmp_path)
    pipeline.submit_raw(line(event_id="before-crash"), origin="a")
    pipeline.close()
    again, store = _pipeline(tmp_path)  # same database file
    assert again.submit_raw(line(event_id="before-crash"), origin="a").duplicate
    again.drain()
    [ticket] = list(store.all())
    assert ticket.event_ids == ["before-crash"]
    again.close()


def test_many_threads_submitting_at_once_lose_nothing(tmp_path):
    pipeline, store = _pipeline(tmp_path)

    def producer(k: int) -> None:
        for i in range(200):
            cell_lon = 0.5 + (i % 3)
            pipeline.submit_raw(line(event_id=f"p{k}-{i}", lon=cell_lon,
                                     observed_at=(T0 + timedelta(seconds=i)).isoformat()),
                                origin=f"thread-{k}")

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pipeline.drain()
    ids = [e for t in store.all() for e in t.event_ids]
    assert len(ids) == 800 and len(set(ids)) == 800
    pipeline.close()


def test_a_repeat_is_acknowledged_only_once_its_first_copy_is_committed(tmp_path):
    """A broker re-sends what it has not seen acknowledged (after a reconnect); the repeat
    of a detection still queued must not be acknowledged before the first copy is safe."""
    pipeline, store = _pipeline(tmp_path)
    gate = threading.Event()
    write = pipeline._tickets.write  # the core's ticket writer: held until the gate opens
    pipeline._tickets.write = (  # type: ignore[method-assign]
        lambda outputs, also=None, **kw: (gate.wait(10), write(outputs, also, **kw))[1])
    acks: list[str] = []
    raw = line(event_id="held")
    assert not pipeline.submit_raw(raw, origin="a",
                                   on_committed=lambda: acks.append("first")).duplicate
    assert pipeline.submit_raw(raw, origin="a",
                               on_committed=lambda: acks.append("repeat")).duplicate
    assert acks == []  # the first copy is still in the worker
    gate.set()
    assert pipeline.drain()
    assert acks == ["first", "repeat"]
    assert [t.event_ids for t in store.all()] == [["held"]]
    pipeline.close()


def test_every_repeat_of_a_queued_detection_waits_for_its_first_copy(tmp_path):
    """Several repeats while the first copy is queued (the first makes the waiting list,
    the next ones join it; one without a callback is only counted): each is acknowledged,
    in order, once the first copy is committed, and none before."""
    pipeline, store = _pipeline(tmp_path)
    gate = threading.Event()
    write = pipeline._tickets.write
    pipeline._tickets.write = (  # type: ignore[method-assign]
        lambda outputs, also=None, **kw: (gate.wait(10), write(outputs, also, **kw))[1])
    acks: list[str] = []
    raw = line(event_id="held-many")
    pipeline.submit_raw(raw, origin="a", on_committed=lambda: acks.append("first"))
    assert pipeline.submit_raw(raw, origin="a").duplicate  # no callback: nothing to run
    for name in ("repeat-1", "repeat-2", "repeat-3"):
        assert pipeline.submit_raw(raw, origin="a",
                                   on_committed=lambda name=name: acks.append(name)).duplicate
    assert acks == []
    gate.set()
    assert pipeline.drain()
    assert acks == ["first", "repeat-1", "repeat-2", "repeat-3"]
    assert pipeline.stats()["duplicates"] == 4
    # once committed, a repeat is acknowledged at once
    pipeline.submit_raw(raw, origin="a", on_committed=lambda: acks.append("late"))
    assert acks[-1] == "late"
    assert [t.event_ids for t in store.all()] == [["held-many"]]
    pipeline.close()


def test_a_failing_store_is_retried_and_nothing_is_acknowledged_before_it_works(tmp_path):
    """Disk full, database gone: the batch is written when the store is back (the stream
    core does not see it twice), and acknowledged only then."""
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, retry_delay_s=0.01)
    save_many = store.save_many
    failures = iter([OSError("disk full"), OSError("disk full")])
    attempts: list[int] = []

    def failing_twice(items, **kwargs):
        attempts.append(len(items))
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return save_many(items, **kwargs)

    store.save_many = failing_twice  # type: ignore[method-assign]
    events: list[str] = []
    for i in range(2):
        pipeline.submit_raw(line(event_id=f"retry-{i}", observed_at=(
            T0 + timedelta(seconds=i)).isoformat()), origin="a",
            on_committed=lambda i=i: events.append(f"acked {i}"),
            on_failed=lambda: events.append("failed"))
    assert pipeline.drain()
    assert len(attempts) >= 3
    assert sorted(events) == ["acked 0", "acked 1"]
    [ticket] = list(store.all())
    assert ticket.event_ids == ["retry-0", "retry-1"]
    assert ticket.detection_count == 2
    stats = pipeline.stats()
    assert stats["store_errors"] == 2 and stats["failed"] == 0 and stats["processed"] == 2
    pipeline.close()


def _submit_watched(pipeline: EmbeddedPipeline, event_id: str) -> list[str]:
    """Submit one detection; the list collects "acked" / "failed" as they happen."""
    events: list[str] = []
    pipeline.submit_raw(line(event_id=event_id), origin="a",
                        on_committed=lambda: events.append("acked"),
                        on_failed=lambda: events.append("failed"),
                        on_refused=lambda code, reason: events.append(f"refused:{code}"))
    return events


def test_closing_while_the_store_fails_leaves_the_batch_unacknowledged(tmp_path):
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, retry_delay_s=0.01,
                                retry_max_s=0.05)

    def always_failing(items, **kwargs):
        raise OSError("disk full")

    store.save_many = always_failing  # type: ignore[method-assign]
    events = _submit_watched(pipeline, "stuck")
    assert not pipeline.drain(0.3)
    pipeline.close(timeout=0.1)
    assert events == ["failed"]
    assert pipeline.stats()["failed"] == 1
    assert list(store.all()) == []


def test_submit_many_takes_a_batch_with_repeats_inside_it(tmp_path):
    pipeline, store = _pipeline(tmp_path)
    acks: list[str] = []
    items = [(make_detection(event_id=f"m{i % 3}", at=timedelta(seconds=i)),
              (lambda i=i: acks.append(f"ack {i}")), None) for i in range(5)]
    results = pipeline.submit_many(items)
    assert [r.duplicate for r in results] == [False, False, False, True, True]
    assert pipeline.drain()
    assert sorted(acks) == [f"ack {i}" for i in range(5)]  # repeats acked with their first
    assert sorted(e for t in store.all() for e in t.event_ids) == ["m0", "m1", "m2"]
    pipeline.close()


def test_intake_blocks_when_queue_max_detections_are_waiting(tmp_path):
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, queue_max=3)
    gate = threading.Event()
    write = pipeline._tickets.write  # the core's ticket writer: held until the gate opens
    pipeline._tickets.write = (  # type: ignore[method-assign]
        lambda outputs, also=None, **kw: (gate.wait(10), write(outputs, also, **kw))[1])
    pipeline.submit_many([(make_detection(event_id=f"q{i}", at=timedelta(seconds=i)), None, None)
                          for i in range(3)])
    blocked = threading.Thread(target=pipeline.submit,
                               args=(make_detection(event_id="q3", at=timedelta(seconds=3)),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a fourth detection must wait while three are pending"
    gate.set()
    blocked.join(10)
    assert not blocked.is_alive()
    assert pipeline.drain()
    assert pipeline.stats()["processed"] == 4 and pipeline.stats()["queue_depth"] == 0
    pipeline.close()


def test_a_bug_on_a_batch_is_not_retried_forever(tmp_path):
    """Only a store that cannot write is retried; an error the same data would raise again
    refuses the detection (on_refused: the ingest dead-letters it with the reason, not
    on_committed), so that intake keeps flowing."""
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, retry_delay_s=0.01)
    calls: list[int] = []

    def buggy(items, **kwargs):
        calls.append(len(items))
        raise ValueError("a bug")

    store.save_many = buggy  # type: ignore[method-assign]
    events = _submit_watched(pipeline, "poison")
    assert pipeline.drain(5)
    assert events == ["refused:store_refused"] and calls == [1]
    stats = pipeline.stats()
    assert stats["refused_by_code"] == {"store_refused": 1}
    assert stats["processed"] == 0 and stats["store_errors"] == 0
    pipeline.close()


def test_an_old_observation_is_not_overdue_when_it_arrives(tmp_path):
    # an edge box's backlog after an outage: seen days ago, received now; the unit's
    # clock starts when the centre receives it (the live runtime's clock), not at T0
    from datetime import UTC, datetime

    pipeline, store = _pipeline(tmp_path)
    before = datetime.now(UTC)
    pipeline.submit_raw(line(event_id="late-1", observed_at=T0.isoformat()), origin="test")
    assert pipeline.drain()
    after = datetime.now(UTC)
    [ticket] = list(store.all())
    assert ticket.opened_at == T0 and ticket.status.value == "dispatched"
    assert before <= ticket.received_at <= after
    assert ticket.dispatched_at == ticket.received_at
    assert ticket.due_at == ticket.received_at + timedelta(seconds=1800)  # smoke's sla_s
    assert ticket.due_at > after
    pipeline.close()
