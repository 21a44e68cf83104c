"""``gridwatch detectors list`` / ``check``: installed detector plug-ins and camera configs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gridwatch.errors import UserError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("detectors", help="detector plug-ins")
    sub = parser.add_subparsers(dest="detectors_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="installed plug-ins (entry points gridwatch.detectors)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    check = sub.add_parser(
        "check", help="validate a camera YAML, start its detectors and push synthetic "
        "frames through the whole chain (model I/O, decoding, NMS, tracker, decision)")
    check.add_argument("camera", type=Path, help="camera config YAML")
    check.set_defaults(func=run_check)


def run_list(args: argparse.Namespace) -> int:
    from detectors.api import load_plugins

    registry = load_plugins(refresh=True)
    rows = [
        {"name": name, "kinds": list(p.kinds), "origin": registry.origins[name],
         "config": p.config_model.__module__ + "." + p.config_model.__name__,
         "description": p.description}
        for name, p in sorted(registry.plugins.items())
    ]
    if args.json:
        print(json.dumps({"plugins": rows, "errors": registry.errors}, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']:<22} {row['origin']:<28} {row['description']}")
    for name, error in sorted(registry.errors.items()):
        print(f"{name:<22} BROKEN: {error}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from detectors.camera import check_camera, load_camera_config

    try:
        config = load_camera_config(args.camera)
        roles = check_camera(config)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    types = ", ".join(d.type for d in config.detectors)  # type: ignore[attr-defined]
    print(f"{args.camera}: ok ({config.station_id}/{config.source_id}: {types})"
          + (f"; classes {roles}" if roles else ""))
    return 0
