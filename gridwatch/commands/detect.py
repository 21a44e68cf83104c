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
    parser.add_argument("--annotate", type=Path, default=None, metavar="OUT.mp4",
                        help="write the analysed frames with boxes, track ids, lanes and "
                        "their allowed direction, and verdicts drawn (for tuning)")
    parser.add_argument("--tracks-out", type=Path, default=None, metavar="TRACKS.jsonl",
                        help="write every track (role, first/last time, path of "
                        "bottom-centre points) as JSONL (for tuning)")
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


#: ``gridwatch detect`` fails (exit 1) when more than this share of analysed frames failed.
MAX_FAILED_SHARE = 0.5


def run(args: argparse.Namespace) -> int:
    import time

    import cv2  # noqa: F401  -- the 'vision' extra; a missing one is named before anything

    from detectors.camera import (
        CameraPipeline,
        check_camera,
        effective_frame_rate,
        load_camera_config,
    )
    from detectors.sample import run_video, video_fps, video_frame_count
    from detectors.tuning import TrackRecorder, VideoAnnotator

    start = _parse_start(args.start)
    if not args.video.is_file():
        raise UserError(f"video not found: {args.video}")
    try:
        config = load_camera_config(args.camera)
        if args.snapshots is not None:
            config = config.model_copy(update={"snapshot_dir": args.snapshots})
        rate = effective_frame_rate(config, video_fps(args.video), origin=str(args.video))
        check_camera(config)
        pipeline = CameraPipeline(config, frame_rate=rate)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    recorder = TrackRecorder(pipeline) if args.tracks_out is not None else None
    annotator = None
    if args.annotate is not None:
        try:
            annotator = VideoAnnotator(pipeline, args.annotate)
        except ValueError as exc:
            pipeline.close()
            raise UserError(str(exc)) from None
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
    started = time.perf_counter()
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
        if annotator is not None:
            annotator.close()
        pipeline.close()
    elapsed = max(time.perf_counter() - started, 1e-9)
    stats = pipeline.stats
    print(
        f"{args.video}: {stats['frames_in']} frames at {pipeline.frame_rate:g} fps, "
        f"{stats['frames_analysed']} analysed "
        f"({stats['frames_gated']} static skipped, {stats['frames_sampled_out']} sampled out), "
        f"{count} detections -> {args.out}; "
        f"{stats['frames_in'] / elapsed:.1f} frames/s read, "
        f"{stats['frames_analysed'] / elapsed:.1f} analysed frames/s",
        file=sys.stderr,
    )
    if recorder is not None:
        n_tracks = recorder.write(args.tracks_out)
        print(f"{n_tracks} tracks -> {args.tracks_out}", file=sys.stderr)
    if annotator is not None:
        print(f"{annotator.frames_written} annotated frames -> {args.annotate}", file=sys.stderr)
    failed = stats["frames_failed"]
    if failed:
        print(f"warning: detectors failed on {failed} of {stats['frames_analysed']} analysed "
              f"frames; last: {pipeline.last_error}", file=sys.stderr)
    if stats["frames_analysed"] and failed > MAX_FAILED_SHARE * stats["frames_analysed"]:
        print("error: most frames failed; the detections are not trustworthy",
              file=sys.stderr)
        return 1
    return 0
