"""The embedded single-box pipeline: intake from any thread, tickets in SQLite,
acknowledgements only after the store has the detection."""

from __future__ import annotations

import threading
from datetime import timedelta

from gridwatch.config import load_config
from gridwatch.embedded import EmbeddedPipeline
from tests.builders import T0, line, make_grid
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
