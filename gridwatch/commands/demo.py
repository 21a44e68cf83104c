"""``gridwatch demo``: the embedded single-box pipeline on sample_data/, then the API.

Sensor and camera detections from ``sample_data/detections.jsonl`` (shifted by whole hours
so that they end now; ``--keep-times``: as recorded) and the detections the weight-free
wrong-way detector finds in a small rendered video flow through the embedded pipeline
(validate → cell → dedup → incidents → tickets in SQLite) as if they happened live; then
the demo's named people work the tickets (``demo_story``) while the escalator runs, so the
loop is there in every state. The tickets are printed and served by the console and the API
on 127.0.0.1 until Ctrl-C (``--once``: print and exit).
The demo box is edge and centre at once: the video's snapshots are put straight into the
centre's evidence store (``<data-dir>/evidence``), so its ticket's ``snapshot_urls`` open
in the API; the sample file's ``file://`` snapshots name images that do not exist, so their
links answer 404.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from gridwatch.commands._common import load_grid, load_gridwatch_config
from gridwatch.errors import UserError

# package data (the ``sample_data`` package), so an installed wheel runs the same demo
SAMPLE = Path(str(resources.files("sample_data")))
VISION_MODULES = frozenset({"cv2", "onnxruntime", "supervision", "trackers"})
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
    parser.add_argument("--keep-times", action="store_true",
                        help="keep the sample's own event times (by default they are "
                             "shifted by whole hours so that the last one falls within "
                             "the past hour)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.set_defaults(func=run)


def _video_detections(data_dir: Path, delta: timedelta) -> list[Any]:
    """Detections the motion backend finds in the rendered sample video; none (and a
    line saying which extra to install) without the ``vision`` extra."""
    try:
        return _run_sample_video(data_dir, delta)
    except ModuleNotFoundError as exc:
        # the vision modules are imported where they are first used (rendering, the
        # backends), not at the top of detectors.sample: the whole run is guarded
        if exc.name not in VISION_MODULES:
            raise
        print(f"video: skipped ({exc.name} is not installed; "
              f"pip install 'gridwatch[vision]')")
        return []


def _run_sample_video(data_dir: Path, delta: timedelta) -> list[Any]:
    from detectors.camera import load_camera_config
    from detectors.sample import render_sample_video, run_video

    camera_yaml = SAMPLE / "cameras" / "demo_camera.yaml"
    try:
        camera = load_camera_config(camera_yaml)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    camera = camera.model_copy(update={"snapshot_dir": data_dir / "snapshots"})
    video = data_dir / "sample_video.avi"
    render_sample_video(video)
    # the camera's clock moves with the sample's (its event ids carry the time)
    start = camera.start + delta if camera.start is not None else None
    detections = list(run_video(video, camera, start=start))
    print(f"video: {video} -> {len(detections)} detection(s) from the wrong-way detector")
    return detections


def shift_for(lines: list[bytes], now: datetime) -> timedelta:
    """Whole hours that move the latest event time in ``lines`` into the hour before
    ``now`` (whole hours keep every hourly bin of the hot-spot statistics intact)."""
    latest = max((at for at in map(_observed_at, lines) if at is not None), default=None)
    if latest is None:
        return timedelta(0)
    return timedelta(hours=(now - latest) // timedelta(hours=1))


def shift_line(raw: bytes, delta: timedelta) -> bytes:
    """``raw`` with its ``observed_at`` moved by ``delta`` (offset kept); a line without a
    valid time is left as it is, for the pipeline to reject with its reason."""
    if not delta or _observed_at(raw) is None:
        return raw
    data = json.loads(raw)
    data["observed_at"] = (datetime.fromisoformat(data["observed_at"]) + delta).isoformat()
    return json.dumps(data, ensure_ascii=False).encode()


def _observed_at(raw: bytes) -> datetime | None:
    try:
        at = datetime.fromisoformat(json.loads(raw)["observed_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a malformed line: the pipeline will say why
    return at if at.tzinfo is not None else None


def run(args: argparse.Namespace) -> int:
    from gridwatch.embedded import EmbeddedPipeline
    from ticketing.deliveries import DeliveryTargets
    from ticketing.evidence import EvidenceStore, evidence_path
    from ticketing.store import SqliteTicketStore

    config = load_gridwatch_config(args.config)
    grid = load_grid(args.grid)
    data_dir: Path = args.data_dir
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    db = data_dir / "tickets.sqlite3"
    store = SqliteTicketStore(db, webhooks=DeliveryTargets.from_settings(config.ticketing))
    # the sample plays as if it had happened live: the centre received each detection
    # at its (shifted) event time, so deadlines ran out in the past as they would have
    pipeline = EmbeddedPipeline(config, grid, store, received=None)
    evidence = EvidenceStore.beside(store, db, config.evidence)
    try:
        lines = args.detections.read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"{args.detections}: cannot read: {exc.strerror or exc}") from None
    # the camera reports as it sees, so its detections go in among the file's lines at
    # their event time (the file is in delivery order)
    delta = timedelta(0) if args.keep_times else shift_for(lines, datetime.now(UTC))
    if delta:
        lines = [shift_line(raw, delta) for raw in lines]
        print(f"event times shifted by {delta.days} d {delta.seconds // 3600} h so that "
              f"the sample ends now (--keep-times: as recorded)")
    video = [] if args.no_video else sorted(_video_detections(data_dir, delta),
                                            key=lambda d: d.observed_at)
    for detection in video:
        _keep_snapshot(evidence, detection)
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
    pipeline.close()
    password = _play_the_loop(store, config, now=datetime.now(UTC))
    tickets = list(store.all())
    print(f"{len(tickets)} tickets in {db}:")
    for t in tickets:
        card = "" if t.escalation.value == "none" else f"  [{t.escalation.value}]"
        print(f"  {t.ticket_id}  {t.kind:<17} {t.cell_id:<11} {t.town or '-':<9} "
              f"{t.status.value:<15} {t.department:<20} due {t.due_at:%Y-%m-%d %H:%M}Z  "
              f"{len(t.event_ids)} detection(s){card}")
    holders = {e: t for t in tickets for e in t.event_ids}
    for detection in video:
        ticket = holders.get(detection.event_id)
        where = (f"is evidence on ticket {ticket.ticket_id} ({ticket.kind}, "
                 f"{ticket.cell_id})" if ticket else "is in no ticket (not significant alone)")
        snapshot = (f"; snapshot at {evidence_path(detection.event_id)}"
                    if evidence.get(detection.event_id) else "")
        print(f"video detection {detection.event_id} {where}{snapshot}")
    if args.once:
        return 0
    return _serve(store, config, grid, args.host, args.port, evidence, password)


def _play_the_loop(store: Any, config: Any, *, now: datetime) -> str:
    """The demo's people work the tickets (``demo_story``); returns their password."""
    from gridwatch.commands.demo_story import add_accounts, play
    from ticketing.routing import Rules
    from ticketing.users import UserStore

    password = add_accounts(UserStore(store, departments=config.ticketing.departments),
                            now=now)
    done = play(store, Rules(config.policies, config.ticketing),
                config.ticketing.escalation, now=now)
    print(f"the demo's operator and departments acted {done['steps']} times; the "
          f"escalator gave {done['cards']} reminder(s) and card(s)")
    return password


def _keep_snapshot(evidence: Any, detection: Any) -> None:
    """What the edge would send and the centre keep, done in place on the demo box."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    from ticketing.evidence import EvidenceRejected, sniff_content_type

    url = detection.evidence.snapshot_url if detection.evidence else None
    if not url or not url.startswith("file://"):
        return
    try:
        image = Path(url2pathname(urlsplit(url).path)).read_bytes()
        evidence.put(event_id=detection.event_id, station_id=detection.station_id,
                     source_id=detection.source_id,
                     content_type=sniff_content_type(image) or "", image=image)
    except (OSError, EvidenceRejected) as exc:
        print(f"video: snapshot of {detection.event_id} not kept: {exc}")


def _serve(store: Any, config: Any, grid: Any, host: str, port: int, evidence: Any,
           password: str) -> int:
    import uvicorn

    from ticketing.api.app import create_app
    from ticketing.auth import TokenAuth

    # the local demo lets anyone on this machine read; every change still needs a token
    try:
        auth = TokenAuth.from_env(anonymous_read=True)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    token = auth.ensure_admin_token()
    try:
        app = create_app(store=store, settings=config.ticketing, policies=config.policies,
                         grid=grid, auth=auth, run_workers=True, evidence=evidence)
    except ValueError as exc:  # e.g. a webhook's HMAC key missing from the environment
        raise UserError(str(exc)) from None
    print(f"\nconsole: http://{host}:{port}/  (review queue, map, supervision, 考核)")
    print(f"API: http://{host}:{port}/tickets  (OpenAPI docs at /docs; Ctrl-C to stop)")
    if token:
        print(f"admin token for changes (Authorization: Bearer ...): {token}")
    print(f"log in (the console, POST /auth/login, or /docs) as demo.operator, demo.supervisor, "
          f"demo.fire, demo.security, demo.property or demo.traffic, password {password}")
    month = datetime.now(UTC).strftime("%Y-%m")
    print(f"考核 report: http://{host}:{port}/reports/assessment?month={month}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
