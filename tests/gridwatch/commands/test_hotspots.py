"""``gridwatch hotspots warm-up`` seeds the baselines from history: a new installation
finds hot spots from its first live day instead of after the warm-up."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from gridwatch.cli import main
from gridwatch.embedded import EmbeddedPipeline
from tests.gridwatch.test_hotspot_durable import (
    config,
    hot_tickets,
    scenario,
    submit,
    uninterrupted,
)
from tests.gridwatch.test_serve_hotspots import grid_file
from ticketing.store import SqliteTicketStore


def split_at_day(days: float) -> tuple[list[str], list[str]]:
    _, lines = scenario()
    start = datetime.fromisoformat(json.loads(lines[0])["observed_at"]).timestamp()
    cut = next(i for i, raw in enumerate(lines)
               if datetime.fromisoformat(json.loads(raw)["observed_at"]).timestamp()
               >= start + days * 86400)
    return list(lines[:cut]), list(lines[cut:])


@pytest.fixture
def files(tmp_path: Path) -> Path:
    grid, _ = scenario()
    grid_file(grid, tmp_path / "grid.geojson")
    (tmp_path / "c.yaml").write_text("hotspot:\n  warmup_s: 259200\n")
    return tmp_path


def cli(files: Path, *args: str) -> int:
    return main(["hotspots", *args, "--config", str(files / "c.yaml"),
                 "--db", str(files / "t.db")])


def test_warm_up_from_history_finds_what_a_long_running_service_finds(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid, _ = scenario()
    history, live = split_at_day(3.1)  # the warm-up (3 days) and a bit; clusters later
    (files / "history.jsonl").write_text("\n".join(history) + "\n")
    assert cli(files, "warm-up", str(files / "history.jsonl"),
               "--grid", str(files / "grid.geojson")) == 0
    out = capsys.readouterr().out
    assert f"read              {len(history)} (0 rejected" in out
    # cells whose first rider came in the first night are not quite warm yet
    warm = re.search(r"cells warmed up   helmetless_rider (\d+) \(of 25;", out)
    assert warm is not None and 10 <= int(warm.group(1)) <= 25, out

    store = SqliteTicketStore(files / "t.db")
    pipeline = EmbeddedPipeline(config(), grid, store, received=None)
    assert pipeline.restored["checkpoint"] == 1
    submit(pipeline, live)
    pipeline.close()
    assert hot_tickets(store) == uninterrupted(files / "ref")

    # without the warm-up the same live days are still inside the warm-up: nothing found
    cold_store = SqliteTicketStore(files / "cold.db")
    cold = EmbeddedPipeline(config(), grid, cold_store)
    submit(cold, live)
    cold.close()
    assert hot_tickets(cold_store) == []


def test_warm_up_refuses_to_overwrite_state_unless_told(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history, _ = split_at_day(1)
    (files / "h.jsonl").write_text("\n".join(history[:200]) + "\n")
    grid = ["--grid", str(files / "grid.geojson")]
    assert cli(files, "warm-up", str(files / "h.jsonl"), *grid) == 0
    capsys.readouterr()
    assert cli(files, "warm-up", str(files / "h.jsonl"), *grid) == 2
    assert "already holds hot-spot state" in capsys.readouterr().err
    assert cli(files, "warm-up", str(files / "h.jsonl"), *grid, "--replace") == 0
    capsys.readouterr()
    assert cli(files, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["checkpoint"] is True and status["kinds"] == ["helmetless_rider"]
    assert status["warm_cells"] == {"helmetless_rider": 0}  # a day of a 3-day warm-up
    assert status["journal_detections"] == 0


@pytest.mark.parametrize(("content", "error"), [
    ('{"schema": "gridwatch.detection/1"}\nnot json\n', "no detections of a hot-spot kind"),
    ("", "no detections of a hot-spot kind (0 lines read)"),
])
def test_warm_up_without_usable_history_stores_nothing(
        files: Path, capsys: pytest.CaptureFixture[str], content: str, error: str) -> None:
    (files / "bad.jsonl").write_text(content)
    assert cli(files, "warm-up", str(files / "bad.jsonl"),
               "--grid", str(files / "grid.geojson")) == 2
    assert error in capsys.readouterr().err
    assert cli(files, "status", "--json") == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] is False


def test_a_missing_history_file_is_one_clear_line(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(files, "warm-up", str(files / "nope.jsonl"),
               "--grid", str(files / "grid.geojson")) == 2
    assert "nope.jsonl: cannot read detections" in capsys.readouterr().err
