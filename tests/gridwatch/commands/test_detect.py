"""``gridwatch detect``: a video file through a camera config, detections out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.sample import render_sample_video
from gridwatch.cli import main

DEMO_CAMERA = Path(__file__).resolve().parents[3] / "sample_data/cameras/demo_camera.yaml"


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


def test_detect_fails_when_most_frames_fail(tmp_path, capsys, caplog, monkeypatch) -> None:
    """Regression (issue 14): a detector failing on every frame logged a traceback per
    frame and `detect` exited 0."""
    import detectors.camera
    from detectors.wrong_way import WrongWayDetector

    def broken(self, frame, observed_at):
        raise RuntimeError("output does not decode")

    monkeypatch.setattr(detectors.camera, "check_camera", lambda config: "")
    monkeypatch.setattr(WrongWayDetector, "process", broken)
    video = render_sample_video(tmp_path / "v.avi", n_frames=30)
    code = main(["detect", str(video), "--camera", str(DEMO_CAMERA), "--out",
                 str(tmp_path / "o.jsonl"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: most frames failed" in err
    assert "detectors failed on 28 of 28 analysed frames; last: detectors.0 " \
        "(wrong_way_ebike): RuntimeError: output does not decode" in err
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and "Traceback" not in caplog.text  # failures 1 and 10


def test_detect_tracks_out_and_annotate(tmp_path, capsys) -> None:
    import cv2

    video = render_sample_video(tmp_path / "v.avi")
    tracks, annotated = tmp_path / "tracks.jsonl", tmp_path / "a.mp4"
    code = main(["detect", str(video), "--camera", str(DEMO_CAMERA), "--out",
                 str(tmp_path / "o.jsonl"), "--tracks-out", str(tracks), "--annotate",
                 str(annotated), "--no-progress"])
    assert code == 0
    rows = [json.loads(line) for line in tracks.read_text().splitlines()]
    # the right-way rider moves right, the wrong-way one left; each path is its own
    assert len(rows) == 2
    assert rows[0]["displacement_xy"][0] > 150 > -150 > rows[1]["displacement_xy"][0]
    assert all(r["role"] == "moving_object" and len(r["path"]) == r["observations"] >= 10
               for r in rows)
    err = capsys.readouterr().err
    assert "analysed frames/s" in err and "at 10 fps" in err
    capture = cv2.VideoCapture(str(annotated))
    n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    assert f"{n_frames} annotated frames" in err and n_frames > 0
    capture.release()
