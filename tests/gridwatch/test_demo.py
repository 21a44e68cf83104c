"""``gridwatch demo --once`` and ``gridwatch report hotspots`` on the repo's sample data."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "gridwatch", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_demo_once_runs_sensors_and_video_into_tickets(tmp_path):
    proc = _cli("demo", "--once", "--data-dir", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "8 rejected" in out and "2 duplicates" in out and "3 out of area" in out
    # video -> detection -> ticket: the wrong-way rider in the rendered video is evidence
    # on the Lishui bridge hot-spot ticket
    assert "1 detection(s) from the wrong-way detector" in out
    [video_line] = [x for x in out.splitlines() if x.startswith("video detection ")]
    assert "is evidence on ticket GW-" in video_line and "wrong_way_ebike" in video_line
    # its snapshot is in the centre's evidence store; tickets link there, never to file://
    assert "; snapshot at /evidence/st-lishui-01:cam-lishui-bridge-east:" in video_line
    with sqlite3.connect(tmp_path / "demo" / "tickets.sqlite3") as db:
        kinds = {k for (k,) in db.execute("SELECT kind FROM tickets")}
        count = db.execute("SELECT count(*) FROM tickets").fetchone()[0]
        bodies = [b for (b,) in db.execute("SELECT body FROM tickets")]
        assert db.execute("SELECT count(*) FROM evidence").fetchone()[0] == 1
    assert not [b for b in bodies if "file://" in b]
    assert any('"/evidence/' in b for b in bodies)
    assert {"smoke", "door_forced", "door_held_open", "wrong_way_ebike"} <= kinds
    assert f"{count} tickets in" in out


def test_demo_refuses_a_broken_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kinds:\n  smoke:\n    priority: urgent\n")
    proc = _cli("demo", "--once", "--no-video", "--config", bad, "--data-dir", tmp_path / "d")
    assert proc.returncode == 2
    assert "kinds.smoke.priority" in proc.stderr and "Traceback" not in proc.stderr


def test_report_hotspots_writes_a_map_and_a_time_series(tmp_path):
    proc = _cli("report", "hotspots", SAMPLE / "detections.jsonl", "--grid",
                SAMPLE / "grid.geojson", "--kind", "wrong_way_ebike", "--cell", "NH00120004",
                "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 2
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in pngs] == ["hotspots_map_wrong_way_ebike.png",
                                      "hotspots_series_wrong_way_ebike_NH00120004.png"]
