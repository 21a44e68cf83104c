"""``gridwatch detect`` and ``gridwatch detectors`` (argparse commands)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.sample import render_sample_video
from gridwatch.cli import main

from .test_sample import DEMO_CAMERA


def test_detect_writes_jsonl_and_snapshots(tmp_path, capsys) -> None:
    video = render_sample_video(tmp_path / "v.avi")
    out = tmp_path / "out" / "detections.jsonl"
    code = main(["detect", str(video), "--camera", str(DEMO_CAMERA), "--out", str(out),
                 "--start", "2026-05-01T08:00:00+08:00", "--snapshots", str(tmp_path / "s"),
                 "--no-progress"])
    assert code == 0
    (line,) = out.read_text().splitlines()
    wire = json.loads(line)
    assert wire["kind"] == "wrong_way_ebike" and wire["observed_at"].startswith("2026-05-01")
    assert Path(wire["evidence"]["snapshot_url"].removeprefix("file://")).is_file()
    assert "1 detections" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["missing.avi"], "video not found"),
        (["VIDEO", "--start", "2026-05-01T08:00:00"], "--start: needs a UTC offset"),
        (["VIDEO", "--start", "yesterday"], "not an RFC 3339 time"),
    ],
)
def test_detect_user_errors(tmp_path, capsys, args, error) -> None:
    video = render_sample_video(tmp_path / "v.avi", n_frames=5)
    args = [str(video) if a == "VIDEO" else a for a in args]
    code = main(["detect", *args, "--camera", str(DEMO_CAMERA), "--out",
                 str(tmp_path / "o.jsonl"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert error in err and "Traceback" not in err


def test_bad_camera_is_one_line(tmp_path, capsys) -> None:
    camera = tmp_path / "cam.yaml"
    camera.write_text(DEMO_CAMERA.read_text().replace("min_distance_px", "min_distanse_px"))
    assert main(["detectors", "check", str(camera)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "detectors.0.wrong_way_ebike.min_distanse_px" in err
    assert main(["detectors", "check", str(DEMO_CAMERA)]) == 0


def test_detectors_list_json(capsys) -> None:
    assert main(["detectors", "list", "--json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert {"wrong_way_ebike", "helmetless_rider"} <= names
