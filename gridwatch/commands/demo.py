"""``gridwatch demo``: the embedded single-box pipeline on sample_data/, then the API.

Sensor and camera detections from ``sample_data/detections.jsonl`` and the detections the
weight-free wrong-way detector finds in a small rendered video flow through the embedded
pipeline (validate → cell → dedup → incidents → tickets in SQLite); the tickets are
printed and served by the read API on 127.0.0.1 until Ctrl-C (``--once``: print and exit).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from gridwatch.commands._common import load_grid, load_gridwatch_config
from gridwatch.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the embedded pipeline on sample data "
                                                "and serve the tickets")
    parser.add_argument("--once", action="store_true",
                        help="run the pipeline, print the summary and exit")
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"),
                        help="where the demo keeps its SQLite database (recreated)")
    parser.add_argument("--detections", type=Path, default=SAMPLE / "detections.jsonl")
    parser.add_argument("--grid", type=Path, default=SAMPLE / "grid.geojson")
    parser.add_argument("--config", type=Path, help="merged over configs/default.yaml")
    parser.add_argument("--no-video", action="store_true",
                        help="skip the rendered sample video (no OpenCV needed)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.set_defaults(func=run)


def _video_detections(data_dir: Path) -> list[Any]:
    """Detections the motion backend finds in the rendered sample video."""
    try:
        from detectors.camera import load_camera_config
        from detectors.sample import render_sample_video, run_video
    except ImportError as exc:
        print(f"video: skipped ({exc.name or exc} is not installed; "
              f"pip install -e '.[vision]')")
        return []
    camera_yaml = SAMPLE / "cameras" / "demo_camera.yaml"
    try:
        camera = load_camera_config(camera_yaml)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    video = data_dir / "sample_video.avi"
    render_sample_video(video)
    detections = list(run_video(video, camera))
    print(f"video: {video} -> {len(detections)} detection(s) from the wrong-way detector")
    return detections


def _observed_at(raw: bytes) -> datetime | None:
    try:
        at = datetime.fromisoformat(json.loads(raw)["observed_at"])
    except (ValueError, KeyError, TypeError):
        return None  # a malformed line: the pipeline will say why
    return at if at.tzinfo is not None else None


def run(args: argparse.Namespace) -> int:
    from gridwatch.embedded import EmbeddedPipeline
    from ticketing.store import SqliteTicketStore

    config = load_gridwatch_config(args.config)
    grid = load_grid(args.grid)
    data_dir: Path = args.data_dir
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    db = data_dir / "tickets.sqlite3"
    store = SqliteTicketStore(db)
    pipeline = EmbeddedPipeline(config, grid, store)
    try:
        lines = args.detections.read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"{args.detections}: cannot read: {exc.strerror or exc}") from None
    # the camera reports as it sees, so its detections go in among the file's lines at
    # their event time (the file is in delivery order)
    video = [] if args.no_video else sorted(_video_detections(data_dir),
                                            key=lambda d: d.observed_at)
    pending = list(video)
    rejected = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        at = _observed_at(raw)
        while pending and at is not None and pending[0].observed_at <= at:
            pipeline.submit(pending.pop(0))
        result = pipeline.submit_raw(raw, origin=f"{args.detections}:{number}")
        if not result.accepted:
            rejected += 1
            print(f"rejected line {number}: {result.code}: {result.reason}")
    for detection in pending:
        pipeline.submit(detection)
    pipeline.flush()
    stats = pipeline.stats()
    stream = stats["stream"]
    print(f"\n{len(lines)} lines: {stats['accepted']} accepted, {rejected} rejected, "
          f"{stats['duplicates']} duplicates, {stream['out_of_area']} out of area, "
          f"{stream['self_tests']} self-tests, {stream['incidents']} incidents, "
          f"{stream['occurrences']} occurrences, {stream['hotspots']} hot spots")
    tickets = list(store.all())
    print(f"{len(tickets)} tickets in {db}:")
    for t in tickets:
        print(f"  {t.ticket_id}  {t.kind:<17} {t.cell_id:<11} {t.town or '-':<9} "
              f"{t.status.value:<15} {t.department:<20} due {t.due_at:%Y-%m-%d %H:%M}Z  "
              f"{len(t.event_ids)} detection(s)")
    holders = {e: t for t in tickets for e in t.event_ids}
    for detection in video:
        ticket = holders.get(detection.event_id)
        where = (f"is evidence on ticket {ticket.ticket_id} ({ticket.kind}, "
                 f"{ticket.cell_id})" if ticket else "is in no ticket (not significant alone)")
        print(f"video detection {detection.event_id} {where}")
    pipeline.close()
    if args.once:
        return 0
    return _serve(store, config, grid, args.host, args.port)


def _serve(store: Any, config: Any, grid: Any, host: str, port: int) -> int:
    import uvicorn

    from ticketing.api.app import create_app
    from ticketing.auth import TokenAuth

    # the local demo lets anyone on this machine read; every change still needs a token
    try:
        auth = TokenAuth.from_env(anonymous_read=True)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    token = auth.ensure_admin_token()
    app = create_app(store=store, settings=config.ticketing, policies=config.policies,
                     grid=grid, auth=auth, run_workers=True)
    print(f"\nAPI: http://{host}:{port}/tickets  (OpenAPI docs at /docs; Ctrl-C to stop)")
    if token:
        print(f"admin token for changes (Authorization: Bearer ...): {token}")
    print(f"named accounts for POST /auth/login: gridwatch users add NAME --role operator "
          f"--tickets-url {getattr(store, 'path', 'the demo database')}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
