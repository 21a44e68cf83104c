"""The durable outbox: ordering, acknowledgement, persistence, and the disk budget."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.outbox import ROW_OVERHEAD_BYTES, Outbox, OutboxItem, evidence_key


def fill(box: Outbox, n: int, *, size: int = 100, test_every: int = 0, start: int = 0) -> None:
    for i in range(start, start + n):
        is_test = bool(test_every) and i % test_every == 0
        box.put(topic="t", event_id=f"e{i}", payload=b"x" * size, is_test=is_test)


def test_rows_come_back_in_order_and_leave_on_ack() -> None:
    box = Outbox(":memory:")
    fill(box, 5)
    rows = box.fetch_after(0, limit=3)
    assert [r.event_id for r in rows] == ["e0", "e1", "e2"]
    assert [r.event_id for r in box.fetch_after(rows[-1].seq, limit=10)] == ["e3", "e4"]
    assert box.ack([rows[0].seq, rows[2].seq]) == 2
    assert box.ack([rows[0].seq]) == 0  # a second PUBACK for the same row is harmless
    assert [r.event_id for r in box.fetch_after(0, limit=10)] == ["e1", "e3", "e4"]
    assert box.depth == 3
    assert box.counters()["published"] == 2


def test_a_repeated_event_id_is_stored_once() -> None:
    box = Outbox(":memory:")
    assert box.put(topic="t", event_id="same", payload=b"1")
    assert not box.put(topic="t", event_id="same", payload=b"2")
    assert box.depth == 1


def test_contents_and_counters_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite"
    box = Outbox(path, max_bytes=10 * (100 + ROW_OVERHEAD_BYTES))
    fill(box, 12)  # two dropped
    box.close()
    again = Outbox(path, max_bytes=10 * (100 + ROW_OVERHEAD_BYTES))
    assert again.depth == 10
    assert again.dropped == 2
    assert again.bytes_used == 10 * (100 + ROW_OVERHEAD_BYTES)


def test_drop_oldest_sheds_self_tests_first_then_oldest() -> None:
    box = Outbox(":memory:", max_bytes=10 * (100 + ROW_OVERHEAD_BYTES))
    fill(box, 10, test_every=3)  # e0, e3, e6, e9 are self-tests
    fill(box, 5, start=10)
    kept = [r.event_id for r in box.fetch_after(0, limit=100)]
    assert kept == ["e1", "e2", "e4", "e5", "e7", "e8", "e10", "e11", "e12", "e13", "e14"][-10:]
    assert "e14" in kept and box.dropped == 5
    assert box.bytes_used <= box.max_bytes


def test_reject_new_keeps_the_backlog() -> None:
    box = Outbox(":memory:", max_bytes=3 * (100 + ROW_OVERHEAD_BYTES), when_full="reject_new")
    fill(box, 5)
    assert [r.event_id for r in box.fetch_after(0, limit=10)] == ["e0", "e1", "e2"]
    assert box.dropped == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"when_full": "drop_newest"}, "when_full"), ({"synchronous": "off"}, "synchronous")],
)
def test_bad_policies_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Outbox(":memory:", **kwargs)


def test_evidence_goes_before_detections_when_the_budget_is_full() -> None:
    row = 100 + ROW_OVERHEAD_BYTES
    box = Outbox(":memory:", max_bytes=6 * row)
    # a detection and its image, committed together (the image under its own key)
    for i in range(3):
        stored = box.put_many([
            OutboxItem("t/detection", f"e{i}", b"d" * 100),
            OutboxItem("t/evidence", evidence_key(f"e{i}"), b"i" * 100, evidence=True)])
        assert stored == 2
    # the budget is full: two new detections push out the two oldest images, not e0/e1
    box.put_many([OutboxItem("t/detection", "e3", b"d" * 100),
                  OutboxItem("t/detection", "e4", b"d" * 100)])
    assert [r.event_id for r in box.fetch_after(0, limit=10)] == [
        "e0", "e1", "e2", "evidence:e2", "e3", "e4"]
    assert (box.dropped, box.evidence_dropped) == (0, 2)
    assert box.counters()["evidence_dropped"] == 2


def test_an_outbox_from_before_evidence_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"
        " UNIQUE, topic TEXT NOT NULL, payload BLOB NOT NULL, is_test INTEGER NOT NULL"
        " DEFAULT 0, created_at REAL NOT NULL);"
        "INSERT INTO outbox (event_id, topic, payload, created_at) VALUES ('e0', 't', X'78', 0);")
    old.close()
    box = Outbox(path)
    assert box.put_many([OutboxItem("t", evidence_key("e0"), b"img", evidence=True)]) == 1
    assert [r.event_id for r in box.fetch_after(0, limit=10)] == ["e0", "evidence:e0"]


# -- receipts: pending -> sent (PUBACK) -> receipted (deleted) ----------------------------
def sent(box: Outbox, seqs: list[int], *, now: float = 1000.0, timeout_s: float = 10.0,
         timeout_max_s: float = 35.0) -> int:
    return box.mark_sent(seqs, now=now, timeout_s=timeout_s, timeout_max_s=timeout_max_s)


def test_a_puback_makes_a_row_sent_and_only_a_receipt_removes_it() -> None:
    box = Outbox(":memory:")
    fill(box, 4)
    seqs = [r.seq for r in box.fetch_after(0, limit=10)]
    assert sent(box, seqs[:3]) == 3
    assert (box.depth, box.pending, box.awaiting_receipt) == (4, 1, 3)
    assert [r.event_id for r in box.fetch_after(0, limit=10, pending_only=True)] == ["e3"]
    assert box.receipt(["e0", "e1", "nobody's"]) == (2, 1)
    assert (box.depth, box.pending, box.awaiting_receipt) == (2, 1, 1)
    assert box.receipt(["e0"]) == (0, 1)  # a second receipt for the same id: ignored
    c = box.counters()
    assert (c["published"], c["receipted"], c["receipts_unknown"]) == (3, 2, 2)


def test_a_receipt_that_overtakes_the_puback_still_removes_the_row() -> None:
    box = Outbox(":memory:")
    fill(box, 1)
    [row] = box.fetch_after(0, limit=1)
    assert box.receipt(["e0"]) == (1, 0)
    assert sent(box, [row.seq]) == 0  # the late PUBACK finds nothing
    assert (box.depth, box.awaiting_receipt, box.counters()["published"]) == (0, 0, 1)


def test_an_unreceipted_row_falls_due_with_a_doubling_wait() -> None:
    box = Outbox(":memory:")
    fill(box, 2)
    first, second = (r.seq for r in box.fetch_after(0, limit=2))
    sent(box, [first, second], now=1000)
    assert box.due(1009.9, limit=10) == []
    assert box.next_due_at() == 1010
    assert [r.event_id for r in box.due(1010, limit=10)] == ["e0", "e1"]
    sent(box, [first], now=1010)  # sent again: next wait 20 s
    assert [r.event_id for r in box.due(1029, limit=10)] == ["e1"]
    sent(box, [first], now=1030)  # then 35 s (the cap), not 40
    assert [(r.event_id, r.attempts) for r in box.due(1065, limit=10)] == [
        ("e1", 1), ("e0", 3)]
    assert box.postpone(2000) == 2  # the centre is back: both wait until 2000
    assert box.due(1999, limit=10) == [] and len(box.due(2000, limit=10)) == 2
    assert box.counters()["published"] == 2  # re-sends are not new PUBACKs


def test_sent_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    fill(box, 3)
    sent(box, [r.seq for r in box.fetch_after(0, limit=2)], now=500)
    box.close()
    again = Outbox(path)
    assert (again.pending, again.awaiting_receipt) == (1, 2)
    assert [r.event_id for r in again.due(510, limit=10)] == ["e0", "e1"]


def test_budget_drops_of_unreceipted_rows_are_counted_as_such() -> None:
    box = Outbox(":memory:", max_bytes=4 * (100 + ROW_OVERHEAD_BYTES))
    fill(box, 4)
    sent(box, [r.seq for r in box.fetch_after(0, limit=3)])  # e0..e2 acknowledged
    fill(box, 2, start=4)  # pushes out e0, e1 (sent, no receipt)
    fill(box, 2, start=6)  # pushes out e2 (sent) and e3 (pending)
    c = box.counters()
    assert (box.dropped, c["dropped"], c["dropped_unreceipted"]) == (4, 4, 3)
    assert (box.pending, box.awaiting_receipt) == (4, 0)


def test_an_outbox_from_before_receipts_is_upgraded_with_its_rows_pending(
        tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"
        " UNIQUE, topic TEXT NOT NULL, payload BLOB NOT NULL, is_test INTEGER NOT NULL"
        " DEFAULT 0, created_at REAL NOT NULL, evidence INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO counters VALUES ('published', 7);"
        "INSERT INTO outbox (event_id, topic, payload, created_at) VALUES ('e0', 't', X'78', 0);"
        "INSERT INTO outbox (event_id, topic, payload, created_at) VALUES ('e1', 't', X'78', 0);")
    old.close()
    box = Outbox(path)
    assert (box.depth, box.pending, box.awaiting_receipt) == (2, 2, 0)
    assert [r.event_id for r in box.fetch_after(0, limit=10, pending_only=True)] == ["e0", "e1"]
    assert box.counters()["published"] == 7
    box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
