"""Video detector figures: motion fps at 720p, ONNX overhead, 4 cameras on one box.

    python benchmarks/video_bench.py [--frames 150] [--out benchmarks/video_bench.json]

1. Motion backend (weight-free wrong-way pipeline) frames/s on a 1280×720 rendered video.
2. ONNX backend: end-to-end time (letterbox + inference + decode + NMS + tracking +
   decision) over pure ``session.run`` time on the same frames. The model is a synthetic
   YOLO-layout conv net built in memory (no weights exist here to download), sized to cost
   about what a nano YOLO costs on CPU.
3. Four cameras in one process with sampling (every 2nd frame) and motion gating on:
   aggregate frames/s handled and peak RSS.
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
    from detectors.testing.models import make_conv_yolo_onnx

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
    args = parser.parse_args()
    # Four cameras first, so peak RSS is theirs and not the ONNX frame buffer's.
    results = {"four_cameras_720p": bench_four_cameras(args.frames)}
    results["motion_720p"] = bench_motion(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        results["onnx_720p"] = bench_onnx(min(60, args.frames), Path(tmp), args.onnx_width)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
