"""``gridwatch hotspots``: the hot-spot engine's durable state in the ticket store.

``warm-up DETECTIONS.jsonl`` seeds the baselines from history, so a new installation
does not wait out the warm-up (``hotspot.warmup_s``, 7 days) blind: the detections are
replayed through the stream stage (no tickets) and the resulting state is written as the
checkpoint ``gridwatch serve`` restores at start. ``status`` shows what is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geo.grid import Grid
from gridwatch.commands._common import load_grid, load_gridwatch_config
from gridwatch.config import GridWatchConfig
from gridwatch.errors import UserError

HOUR_S = 3600


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hotspots", help="hot-spot state: warm up baselines from history, show the state",
        description="The hot-spot engine's durable state (baselines, windows, open hot "
                    "spots), kept in the ticket store and restored by gridwatch serve.")
    commands = parser.add_subparsers(dest="hotspots_command", metavar="ACTION",
                                     required=True)
    warm = commands.add_parser(
        "warm-up", help="seed the baselines from a detections JSONL history",
        description="Replay a history of detections (JSONL, detection v1) through the "
                    "stream stage without making tickets, and store the hot-spot state "
                    "it learned as the checkpoint gridwatch serve starts from. Use the "
                    "history up to the moment live input starts: hours between its end "
                    "and the first live detection are learned as hours with no riders.")
    warm.add_argument("detections", type=Path, metavar="DETECTIONS.jsonl")
    warm.add_argument("--grid", type=Path, required=True, metavar="GRID.geojson",
                      help="the grid gridwatch serve runs with")
    _store_arguments(warm)
    warm.add_argument("--replace", action="store_true",
                      help="overwrite hot-spot state already in the store (else refused)")
    warm.set_defaults(func=run_warm_up)
    status = commands.add_parser("status", help="show the stored hot-spot state")
    _store_arguments(status)
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=run_status)


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE.yaml",
                        help="merged over configs/default.yaml (as for serve)")
    parser.add_argument("--db", default="gridwatch-data/tickets.db",
                        help="SQLite ticket store, unless $GRIDWATCH_TICKETS_URL or "
                             "ticketing.storage_url is set (default: %(default)s, as for "
                             "serve)")


@dataclass(slots=True)
class WarmUp:
    """What a warm-up read and learned."""

    read: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    other_kinds: int = 0  # incident kinds: not part of the hot-spot state
    first_at: datetime | None = None
    last_at: datetime | None = None
    occurrences: int = 0
    warm_cells: dict[str, int] = field(default_factory=dict)  # kind -> cells warmed up


def warm_up(lines: Any, grid: Grid, config: GridWatchConfig) -> tuple[bytes, WarmUp]:
    """Replay ``lines`` (detection JSONL, bytes or str) through the stream stage; the
    checkpoint of the hot-spot state it ends with (the last hour left open: live input
    continues it) and a summary."""
    from gridwatch.embedded import centre_evidence_link
    from gridwatch.pipeline import Pipeline, read_lines
    from stream import hotspot_state
    from stream.policy import Mode
    from ticketing.store import MemoryTicketStore

    pipeline = Pipeline(config, grid, MemoryTicketStore())
    summary = WarmUp()
    hotspot_kind: dict[str, bool] = {}
    for lines_in in read_lines(lines):
        summary.read += lines_in.read
        for _, exc, _ in lines_in.refused:
            summary.rejected[exc.code.value] = summary.rejected.get(exc.code.value, 0) + 1
        batch = []
        for detection in lines_in.valid:
            kind = detection.kind
            if kind not in hotspot_kind:
                hotspot_kind[kind] = config.policies.for_kind(kind).mode is Mode.HOTSPOT
            if not hotspot_kind[kind]:
                summary.other_kinds += 1
                continue
            at = detection.observed_at
            summary.first_at = at if summary.first_at is None else min(summary.first_at, at)
            summary.last_at = at if summary.last_at is None else max(summary.last_at, at)
            # the state seeds the live centre, whose tickets link to its own copies of
            # the snapshots (as EmbeddedPipeline does with live detections)
            batch.append(centre_evidence_link(detection))
        pipeline.stream(batch)  # findings of the history are not ticketed
    processor = pipeline.processor
    processor.release()
    summary.occurrences = processor.stats.occurrences
    body = hotspot_state.dump(processor)
    meta, arrays = hotspot_state.read(body)
    summary.warm_cells = _warm_counts(meta, arrays, config.hotspot.warmup_s)
    return body, summary


def _warm_counts(meta: dict[str, Any], arrays: dict[str, Any], warmup_s: int
                 ) -> dict[str, int]:
    """Per kind, how many cells have at least ``warmup_s`` of history at the open hour."""
    hour = meta["hour"]
    out: dict[str, int] = {}
    if hour is None:
        return out
    for k, saved in enumerate(meta["kinds"]):
        first = arrays[f"k{k}.first_hour"]
        active = arrays[f"k{k}.active"]
        out[saved["kind"]] = int(((hour - first) * HOUR_S >= warmup_s)[active].sum())
    return out


def _open_store(args: argparse.Namespace, config: GridWatchConfig) -> Any:
    from ticketing.store import configured_url, open_store

    # as for serve: $GRIDWATCH_TICKETS_URL wins, then ticketing.storage_url, then --db
    url = configured_url(config.ticketing.storage_url, default=args.db)
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
    try:
        return open_store(url)
    except ValueError as exc:
        raise UserError(f"ticket store: {exc}") from None


def run_warm_up(args: argparse.Namespace) -> int:
    from gridwatch.embedded import CHECKPOINT_NAME
    from gridwatch.replay import open_input
    from stream import hotspot_state
    from ticketing import checkpoints

    config = load_gridwatch_config(args.config)
    grid = load_grid(args.grid)
    store = _open_store(args, config)
    try:
        with store.connection() as conn:
            saved = checkpoints.load(conn, name=CHECKPOINT_NAME)
        if not saved.empty and not args.replace:
            raise UserError(f"the ticket store already holds hot-spot state (checkpoint of "
                            f"{saved.saved_at}, {len(saved.journal)} journal entries); "
                            f"--replace to overwrite it")
        with open_input(args.detections) as handle:
            body, summary = warm_up(handle, grid, config)
        if summary.last_at is None:
            raise UserError(f"{args.detections}: no detections of a hot-spot kind "
                            f"({summary.read} lines read); nothing stored")
        with store.transaction() as conn:
            checkpoints.save_checkpoint(conn, name=CHECKPOINT_NAME,
                                        format=hotspot_state.FORMAT, body=body,
                                        saved_at=datetime.now(UTC))
    finally:
        store.close()
    assert summary.first_at is not None
    span_h = (summary.last_at - summary.first_at).total_seconds() / HOUR_S
    rejected = sum(summary.rejected.values())
    print(f"hot-spot warm-up from {args.detections}")
    print(f"  read              {summary.read} ({rejected} rejected, "
          f"{summary.other_kinds} of incident kinds skipped)")
    print(f"  history           {summary.first_at.isoformat()} .. "
          f"{summary.last_at.isoformat()} ({span_h / 24:.1f} days)")
    print(f"  occurrences       {summary.occurrences}")
    warm = ", ".join(f"{k} {n}" for k, n in sorted(summary.warm_cells.items())) or "none"
    print(f"  cells warmed up   {warm} (of {len(grid)}; warm-up "
          f"{config.hotspot.warmup_s / 86400:g} days)")
    print(f"  stored            {len(body) / 1e6:.2f} MB as {CHECKPOINT_NAME!r}; "
          f"gridwatch serve starts from it")
    behind_h = (datetime.now(UTC) - summary.last_at).total_seconds() / HOUR_S
    if behind_h > 24:
        print(f"warning: the history ends {behind_h / 24:.1f} days ago; the hours until "
              f"live input starts count as hours with no riders", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from gridwatch.embedded import CHECKPOINT_NAME
    from stream import hotspot_state
    from ticketing import checkpoints

    config = load_gridwatch_config(args.config)
    store = _open_store(args, config)
    try:
        with store.connection() as conn:
            saved = checkpoints.load(conn, name=CHECKPOINT_NAME)
    finally:
        store.close()
    info: dict[str, Any] = {"name": CHECKPOINT_NAME, "checkpoint": saved.body is not None,
                            "journal_batches": len(saved.journal),
                            "journal_detections": sum(len(j.splitlines())
                                                      for j in saved.journal)}
    if saved.body is not None:
        try:
            meta, arrays = hotspot_state.read(saved.body)
        except hotspot_state.CheckpointError as exc:
            raise UserError(f"stored checkpoint: {exc}") from None
        hour = meta["hour"]
        info.update({
            "format": meta["format"], "saved_at": saved.saved_at, "bytes": len(saved.body),
            "open_hour_start": None if hour is None else datetime.fromtimestamp(
                hour * HOUR_S - config.hotspot.utc_offset_s, UTC).isoformat(),
            "kinds": [k["kind"] for k in meta["kinds"]],
            "warm_cells": _warm_counts(meta, arrays, config.hotspot.warmup_s),
            "active_hotspots": {k["kind"]: len(k["hotspots"]) for k in meta["kinds"]},
        })
    if args.json:
        print(json.dumps(info, sort_keys=True))
    else:
        for key, value in info.items():
            print(f"{key:<20} {value}")
    return 0
