"""The plug-in's own test: GridWatch's contract kit on ``camera_obscured``."""

from detectors.testing import check_detector_plugin, kit_frames


def test_passes_the_gridwatch_contract_kit() -> None:
    detections = check_detector_plugin("camera_obscured")
    # kit_frames() ends with three black frames: exactly one episode, reported once.
    assert [d.kind for d in detections] == ["camera_obscured"]


def test_bright_frames_report_nothing() -> None:
    frames = kit_frames()[:-3]
    assert check_detector_plugin("camera_obscured", frames=frames) == []
