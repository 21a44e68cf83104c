"""``gridwatch edge status`` says truthfully what the outbox holds: pending, awaiting the
centre's receipt, receipted, dropped (and how many of the drops the broker had taken)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edge.outbox import ROW_OVERHEAD_BYTES, Outbox
from gridwatch.cli import main


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "station.yaml"
    config.write_text(f"station_id: st1\nstate_dir: {tmp_path / 'edge'}\n", encoding="utf-8")
    return config


def test_status_counts_pending_awaiting_receipted_and_dropped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Outbox(tmp_path / "edge" / "outbox.sqlite", max_bytes=5 * (10 + ROW_OVERHEAD_BYTES))
    for i in range(5):
        box.put(topic="t", event_id=f"e{i}", payload=b"x" * 10)
    rows = box.fetch_after(0, limit=10)
    box.mark_sent([r.seq for r in rows[:4]], now=1.0, timeout_s=1, timeout_max_s=2)
    box.receipt(["e0", "ghost"])
    for i in range(5, 8):  # over budget: e1 and e2 go (sent, not receipted)
        box.put(topic="t", event_id=f"e{i}", payload=b"x" * 10)
    box.close()
    config = _config(tmp_path)
    assert main(["edge", "status", "--config", str(config), "--json"]) == 1  # not running
    report = json.loads(capsys.readouterr().out)["outbox"]
    assert {k: report[k] for k in ("depth", "pending", "awaiting_receipt", "receipted",
                                   "receipts_unknown", "dropped", "dropped_unreceipted",
                                   "published")} == {
        "depth": 5, "pending": 4, "awaiting_receipt": 1, "receipted": 1,
        "receipts_unknown": 1, "dropped": 2, "dropped_unreceipted": 2, "published": 4}
    main(["edge", "status", "--config", str(config)])
    out = capsys.readouterr().out
    assert "5 held" in out and "4 pending" in out and "1 awaiting the centre's receipt" in out
    assert "DROPPED 2 detection(s)" in out
    assert "(2 of them acknowledged by the broker, no receipt)" in out


def test_status_reads_an_outbox_from_before_receipts_as_all_pending(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "edge" / "outbox.sqlite"
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"
        " UNIQUE, topic TEXT NOT NULL, payload BLOB NOT NULL, is_test INTEGER NOT NULL"
        " DEFAULT 0, created_at REAL NOT NULL, evidence INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO outbox (event_id, topic, payload, created_at) VALUES ('e0', 't', X'78', 0);")
    old.close()
    main(["edge", "status", "--config", str(_config(tmp_path)), "--json"])
    report = json.loads(capsys.readouterr().out)["outbox"]
    assert (report["depth"], report["pending"], report["awaiting_receipt"]) == (1, 1, 0)
