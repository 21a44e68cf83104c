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


def test_check_refuses_a_classifier_as_the_detector(tmp_path, capsys) -> None:
    import numpy as np

    from tests.support.onnx_models import make_constant_classifier_onnx

    model = make_constant_classifier_onnx(tmp_path / "cls.onnx", np.array([[0.3, 0.7]]))
    camera = tmp_path / "cam.yaml"
    camera.write_text(DEMO_CAMERA.read_text().replace(
        "      type: motion\n      warmup_frames: 2\n",
        f"      type: onnx\n      model_path: '{model}'\n      classes: {{0: bicycle}}\n"))
    assert "type: onnx" in camera.read_text()
    assert main(["detectors", "check", str(camera)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "detectors.0 (wrong_way_ebike)" in err and "is not a detection output" in err


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
