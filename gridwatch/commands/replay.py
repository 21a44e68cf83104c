"""``gridwatch replay``: detections file in, tickets file out (see DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gridwatch.commands._common import load_grid, load_gridwatch_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay a detections JSONL file into tickets (deterministic)",
        description="Process detections in event time, with no services and no wall "
                    "clock: the same input gives byte-identical output.")
    parser.add_argument("detections", type=Path, metavar="DETECTIONS.jsonl")
    parser.add_argument("--grid", type=Path, required=True, metavar="GRID.geojson")
    parser.add_argument("--config", type=Path, metavar="FILE.yaml",
                        help="merged over configs/default.yaml")
    parser.add_argument("--tickets-out", type=Path, required=True, metavar="TICKETS.jsonl")
    parser.add_argument("--rejects-out", type=Path, metavar="REJECTS.jsonl")
    parser.add_argument("--summary-json", action="store_true",
                        help="print the summary as one JSON object instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gridwatch.replay import run_replay

    config = load_gridwatch_config(args.config)
    grid = load_grid(args.grid)
    result = run_replay(detections=args.detections, grid=grid, config=config,
                        tickets_out=args.tickets_out, rejects_out=args.rejects_out)
    if args.summary_json:
        print(json.dumps(result.summary.as_dict(), sort_keys=True))
    else:
        print(result.summary.render())
    sys.stdout.flush()
    return 0
