"""The ultralytics backend end to end on the real ``best.pt`` (``make test-ultralytics``).

Not collected unless ``GRIDWATCH_TEST_ULTRALYTICS=1`` (see ``conftest.py``): it needs torch
and ultralytics, which the default install and CI leave out. Same video, lane and hand
labels as ``test_real_model.py``, so the two backends are held to the same result.
"""

from __future__ import annotations

import sys
import time

from detectors.camera import CameraPipeline, camera_config_from_dict

from .test_real_model import FIXTURE, foot_points_reported, person_camera, who


def test_ultralytics_backend_reports_the_same_people(person_pt, vtest_avi, capsys) -> None:
    data = person_camera(person_pt)
    data["detectors"][0]["backend"]["type"] = "ultralytics"
    pipeline = CameraPipeline(camera_config_from_dict(data), frame_rate=10.0)
    started = time.perf_counter()
    reports = foot_points_reported(pipeline, vtest_avi)
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
