"""Helmetless-rider decision logic fed with synthetic model outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from detectors.api import load_plugins
from detectors.helmet import (
    HELMETED,
    HELMETLESS,
    UNDECIDED,
    HelmetConfig,
    HelmetlessRiderDetector,
    HelmetVote,
    associate_riders,
    head_status,
)
from detectors.testing import KIT_LON_LAT, check_detector_plugin, kit_frames, make_context
from tests.support.onnx_models import make_constant_classifier_onnx, make_constant_yolo_onnx

from .builders import HELMET_CLASSES, at, make_detections, make_tracked

PERSON, BIKE, HELMET, NO_HELMET = 0, 1, 2, 3


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A 4-class model (person, bicycle, helmet, no_helmet) that detects nothing."""
    return make_constant_yolo_onnx(tmp_path_factory.mktemp("m") / "helmet.onnx",
                                   np.zeros((1, 8, 16), np.float32), names=HELMET_CLASSES)


def helmet_config(model_path: Path, **overrides) -> HelmetConfig:
    data = {"type": "helmetless_rider",
            "backend": {"type": "onnx", "model_path": str(model_path),
                        "classes": HELMET_CLASSES},
            "min_votes": 3}
    data.update(overrides)
    return HelmetConfig.model_validate(data)


def rider_frame(track: int, head_class: int | None, head_conf: float = 0.9, dx: float = 0.0):
    """A person (track ``track``) on a bicycle, with an optional head box."""
    rows = [(100 + dx, 40, 140 + dx, 130, 0.9, PERSON, track),
            (95 + dx, 90, 150 + dx, 150, 0.9, BIKE, 100 + track)]
    if head_class is not None:
        rows.append((110 + dx, 40, 130 + dx, 60, head_conf, head_class, 200 + track))
    return make_tracked(*rows)


# --- association -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("persons", "vehicles", "expected"),
    [
        # a person sitting on a bike
        ([(100, 40, 140, 130)], [(95, 90, 150, 150)], [(0, 0)]),
        # a pedestrian standing beside a parked bike: no overlap
        ([(200, 40, 240, 150)], [(95, 90, 150, 150)], []),
        # a person *behind* a bike, feet lower than the bike's centre: not riding
        ([(100, 120, 140, 200)], [(95, 90, 150, 150)], []),
        # rider plus pillion on one scooter; a third person is over capacity
        ([(100, 30, 125, 130), (120, 35, 145, 130), (110, 38, 130, 131)],
         [(95, 90, 150, 150)], [(0, 0), (1, 0)]),
        # two bikes side by side, each person on their own
        ([(100, 40, 140, 130), (300, 40, 340, 130)],
         [(295, 90, 350, 150), (95, 90, 150, 150)], [(0, 1), (1, 0)]),
        ([], [(95, 90, 150, 150)], []),
    ],
)
def test_associate_riders(persons, vehicles, expected) -> None:
    p = make_detections(*[(*b, 0.9, PERSON, i) for i, b in enumerate(persons)])
    v = make_detections(*[(*b, 0.9, BIKE, i) for i, b in enumerate(vehicles)])
    assert associate_riders(p, v, min_overlap=0.2, max_riders_per_vehicle=2) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ((110, 40, 130, 60, 0.8, NO_HELMET, 1), (True, 0.8)),
        ((110, 40, 130, 60, 0.7, HELMET, 1), (False, 0.7)),
        ((110, 100, 130, 120, 0.9, NO_HELMET, 1), None),  # at the rider's knees
        ((300, 40, 320, 60, 0.9, NO_HELMET, 1), None),    # someone else's head
    ],
)
def test_head_status(head, expected) -> None:
    heads = make_detections(head)
    status = head_status(np.array([100, 40, 140, 130]), heads, {HELMET}, {NO_HELMET}, 0.35)
    assert status == (pytest.approx(expected) if expected else None)


# --- vote ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([(True, 0.9)] * 3, (HELMETLESS, 3)),
        ([(False, 0.9)] * 3, (HELMETED, 3)),
        ([(True, 0.9), (True, 0.9)], None),                        # too few frames
        ([(True, 0.2)] * 10, None),                                # never confident
        ([(True, 0.9), (False, 0.9), (True, 0.9), (True, 0.9)], (HELMETLESS, 4)),
        ([(True, 0.9), (False, 0.9)] * 5, (UNDECIDED, 10)),        # split: dropped at max
    ],
)
def test_vote_thresholds(votes, expected) -> None:
    vote = HelmetVote(min_votes=3, min_vote_confidence=0.5, min_helmetless_ratio=0.7,
                      max_votes=10)
    results = [(i + 1, vote.add(1, *v)) for i, v in enumerate(votes)]
    decided = [(r[0], n) for n, r in results if r is not None]
    assert decided == ([expected] if expected else [])


def test_a_track_is_decided_once() -> None:
    vote = HelmetVote(min_votes=2)
    outcomes = [vote.add(5, True, 0.9) for _ in range(20)]
    assert sum(o is not None for o in outcomes) == 1


# --- detector over frames -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("head_classes", "expected_tracks"),
    [
        ([NO_HELMET] * 6, ["cam-1:1"]),
        ([HELMET] * 6, []),
        ([None, NO_HELMET, None, NO_HELMET, HELMET, NO_HELMET], ["cam-1:1"]),
        ([NO_HELMET, HELMET, HELMET, HELMET, NO_HELMET, HELMET], []),
        ([None] * 6, []),  # head never visible: no verdict
    ],
)
def test_riders_over_frames(model_path, tmp_path, head_classes, expected_tracks) -> None:
    context = make_context(source_id="cam-1", snapshot_dir=tmp_path)
    detector = HelmetlessRiderDetector(helmet_config(model_path), context)
    frame = np.zeros((240, 320, 3), np.uint8)
    found = []
    for i, head in enumerate(head_classes):
        found += detector.process_tracked(rider_frame(1, head, dx=3 * i), frame, at(i))
    detector.close()
    assert [d.track_id for d in found] == expected_tracks
    for detection in found:
        assert detection.kind == "helmetless_rider"
        assert (detection.lon, detection.lat) == (113.15, 23.04)
        # evidence box = person ∪ bicycle; the JPEG exists and has the box drawn
        x1, y1, x2, y2 = detection.evidence.bbox_xyxy
        assert (y1, y2) == (40, 150) and x2 - x1 == 55
        snapshot = Path(detection.evidence.snapshot_url.removeprefix("file://"))
        import cv2

        image = cv2.imread(str(snapshot))
        assert image is not None and image[150, int(x1) + 20].tolist() != [0, 0, 0]


def test_two_riders_are_two_detections(model_path) -> None:
    detector = HelmetlessRiderDetector(helmet_config(model_path), make_context())
    found = []
    for i in range(4):
        a, b = rider_frame(1, NO_HELMET), rider_frame(2, NO_HELMET, dx=150)
        merged = make_tracked()
        from detectors.core import Detections
        from detectors.inference import TrackedFrame

        merged = TrackedFrame(Detections.merge([a.detections, b.detections]), HELMET_CLASSES)
        found += detector.process_tracked(merged, None, at(i))
    assert sorted(d.track_id for d in found) == ["kit-camera:1", "kit-camera:2"]
    assert len({d.event_id for d in found}) == 2


def test_model_rider_class_needs_no_association(model_path) -> None:
    names = {0: "rider", 1: "helmet", 2: "no_helmet"}
    model = make_constant_yolo_onnx(model_path.parent / "rider.onnx",
                                    np.zeros((1, 7, 16), np.float32), names=names)
    config = HelmetConfig.model_validate({
        "type": "helmetless_rider", "min_votes": 2,
        "backend": {"type": "onnx", "model_path": str(model), "classes": names}})
    detector = HelmetlessRiderDetector(config, make_context())
    frames = [make_tracked((100, 40, 150, 150, 0.9, 0, 4), (115, 40, 135, 60, 0.9, 2, 9),
                           names=names) for _ in range(3)]
    found = [d for i, f in enumerate(frames) for d in detector.process_tracked(f, None, at(i))]
    assert [d.track_id for d in found] == ["kit-camera:4"]


def test_head_classifier_on_the_crop(model_path, tmp_path) -> None:
    classifier = make_constant_classifier_onnx(tmp_path / "head.onnx", [[0.1, 0.9]])
    config = helmet_config(model_path, head_classifier={
        "model_path": str(classifier), "classes": {0: "helmet", 1: "no_helmet"}})
    detector = HelmetlessRiderDetector(config, make_context())
    frame = np.full((240, 320, 3), 128, np.uint8)
    found = []
    for i in range(3):
        found += detector.process_tracked(rider_frame(1, None), frame, at(i))
    assert [d.confidence for d in found] == [pytest.approx(0.9)]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"backend": {"type": "motion"}}, "needs a detection model"),
        ({"min_votes": 5, "max_votes": 2}, "max_votes"),
        ({"min_vots": 3}, "min_vots"),
        ({"head_detector": {"type": "motion"}}, "head_detector must be a detection model"),
        ({"head_detector": {"type": "onnx", "model_path": "h.onnx", "classes": {0: "helmet"}},
          "head_classifier": {"model_path": "c.onnx", "classes": {0: "helmet", 1: "x"}}},
         "give head_detector or head_classifier, not both"),
    ],
)
def test_config_errors(model_path, overrides, error) -> None:
    with pytest.raises(ValidationError, match=error):
        helmet_config(model_path, **overrides)


def test_classes_without_riders_or_heads_fail_at_start(tmp_path) -> None:
    names = {0: "car", 1: "bus"}
    model = make_constant_yolo_onnx(tmp_path / "cars.onnx", np.zeros((1, 6, 16), np.float32))
    config = HelmetConfig.model_validate({
        "type": "helmetless_rider",
        "backend": {"type": "onnx", "model_path": str(model), "classes": names}})
    with pytest.raises(ValueError, match="neither a rider class"):
        HelmetlessRiderDetector(config, make_context())


def test_helmet_plugin_passes_the_contract_kit(tmp_path) -> None:
    """The kit's checks run on what a plug-in reports, so the model must see something: a
    bare-headed person on a bicycle in every frame (one track). Its votes decide at the
    ``min_votes``-th frame with a head, and the rider is reported there, once."""
    model = make_constant_yolo_onnx(tmp_path / "rider.onnx", _yolo(
        [[28, 26, 16, 36, 0.9, 0.0, 0.0, 0.0],  # person
         [28, 42, 20, 28, 0.0, 0.9, 0.0, 0.0],  # bicycle under them
         [28, 12, 8, 8, 0.0, 0.0, 0.0, 0.9]],  # no_helmet head at the person's top
        n_candidates=16), names=HELMET_CLASSES)
    config = helmet_config(model, min_votes=3).model_dump(mode="json")
    found = check_detector_plugin(load_plugins().get("helmetless_rider"), config)
    assert [(d.kind, d.track_id, d.confidence, d.observed_at) for d in found] == \
        [("helmetless_rider", "kit-camera:0", 0.9, kit_frames()[3][1])]
    assert (found[0].lon, found[0].lat) == KIT_LON_LAT
    assert found[0].evidence is not None and found[0].evidence.bbox_xyxy is not None


def _yolo(rows_cxcywh_scores: list[list[float]], n_candidates: int = 8) -> np.ndarray:
    n_channels = len(rows_cxcywh_scores[0])
    rows = rows_cxcywh_scores + [[0.0] * n_channels] * (n_candidates - len(rows_cxcywh_scores))
    return np.asarray(rows, np.float32).T[None]


@pytest.mark.parametrize(("head", "expected"), [("Without Helmet", 1), ("With Helmet", 0)])
def test_heads_from_a_second_detection_model(tmp_path, head, expected) -> None:
    """A public head detector ("With Helmet" / "Without Helmet") beside a person/bike model:
    each head is associated to the rider whose box top it lies in, and voted per track."""
    riders = make_constant_yolo_onnx(
        tmp_path / "riders.onnx",
        _yolo([[28, 26, 16, 36, 0.9, 0.0], [28, 42, 20, 28, 0.0, 0.9]]),
        names={0: "person", 1: "bicycle"})
    head_names = {0: "With Helmet", 1: "Without Helmet"}
    score = [0.9, 0.0] if head == "With Helmet" else [0.0, 0.9]
    heads = make_constant_yolo_onnx(tmp_path / "heads.onnx", _yolo([[28, 12, 8, 8, *score]]),
                                    names=head_names)
    config = HelmetConfig.model_validate({
        "type": "helmetless_rider", "min_votes": 3,
        "backend": {"type": "onnx", "model_path": str(riders),
                    "classes": {"person": "person", "bicycle": "bicycle"}},
        "head_detector": {"type": "onnx", "model_path": str(heads),
                          "classes": {"With Helmet": "helmet", "Without Helmet": "no_helmet"}}})
    detector = HelmetlessRiderDetector(config, make_context())
    frame = np.zeros((64, 64, 3), np.uint8)
    found = [d for i in range(8) for d in detector.process(frame, at(i))]
    detector.close()
    assert len(found) == expected
    if found:
        assert found[0].evidence.bbox_xyxy == (18.0, 8.0, 38.0, 56.0)  # person ∪ bicycle


def test_a_head_detector_without_head_roles_fails_at_start(tmp_path, model_path) -> None:
    heads = make_constant_yolo_onnx(tmp_path / "heads.onnx", np.zeros((1, 6, 8), np.float32),
                                    names={0: "With Helmet", 1: "Without Helmet"})
    config = helmet_config(model_path, head_detector={
        "type": "onnx", "model_path": str(heads), "classes": {0: "hat", 1: "bare"}})
    with pytest.raises(ValueError, match="head_detector class map gives roles"):
        HelmetlessRiderDetector(config, make_context())


def test_a_head_detector_equal_to_the_backend_runs_the_model_once(model_path) -> None:
    config = helmet_config(model_path)
    same = helmet_config(model_path, head_detector=config.backend.model_dump(mode="json"))
    detector = HelmetlessRiderDetector(same, make_context())
    assert detector.head_backend is None  # heads come from the tracked frame itself
    found = [d for i in range(4)
             for d in detector.process_tracked(rider_frame(1, NO_HELMET), None, at(i))]
    assert [d.track_id for d in found] == ["kit-camera:1"]
