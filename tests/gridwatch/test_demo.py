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


_WITHOUT_CV2 = ("import sys; sys.modules['cv2'] = None; from gridwatch.cli import main; "
                "sys.exit(main(sys.argv[1:]))")


def _cli_without_cv2(*args, cwd=REPO):
    """The CLI as with only the base install: importing cv2 fails."""
    return subprocess.run([sys.executable, "-c", _WITHOUT_CV2, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_demo_without_opencv_skips_the_video_and_still_tickets(tmp_path):
    # the guard used to cover only the imports, not the cv2 import inside render_video
    proc = _cli_without_cv2("demo", "--once", "--data-dir", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    assert "video: skipped (cv2 is not installed; pip install 'gridwatch[vision]')" in proc.stdout
    assert "from the wrong-way detector" not in proc.stdout
    assert "tickets in" in proc.stdout and "Traceback" not in proc.stderr


def test_a_command_that_needs_an_extra_names_it(tmp_path):
    proc = _cli_without_cv2("detect", tmp_path / "none.mp4", "--camera",
                            SAMPLE / "cameras" / "demo_camera.yaml", "--out", tmp_path / "d")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "this needs cv2, which comes with the 'vision' extra: pip install 'gridwatch[vision]'")
    assert "Traceback" not in proc.stderr


def test_the_sample_is_shifted_by_whole_hours_to_end_now():
    import json
    from datetime import UTC, datetime, timedelta

    from gridwatch.commands.demo import shift_for, shift_line

    lines = [b'{"observed_at": "2026-05-24T22:44:57+08:00", "kind": "smoke"}',
             b'{"observed_at": "2026-05-04T05:22:10+08:00", "kind": "smoke"}',
             b'{"observed_at": "2026-05-30T00:00:00"}',  # naive: not a time, left alone
             b"not json"]
    now = datetime(2026, 12, 1, 11, 50, tzinfo=UTC)
    delta = shift_for(lines, now)
    assert delta % timedelta(hours=1) == timedelta(0)
    latest = datetime.fromisoformat("2026-05-24T22:44:57+08:00") + delta
    assert now - timedelta(hours=1) < latest <= now
    first = json.loads(shift_line(lines[0], delta))
    assert first == {"observed_at": latest.isoformat(), "kind": "smoke"}
    assert first["observed_at"].endswith("+08:00")
    assert shift_line(lines[2], delta) == lines[2] and shift_line(lines[3], delta) == lines[3]


def test_demo_shows_the_loop_in_every_state_with_cards_on_the_right_unit(tmp_path):
    proc = _cli("demo", "--once", "--no-video", "--data-dir", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    assert "event times shifted by" in proc.stdout
    with sqlite3.connect(tmp_path / "demo" / "tickets.sqlite3") as db:
        states = {s for (s,) in db.execute("SELECT status FROM tickets")}
        assert {"pending_review", "dispatched", "accepted", "resolved", "closed"} <= states
        red_open = db.execute("SELECT count(*) FROM tickets WHERE escalation = 'red' AND "
                              "status = 'accepted'").fetchone()[0]
        assert red_open >= 1  # overdue with a card, still being worked
        # the recalled ticket now runs on property_management's fresh clock; the cards it
        # earned while community_security held it stay on community_security's record
        [(ticket_id, due_at)] = db.execute(
            "SELECT t.ticket_id, t.due_at FROM tickets t WHERE t.status = 'dispatched' AND "
            "t.department = 'property_management'").fetchall()
        cards = db.execute("SELECT stage, department FROM escalations WHERE ticket_id = ?",
                           (ticket_id,)).fetchall()
        assert ("red", "community_security") in cards
        assert all(dept == "community_security" for _, dept in cards)
        actors = {a for (a,) in db.execute("SELECT DISTINCT actor FROM ticket_events")}
        assert {"demo.operator", "demo.security", "demo.fire"} <= actors
    from datetime import UTC, datetime
    assert datetime.fromisoformat(due_at.replace("Z", "+00:00")) > datetime.now(UTC)
