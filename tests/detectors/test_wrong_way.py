"""Wrong-way: the pure judge, then rendered videos through the whole camera pipeline."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from detectors.camera import CameraPipeline, camera_config_from_dict
from detectors.core import box_iou
from detectors.lanes import Lane, LaneConfig
from detectors.sample import MovingBox, render_video, run_video
from detectors.wrong_way import WrongWayJudge

from .builders import camera_dict

LANE = Lane(LaneConfig(name="bike", polygon_xy=[(0, 100), (320, 100), (320, 220), (0, 220)],
                       direction_xy=((0, 160), (320, 160))))


def judge_path(points, fps: float = 10.0, **kwargs) -> list[int]:
    judge = WrongWayJudge(min_distance_px=40, min_duration_s=0.5, **kwargs)
    verdict_frames = []
    for i, (x, y) in enumerate(points):
        lane = LANE if LANE.contains(x, y) else None
        if judge.update(1, i / fps, x, y, lane) is not None:
            verdict_frames.append(i)
    return verdict_frames


@pytest.mark.parametrize(
    ("name", "points", "expected_frames"),
    [
        ("right way", [(10 + 10 * i, 180) for i in range(30)], []),
        # 10 px/frame backwards: 40 px after 4 frames, but only 0.5 s after 5 frames
        ("wrong way", [(300 - 10 * i, 180) for i in range(30)], [5]),
        ("stop-and-go jitter on the right way",
         [(100 + 10 * min(i, 10) - 12 * (i % 2), 180) for i in range(40)], []),
        ("crossing the lane", [(150 + (i % 3), 100 + 6 * i) for i in range(20)], []),
        ("backing up 30 px then riding on", [(200 - 6 * i, 180) for i in range(5)]
         + [(176 + 10 * i, 180) for i in range(20)], []),
        ("slow wrong way takes longer", [(300 - 2 * i, 180) for i in range(40)], [20]),
        ("outside every lane", [(300 - 10 * i, 50) for i in range(30)], []),
    ],
)
def test_judge(name, points, expected_frames) -> None:
    assert judge_path(points) == expected_frames, name


def test_a_track_is_judged_once_and_memory_is_bounded() -> None:
    judge = WrongWayJudge(min_distance_px=10, min_duration_s=0.1, forget_after_s=1.0)
    hits = [judge.update(1, i / 10, 300 - 10 * i, 160, LANE) for i in range(30)]
    assert sum(h is not None for h in hits) == 1
    judge.update(2, 0.0, 100, 160, LANE)
    judge.forget_stale(5.0)
    assert judge._states == {}


# --- rendered videos ------------------------------------------------------------------------

SCENES = {
    "right_way": ([MovingBox([(3, 20, 190), (40, 300, 190)])], []),
    "wrong_way": ([MovingBox([(3, 300, 190), (40, 20, 190)])], ["wrong"]),
    # stops mid-lane, rocks back and forth by 12 px, then rides on the right way
    "stop_and_go": ([MovingBox([(3, 20, 190), (15, 140, 190), (17, 128, 190), (19, 140, 190),
                                (21, 128, 190), (23, 140, 190), (25, 130, 190),
                                (27, 140, 190), (45, 300, 190)])], []),
    "both": ([MovingBox([(3, 20, 190), (30, 300, 190)], colour_bgr=(40, 160, 40)),
              MovingBox([(45, 300, 190), (75, 20, 190)])], ["wrong"]),
}


def run_scene(tmp_path, name):
    objects, _ = SCENES[name]
    video = render_video(tmp_path / f"{name}.avi", objects, n_frames=80)
    config = camera_config_from_dict(camera_dict())
    pipeline = CameraPipeline(config)
    detector = pipeline.detectors[0]
    tracks: dict[int, set[int]] = defaultdict(set)  # ground-truth object -> track ids
    hub_tracked = detector.hub.tracked

    def spy(backend, tracker, rate, frame, observed_at):
        result = hub_tracked(backend, tracker, rate, frame, observed_at)
        index = spy.index  # the frame being processed (set by on_frame)
        for obj_index, obj in enumerate(objects):
            pos = obj.position(index)
            if pos is None or not len(result.detections):
                continue
            w, h = obj.size_wh
            truth = np.array([[pos[0] - w / 2, pos[1] - h, pos[0] + w / 2, pos[1]]])
            iou = box_iou(truth, result.detections.xyxy)[0]
            if iou.max() > 0.3:
                tracks[obj_index].add(int(result.detections.tracker_id[iou.argmax()]))
        return result

    spy.index = 0
    detector.hub.tracked = spy

    def on_frame(i: int) -> None:
        spy.index = i + 1

    detections = list(run_video(video, config, pipeline=pipeline, on_frame=on_frame))
    pipeline.close()
    return objects, detections, tracks, pipeline.stats


@pytest.mark.parametrize("name", list(SCENES))
def test_rendered_scene(tmp_path, name) -> None:
    objects, expected = SCENES[name]
    _, detections, tracks, stats = run_scene(tmp_path, name)
    assert stats["detector_errors"] == 0
    # one object is one track, and different objects never share one
    assert sorted(tracks) == list(range(len(objects)))
    assert all(len(ids) == 1 for ids in tracks.values()), tracks
    assert len({next(iter(ids)) for ids in tracks.values()}) == len(objects)
    assert [d.kind for d in detections] == ["wrong_way_ebike"] * len(expected)
    if expected:
        wrong_object = len(objects) - 1
        (track,) = tracks[wrong_object]
        assert detections[0].track_id == f"cam-1:{track}"
        assert detections[0].attributes["lane"] == "bike"


@pytest.mark.parametrize("arrow", [[[0, 300], [768, 300]], [[768, 300], [0, 300]]])
def test_vtest_people_walking_both_ways(vtest_avi, arrow) -> None:
    """Real video: with the lane pointing either way, someone walks against it."""
    config = camera_config_from_dict(camera_dict(
        source_id="vtest",
        lanes=[{"name": "walkway", "polygon_xy": [[0, 150], [768, 150], [768, 576], [0, 576]],
                "direction_xy": arrow}],
        detectors=[{"type": "wrong_way_ebike",
                    "backend": {"type": "motion", "min_area_px": 600},
                    "min_distance_px": 60, "min_duration_s": 1.0}],
    ))
    detections = list(run_video(vtest_avi, config, max_frames=200))
    assert len(detections) >= 2
    assert len({d.track_id for d in detections}) == len(detections)  # once per track
