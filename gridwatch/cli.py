"""The ``gridwatch`` command line.

Each sub-command lives in ``gridwatch/commands/<name>.py`` and exposes
``register(subparsers)``; it sets ``func`` on its parser. Errors a user can fix
(:class:`gridwatch.errors.UserError`, a bad grid or config) print one line and exit 2; so
does a command that needs an optional dependency that is not installed (it names the
extra to install).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from configs.reader import ConfigFileError
from gridwatch.errors import UserError

# Optional dependencies by top-level module: a command that reaches one that is not
# installed says which extra to install instead of printing a traceback.
EXTRA_FOR_MODULE = {
    "cv2": "vision", "onnxruntime": "vision", "supervision": "vision", "trackers": "vision",
    "tqdm": "vision", "ultralytics": "ultralytics", "torch": "ultralytics",
    "torchvision": "ultralytics", "faust": "kafka", "aiokafka": "kafka",
    "psycopg": "postgres", "matplotlib": "report",
}

# Order is the order in ``gridwatch --help``.
COMMAND_MODULES = (
    "replay",
    "demo",
    "serve",
    "users",
    "schema",
    "grid",
    "detect",
    "detectors",
    "edge",
    "report",
    "worker",
    "bridge",
    "hotspots",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridwatch",
        description="GridWatch: sensor and camera detections in, accountable work orders out.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"gridwatch.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gridwatch.commands.{name}":
                continue  # a command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = args.func(args)
    except (UserError, ConfigFileError) as exc:
        print(f"gridwatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRA_FOR_MODULE.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"gridwatch {args.command}: error: this needs {exc.name}, which comes with "
              f"the '{extra}' extra: pip install 'gridwatch[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
