"""``gridwatch replay``: detections to tickets, per the replay contract in DESIGN.md."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gridwatch.config import load_config
from gridwatch.replay import replay_lines
from tests.builders import T0, line, make_grid, make_grid_geojson

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
REQUIRED = {"ticket_id", "kind", "cell_id", "district", "town", "village", "status",
            "priority", "department", "opened_at", "due_at", "incident_count", "event_ids",
            "lon", "lat", "review"}


def _replay(lines, config=None):
    return replay_lines(lines, make_grid(), config or load_config())


def _at(**delta):
    return (T0 + timedelta(**delta)).isoformat()


def test_three_smoke_sensors_in_one_building_are_one_ticket():
    lines = [line(event_id=f"s{i}", source_id=f"smoke-{i % 3}", observed_at=_at(seconds=s))
             for i, s in enumerate([0, 60, 120, 300, 450, 600])]
    result = _replay(lines)
    assert result.summary.stream.incidents == 1
    [ticket] = result.ticket_dicts()
    assert REQUIRED <= ticket.keys()
    assert ticket["incident_count"] == 1
    assert ticket["event_ids"] == [f"s{i}" for i in range(6)]
    assert ticket["kind"] == "smoke" and ticket["cell_id"] == "C00"
    assert ticket["status"] == "dispatched" and ticket["review"] == "auto_dispatched"
    assert ticket["department"] == "fire_rescue" and ticket["level"] == "town"
    assert (ticket["district"], ticket["town"], ticket["village"]) == ("D1", "TownA", "V0")
    assert ticket["opened_at"] == "2026-05-04T06:00:00Z"
    assert ticket["due_at"] == "2026-05-04T06:30:00Z"  # smoke: sla_s 1800


def test_two_fires_an_hour_apart_in_one_cell_join_the_open_ticket():
    lines = [line(event_id="f1a", observed_at=_at()),
             line(event_id="f1b", observed_at=_at(minutes=3)),
             line(event_id="f2a", observed_at=_at(hours=1))]
    result = _replay(lines)
    assert result.summary.stream.incidents == 2
    [ticket] = result.ticket_dicts()
    assert ticket["incident_count"] == 2
    assert ticket["event_ids"] == ["f1a", "f1b", "f2a"]
    assert len(ticket["incident_ids"]) == 2


def test_a_self_test_makes_no_ticket():
    result = _replay([line(attributes={"test": True})])
    assert result.tickets == []
    assert result.summary.stream.self_tests == 1


def test_out_of_area_is_counted_not_ticketed():
    result = _replay([line(lon=50.0, lat=50.0)])
    assert result.tickets == [] and result.summary.stream.out_of_area == 1


@pytest.mark.parametrize(
    ("overrides", "review", "status", "department"),
    [
        ({"confidence": 0.95}, "auto_dispatched", "dispatched", "fire_rescue"),
        ({"confidence": 0.4}, "pending_review", "pending_review", "fire_rescue"),
        ({"kind": "illegal_parking", "source_type": "camera", "confidence": 0.99},
         "pending_review", "pending_review", "command_centre"),
    ],
)
def test_low_confidence_and_unknown_kinds_go_to_review(overrides, review, status,
                                                       department):
    [ticket] = _replay([line(**overrides)]).ticket_dicts()
    assert (ticket["review"], ticket["status"], ticket["department"]) == \
        (review, status, department)


def test_a_later_confident_detection_dispatches_a_pending_ticket():
    [ticket] = _replay([line(confidence=0.3), line(confidence=0.9,
                                                   observed_at=_at(minutes=1))]).ticket_dicts()
    assert ticket["review"] == "auto_dispatched" and ticket["status"] == "dispatched"


def test_routing_levels_pick_the_cells_admin_unit():
    [smoke, door] = _replay([line(), line(kind="door_forced", source_type="access_control",
                                          observed_at=_at(minutes=1))]).ticket_dicts()
    assert (smoke["level"], smoke["unit"]) == ("town", "TownA")
    assert (door["level"], door["unit"], door["department"]) == \
        ("village", "V0", "community_security")


def test_routing_override_for_a_town(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ticketing:\n  routing_overrides:\n    - {kind: smoke, town: TownB, "
                   "department: townb_fire, level: district}\n"
                   "  departments:\n    townb_fire: {name_zh: 乙镇消防, "
                   "name_en: TownB fire, level: district}\n")
    config = load_config(cfg)
    tickets = _replay([line(lon=0.5), line(lon=2.5)], config).ticket_dicts()
    assert {t["town"]: (t["department"], t["unit"]) for t in tickets} == {
        "TownA": ("fire_rescue", "TownA"), "TownB": ("townb_fire", "D1")}


def test_rejects_are_reported_with_line_reason_and_raw_text():
    lines = [line(event_id="ok1"), "{oops", "", line(confidence=3),
             line(event_id="ok2", observed_at=_at(hours=2))]
    result = _replay(lines)
    assert result.summary.read == 4  # the blank line is not a record
    assert [(r.line, r.code) for r in result.rejects] == [(2, "invalid_json"),
                                                          (4, "out_of_range")]
    assert result.rejects[0].raw == "{oops"
    assert "confidence" in result.rejects[1].reason
    assert sum(len(t.event_ids) for t in result.tickets) == 2  # valid data kept flowing


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "gridwatch", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_sample_replay_is_byte_identical_across_runs(tmp_path):
    outputs = []
    for run in ("a", "b"):
        tickets, rejects = tmp_path / f"t{run}.jsonl", tmp_path / f"r{run}.jsonl"
        proc = _cli("replay", SAMPLE / "detections.jsonl", "--grid", SAMPLE / "grid.geojson",
                    "--tickets-out", tickets, "--rejects-out", rejects)
        assert proc.returncode == 0, proc.stderr
        outputs.append((tickets.read_bytes(), rejects.read_bytes(), proc.stdout))
    assert outputs[0] == outputs[1]
    tickets = [json.loads(x) for x in outputs[0][0].splitlines()]
    assert tickets and all(REQUIRED <= t.keys() for t in tickets)
    kinds = {t["kind"] for t in tickets}
    assert {"smoke", "door_forced", "door_held_open", "illegal_parking"} <= kinds
    rejects = [json.loads(x) for x in outputs[0][1].splitlines()]
    assert len(rejects) == 8 and all({"line", "reason", "raw"} <= r.keys() for r in rejects)
    summary = outputs[0][2]
    for label in ("read", "rejected", "duplicates", "out of area", "self-tests", "incidents",
                  "hot spots", "tickets"):
        assert label in summary


def test_summary_json_counts_the_sample(tmp_path):
    proc = _cli("replay", SAMPLE / "detections.jsonl", "--grid", SAMPLE / "grid.geojson",
                "--tickets-out", tmp_path / "t.jsonl", "--summary-json")
    summary = json.loads(proc.stdout)
    assert summary["rejected"] == 8 and summary["duplicates"] == 2
    assert summary["out_of_area"] == 3 and summary["self_tests"] == 1
    assert summary["late"] == 1
    # one hot spot (the Lishui bridge road works), re-reported hour by hour while it lasts
    assert summary["hotspots"] == 1 and summary["hotspot_reports"] > 1
    assert summary["tickets"] == len((tmp_path / "t.jsonl").read_text().splitlines())


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["missing.jsonl", "--grid", "{grid}"], "missing.jsonl: cannot read detections"),
        (None, ["{det}", "--grid", "nogrid.geojson"], "nogrid.geojson: cannot read grid file"),
        ("badgrid", ["{det}", "--grid", "{bad}"], "feature 0: properties.cell_id is required"),
        ("badcfg", ["{det}", "--grid", "{grid}", "--config", "{bad}"],
         "kinds.smoke.window_s: Input should be a valid integer"),
        ("typo", ["{det}", "--grid", "{grid}", "--config", "{bad}"],
         "kinds.smoke.windows_s: Extra inputs are not permitted"),
        ("yaml", ["{det}", "--grid", "{grid}", "--config", "{bad}"],
         "(line 3, column 1): invalid YAML"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, setup, args, message):
    grid = tmp_path / "grid.geojson"
    grid.write_text(json.dumps(make_grid_geojson()))
    det = tmp_path / "d.jsonl"
    det.write_text(line() + "\n")
    bad = tmp_path / "bad"
    if setup == "badgrid":
        bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                       '"properties": {}, "geometry": null}]}')
    elif setup == "badcfg":
        bad.write_text("kinds:\n  smoke:\n    window_s: soon\n")
    elif setup == "typo":
        bad.write_text("kinds:\n  smoke:\n    windows_s: 60\n")
    elif setup == "yaml":
        bad.write_text("kinds:\n  smoke: [unclosed\n")
    filled = [a.format(grid=grid, det=det, bad=bad) for a in args]
    proc = _cli("replay", *filled, "--tickets-out", tmp_path / "t.jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t.jsonl").exists()


def _outcome(result):
    return ([(r.line, r.code, r.reason, r.raw) for r in result.rejects],
            result.summary.as_dict(), result.ticket_dicts())


def test_line_endings_and_surrounding_whitespace_change_nothing():
    # replay parses a line with its newline and strips only a refused one: the same
    # records, reasons (with their positions) and raw texts as stripped lines give
    records = [line(event_id="ok1"), line(event_id="ok2", source_id="smoke-2"),
               line(event_id="late", observed_at=_at(hours=2)), line(confidence=3)]
    truncated = records[0][:40]
    stripped = [records[0], truncated, "", records[1], "{oops", records[2], records[3],
                "  ", truncated[:-5], records[1]]
    endings = ["\n", "\r\n", "\n", " \t\n", "\r\n", "\x0c\n", "\n", "\n", "\x0b\n", ""]
    lines = [(" " if i % 3 == 0 else "") + s + e
             for i, (s, e) in enumerate(zip(stripped, endings, strict=True))]
    expected = _outcome(_replay(stripped))
    assert _outcome(_replay(lines)) == expected
    assert _outcome(_replay([s.encode() for s in lines])) == _outcome(
        _replay([s.encode() for s in stripped]))
    assert [r[:2] for r in expected[0]] == [(2, "invalid_json"), (5, "invalid_json"),
                                            (7, "out_of_range"), (9, "invalid_json")]
    assert expected[1]["read"] == 8 and expected[1]["duplicates"] == 1


@pytest.mark.parametrize("batch_lines", [1, 2, 3, 7])
def test_batches_change_neither_results_nor_line_numbers(monkeypatch, batch_lines):
    lines = [line(event_id=f"e{i}", observed_at=_at(minutes=(7 * i) % 60),
                  source_id=f"smoke-{i % 3}") for i in range(20)]
    lines[4] = "{oops"
    lines[9] = ""
    lines[13] = line(confidence=3)
    expected = _outcome(_replay(lines))
    monkeypatch.setattr("gridwatch.pipeline.BATCH_LINES", batch_lines)
    assert _outcome(_replay(lines)) == expected
    assert [r[:2] for r in expected[0]] == [(5, "invalid_json"), (14, "out_of_range")]
