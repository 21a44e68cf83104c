"""The fault-injection matrix of issue 12 (part 7): every case, real processes, one table.

    PYTHONPATH=. python benchmarks/fault_matrix.py [--count 2000] [--rate 300]
        [--cases SUBSTRING[,SUBSTRING...]] [--store sqlite|postgres|both]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test] [--json OUT.json]

Each case runs a private Mosquitto, ``gridwatch serve`` (tickets in SQLite, or in a fresh
PostgreSQL database that is dropped afterwards), a real edge agent in a child process that
commits ``--count`` detections at ``--rate`` per second, and a dead-letter listener; the
case's scenario stops and kills them (``tests/support/faults.py`` says how, and how each
column is counted). It prints, per case: accepted at the edge, committed, dead-lettered,
lost, duplicated, refused at the edge (far-future clocks), re-sent (the edge's persistent
total) and seconds. Exit status 1 if any case lost or duplicated anything (but the last,
"receipts off", which shows what the issue's broker crash cost before receipts).

The edge's ``receipt_timeout_s`` is 3 s here (120 s by default), so a case's re-sends come
within its run. ``tests/faults/`` runs five of these cases in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the rig lives in tests/support
    sys.path.insert(0, str(ROOT))

from tests.support.faults import CASES, TABLE_HEAD, run_case, scratch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="detections per case")
    parser.add_argument("--rate", type=float, default=300.0, help="detections per second")
    parser.add_argument("--cases", help="only cases whose name contains one of these "
                                        "(comma-separated)")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0,
                        help="how long a case may take to empty the edge's outbox")
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.cases.split(",")] if args.cases else None
    cases = [c for c in CASES
             if (args.store == "both" or c.store == args.store)
             and (wanted is None or any(w in c.name for w in wanted))]
    if not cases:
        parser.error(f"no case matches --cases {args.cases!r} --store {args.store}")
    print(f"{len(cases)} cases, {args.count:,} detections each at {args.rate:g}/s",
          flush=True)
    print(TABLE_HEAD, flush=True)
    outcomes = []
    for case in cases:
        with scratch() as workdir:
            outcome = run_case(case, workdir, count=args.count, rate=args.rate,
                               postgres_url=args.postgres_url,
                               drain_timeout_s=args.drain_timeout_s)
        outcomes.append(outcome)
        print(outcome.row() + (f" {outcome.notes}" if outcome.notes else "")
              + (f" lost e.g. {outcome.lost_ids[:3]}" if outcome.lost else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2),
                             encoding="utf-8")
    # "receipts off" shows what the same fault cost before receipts: it may lose
    bad = [o for o, c in zip(outcomes, cases, strict=True)
           if c.receipts and (o.lost or o.duplicated)]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
