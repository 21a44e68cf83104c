"""``gridwatch detect VIDEO --camera CAMERA.yaml --out detections.jsonl``: offline video run."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from gridwatch.errors import UserError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="run a camera's detectors over a video file, write detections as JSONL",
        description="Run the detectors of CAMERA.yaml over VIDEO and write one detection v1 "
        "JSON object per line. Event time of frame i is START + i / fps, so runs are "
        "deterministic.",
    )
    parser.add_argument("video", type=Path, help="video file (anything OpenCV reads)")
    parser.add_argument("--camera", type=Path, required=True, help="camera config YAML")
    parser.add_argument("--out", type=Path, required=True, help="detections JSONL to write")
    parser.add_argument(
        "--start", help="RFC 3339 event time of frame 0 (default: the camera's 'start', "
        "else 2026-01-01T08:00:00+08:00)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument("--snapshots", type=Path, default=None,
                        help="write JPEG evidence here (overrides the camera's snapshot_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _parse_start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--start: not an RFC 3339 time: {text!r}") from None
    if value.tzinfo is None:
        raise UserError(f"--start: needs a UTC offset, e.g. {text}+08:00")
    return value


def run(args: argparse.Namespace) -> int:
    from detectors.camera import CameraPipeline, load_camera_config
    from detectors.sample import run_video, video_frame_count

    start = _parse_start(args.start)
    try:
        config = load_camera_config(args.camera)
        if args.snapshots is not None:
            config = config.model_copy(update={"snapshot_dir": args.snapshots})
        pipeline = CameraPipeline(config)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not args.video.is_file():
        pipeline.close()
        raise UserError(f"video not found: {args.video}")
    total = video_frame_count(args.video)
    if args.max_frames is not None:
        total = min(total or args.max_frames, args.max_frames)
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc=args.video.name, file=sys.stderr)
        except ImportError:
            bar = None
    count = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with args.out.open("w", encoding="utf-8") as out:
            for detection in run_video(
                args.video, config, start=start, max_frames=args.max_frames,
                on_frame=(lambda _i: bar.update(1)) if bar is not None else None,
                pipeline=pipeline,
            ):
                out.write(detection.to_json() + "\n")
                count += 1
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
        pipeline.close()
    stats = pipeline.stats
    print(
        f"{args.video}: {stats['frames_in']} frames, {stats['frames_analysed']} analysed "
        f"({stats['frames_gated']} static skipped, {stats['frames_sampled_out']} sampled out), "
        f"{count} detections -> {args.out}",
        file=sys.stderr,
    )
    if stats["detector_errors"]:
        print(f"warning: {stats['detector_errors']} detector errors (see log)", file=sys.stderr)
    return 0
