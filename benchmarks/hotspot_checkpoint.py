"""Hot-spot checkpoint cost: size, time to write (dump) and to restore, vs number of cells.

    python benchmarks/hotspot_checkpoint.py                    # 2,500 and 10,000 cells
    python benchmarks/hotspot_checkpoint.py --cells 10000 --days 4

The engine is fed a scenario's occurrences directly (traffic as in
``benchmarks/hotspot_cost.py``: ~49 occurrences per cell per day); after ``--days`` (at
least the longest window, so the evidence trails are full: they dominate the size) the
state is dumped and restored a few times. Times are CPU seconds of this process (the
median of ``--rounds``); "dump" is what the embedded service's worker spends once an hour.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BANDS = ((0.6, 5.0, 30.0), (0.3, 30.0, 100.0), (0.1, 100.0, 400.0))


def measure(cells: int, days: int, rounds: int) -> dict[str, float]:
    from gridwatch.config import load_config
    from stream import hotspot_state
    from stream.hotspot import HotspotEngine
    from stream.processor import StreamProcessor
    from tests.support.hotspot_scenarios import Scenario, ScenarioSpec

    config = load_config()
    side = int(round(cells ** 0.5))
    rows, cols = side, max(1, cells // side)
    spec = ScenarioSpec(rows=rows, cols=cols, days=days, seed=7, rate_bands=BANDS,
                        n_clusters=0)
    sc = Scenario.generate(spec)

    def build() -> StreamProcessor:
        return StreamProcessor(config.stream, config.policies,
                               HotspotEngine(config.hotspot, sc.grid))

    processor = build()
    observe = processor.hotspots.observe
    n_occ = 0
    for occ in sc.occurrences():
        observe(occ)
        n_occ += 1
    held = sum(len(t.hours) for st in processor.hotspots._kinds.values()
               for t in st.evidence.values())
    dumps, restores = [], []
    data = b""
    for _ in range(rounds):
        t0 = time.process_time()
        data = hotspot_state.dump(processor)
        dumps.append(time.process_time() - t0)
        fresh = build()
        t0 = time.process_time()
        hotspot_state.restore(fresh, data)
        restores.append(time.process_time() - t0)
    return {
        "cells": float(rows * cols),
        "days": float(days),
        "occurrences": float(n_occ),
        "trail_entries": float(held),
        "checkpoint_mb": len(data) / 1e6,
        "dump_s": statistics.median(dumps),
        "restore_s": statistics.median(restores),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[2500, 10000])
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    rows = [measure(n, args.days, args.rounds) for n in args.cells]
    print(f"## Hot-spot checkpoint ({args.days} simulated days, median of {args.rounds})\n")
    print("| cells | trail entries (72 h) | checkpoint MB | dump CPU s | restore CPU s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {int(r['cells']):,} | {int(r['trail_entries']):,} | "
              f"{r['checkpoint_mb']:.1f} | {r['dump_s']:.2f} | {r['restore_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
