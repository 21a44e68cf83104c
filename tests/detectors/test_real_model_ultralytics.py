"""The ultralytics backend end to end on the real ``best.pt`` (``make test-ultralytics``).

Not collected unless ``GRIDWATCH_TEST_ULTRALYTICS=1`` (see ``conftest.py``): it needs torch
and ultralytics, which the default install and CI leave out. Same video, lane and hand
labels as ``test_real_model.py``, so the two backends are held to the same result.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from detectors.camera import CameraPipeline, camera_config_from_dict
from detectors.sample import iter_frames

from .builders import T0
from .test_real_model import FIXTURE, person_camera, who


def test_ultralytics_backend_reports_the_same_people(person_pt, vtest_avi, capsys) -> None:
    data = person_camera(person_pt)
    data["detectors"][0]["backend"]["type"] = "ultralytics"
    pipeline = CameraPipeline(camera_config_from_dict(data), frame_rate=10.0)
    first, last = FIXTURE["frame_range"]
    reports = []
    started = time.perf_counter()
    for index, frame, _ in iter_frames(vtest_avi):
        if index > last:
            break
        if index < first:
            continue
        for detection in pipeline.process(frame, T0 + timedelta(seconds=index / 10)):
            x1, _, x2, y2 = detection.evidence.bbox_xyxy
            reports.append((index, ((x1 + x2) / 2, y2)))
    elapsed = time.perf_counter() - started
    hub = pipeline.context.hub
    assert hub is not None
    analysed = pipeline.stats["frames_analysed"]
    with capsys.disabled():  # the figures for docs/detectors.md, not a pass/fail
        sys.stderr.write(f"\nultralytics: {1000 * elapsed / analysed:.1f} ms per analysed "
                         f"frame, {1000 * hub.inference_s / analysed:.1f} ms in predict()\n")
    pipeline.close()
    assert pipeline.stats["frames_failed"] == 0
    against = [who(FIXTURE["against"], frame, xy) for frame, xy in reports]
    assert all(who(FIXTURE["with_lane"], frame, xy) is None for frame, xy in reports)
    assert None not in against
    assert sorted(against) == list(range(len(FIXTURE["against"])))
