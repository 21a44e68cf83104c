from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import yaml

from detectors.camera import CameraPipeline, camera_config_from_dict, load_camera_config

from .builders import T0, camera_dict


def write(tmp_path, data) -> str:
    path = tmp_path / "cam.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"detectors": [{"type": "wrong_way_ebike", "min_distanse_px": 3}]},
         "detectors.0.wrong_way_ebike.min_distanse_px: Extra inputs are not permitted"),
        ({"detectors": [{"type": "wrong_wy"}]}, "detectors.0: Input tag 'wrong_wy'"),
        ({"detectors": [{"type": "wrong_way_ebike", "backend": {"type": "motion",
                                                                "histroy": 5}}]},
         "detectors.0.wrong_way_ebike.backend.motion.histroy"),
        ({"ground": {"fixed_lon_lat": [23.04, 113.15]}}, "ground: Value error, lon/lat out of"),
        ({"ground": {"pixel_lon_lat_pairs": [[[0, 0], [113.1, 23.0]]] * 4}},
         "ground: Value error, homography points"),
        ({"lanes": [{"name": "a", "polygon_xy": [[0, 0], [1, 1]],
                     "direction_xy": [[0, 0], [1, 0]]}]}, "lanes.0.polygon_xy"),
        ({"sampling": {"every_n_frame": 2}}, "sampling.every_n_frame"),
        ({"cameras": 1}, "cameras: Extra inputs"),
        ({"detectors": []}, "detectors: List should have at least 1 item"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path, change, error) -> None:
    path = write(tmp_path, camera_dict(**change))
    with pytest.raises(ValueError) as info:
        load_camera_config(path)
    assert str(info.value).startswith(path + ": ")
    assert error in str(info.value)


@pytest.mark.parametrize(
    ("text", "error"), [("[1, 2]", "mapping"), ("a: [", "invalid YAML"), (None, "cannot read")]
)
def test_unreadable_files(tmp_path, text, error) -> None:
    path = write(tmp_path, text) if text is not None else str(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=error):
        load_camera_config(path)


def test_missing_model_fails_at_start_with_the_detector_named(tmp_path) -> None:
    config = camera_config_from_dict(camera_dict(detectors=[{
        "type": "wrong_way_ebike",
        "backend": {"type": "onnx", "model_path": str(tmp_path / "nope.onnx"),
                    "classes": {0: "bicycle"}}}]))
    with pytest.raises(ValueError, match=r"camera cam-1: detectors.0 \(wrong_way_ebike\): "
                                         "model file not found"):
        CameraPipeline(config)


def test_unknown_lane_name_fails_at_start() -> None:
    config = camera_config_from_dict(camera_dict(detectors=[{
        "type": "wrong_way_ebike", "lanes": ["bus-lane"]}]))
    with pytest.raises(ValueError, match=r"lanes \['bus-lane'\] are not defined"):
        CameraPipeline(config)


def frames(n, moving_from=None):
    for i in range(n):
        frame = np.full((240, 320, 3), 90, np.uint8)
        if moving_from is not None and i >= moving_from:
            x = 10 + 8 * (i - moving_from)
            frame[150:190, x:x + 30] = (20, 20, 20)
        yield frame, T0 + timedelta(seconds=i / 10)


@pytest.mark.parametrize(
    ("sampling", "gate", "expected"),
    [
        ({}, {}, {"frames_analysed": 40, "frames_gated": 0, "frames_sampled_out": 0}),
        ({"every_n_frames": 4}, {}, {"frames_analysed": 10, "frames_sampled_out": 30}),
        ({"max_fps": 2}, {}, {"frames_analysed": 8, "frames_sampled_out": 32}),
        # static for 20 frames: the first passes, then one every max_skip_s (1 s);
        # all 20 moving frames pass
        ({}, {"enabled": True, "max_skip_s": 1.0},
         {"frames_analysed": 22, "frames_gated": 18}),
    ],
)
def test_sampling_and_motion_gating(sampling, gate, expected) -> None:
    config = camera_config_from_dict(camera_dict(sampling=sampling, motion_gate=gate))
    pipeline = CameraPipeline(config)
    for frame, observed_at in frames(40, moving_from=20):
        pipeline.process(frame, observed_at)
    pipeline.close()
    assert {k: pipeline.stats[k] for k in expected} == expected
    assert pipeline.stats["frames_in"] == 40 and pipeline.stats["detector_errors"] == 0


def test_a_failing_detector_is_logged_and_the_camera_goes_on(caplog) -> None:
    pipeline = CameraPipeline(camera_config_from_dict(camera_dict()))

    class Broken:
        def process(self, frame, observed_at):
            raise RuntimeError("boom")

        def close(self):
            pass

    pipeline.detectors.insert(0, Broken())
    for frame, observed_at in frames(3):
        assert pipeline.process(frame, observed_at) == []
    assert pipeline.stats["detector_errors"] == 3
    assert "st-1/cam-1: detector Broken failed" in caplog.text
    pipeline.close()
    pipeline.close()


class _Broken:
    def __init__(self, message: str = "boom") -> None:
        self.message = message

    def process(self, frame, observed_at):
        raise RuntimeError(self.message + "\nsecond line of a long traceback-ish message")

    def close(self):
        pass


def test_a_failing_detector_is_logged_once_then_at_powers_of_ten(caplog) -> None:
    pipeline = CameraPipeline(camera_config_from_dict(camera_dict()))
    pipeline.detectors = [_Broken()]
    frame = np.zeros((240, 320, 3), np.uint8)
    for i in range(120):
        pipeline.process(frame, T0 + timedelta(seconds=i / 10))
    records = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage().split("(")[1].split(" ")[0] for r in records] == ["1", "10", "100"]
    assert all("RuntimeError: boom second line" in r.getMessage() for r in records)
    assert all(r.exc_info is None for r in records)
    assert pipeline.stats["frames_failed"] == 120 == pipeline.stats["frames_analysed"]
    assert pipeline.last_error == "detector _Broken: RuntimeError: boom second line of a " \
        "long traceback-ish message"


def test_check_camera_runs_the_chain_strictly(monkeypatch) -> None:
    from detectors.camera import check_camera
    from detectors.wrong_way import WrongWayDetector

    config = camera_config_from_dict(camera_dict())
    assert check_camera(config) == ""  # the motion backend has no class roles
    monkeypatch.setattr(WrongWayDetector, "process",
                        lambda self, frame, observed_at: _Broken("decode failed").process(
                            frame, observed_at))
    with pytest.raises(ValueError) as info:
        check_camera(config)
    assert str(info.value) == ("camera cam-1: detectors.0 (wrong_way_ebike): RuntimeError: "
                               "decode failed second line of a long traceback-ish message")


@pytest.mark.parametrize(
    ("configured", "file_fps", "expected", "warns"),
    [(None, 10.0, 10.0, False), (None, None, 25.0, False), (25.0, 10.0, 25.0, True),
     (10.0, 10.0, 10.0, False), (12.0, None, 12.0, False)],
)
def test_the_files_frame_rate_is_used_unless_configured(caplog, configured, file_fps,
                                                        expected, warns) -> None:
    from detectors.camera import effective_frame_rate

    config = camera_config_from_dict(camera_dict(frame_rate=configured))
    assert effective_frame_rate(config, file_fps) == expected
    assert ("overrides the video's own" in caplog.text) is warns


def test_check_camera_analyses_frames_despite_max_fps(monkeypatch) -> None:
    from detectors.camera import check_camera
    from detectors.wrong_way import WrongWayDetector

    seen = []
    original = WrongWayDetector.process

    def spy(self, frame, observed_at):
        seen.append(observed_at)
        return original(self, frame, observed_at)

    monkeypatch.setattr(WrongWayDetector, "process", spy)
    config = camera_config_from_dict(camera_dict(
        frame_rate=25, sampling={"every_n_frames": 2, "max_fps": 2}))
    check_camera(config, frames=3)
    assert len(seen) == 3
