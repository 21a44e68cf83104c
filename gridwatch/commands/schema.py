"""``gridwatch schema detection``: print the JSON Schema of a wire contract."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("schema", help="print the JSON Schema of a contract")
    parser.add_argument("name", choices=["detection"], help="which contract")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detectors.schema import detection_json_schema

    print(json.dumps(detection_json_schema(), indent=2, ensure_ascii=False))
    return 0
