"""Hot-spot cost: time per simulated day and peak memory vs number of cells.

    python benchmarks/hotspot_cost.py                       # 2,500 / 5,000 / 10,000 cells
    python benchmarks/hotspot_cost.py --cells 10000 --days 28

Each size runs in its own process (so its peak RSS is its own). The engine is driven with
the scenario's occurrences directly (what the stream stage emits after dedup); the time
to build the Occurrence objects is measured in a separate pass and subtracted, so
"engine" is the hot-spot statistics alone. Times are CPU seconds of the process (the
machine is shared; wall time is in the JSON too, and ``gc_s`` / ``gc_full_s`` /
``gc_full_collections``: CPU seconds of the engine pass spent in Python's cyclic garbage
collector, the part that grows faster than linearly in cells). Traffic: quiet lanes to
busy roads, on average ~50 occurrences per cell per day (``--traffic`` scales it).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BANDS = ((0.6, 5.0, 30.0), (0.3, 30.0, 100.0), (0.1, 100.0, 400.0))


def rss_mib(field: str = "VmRSS") -> float:
    """Current (VmRSS) or peak (VmHWM) resident memory of this process, MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for row in status:
            if row.startswith(field + ":"):
                return int(row.split()[1]) / 1024.0
    return float("nan")


def measure(cells: int, days: int, traffic: float, gc_mode: str = "replay"
            ) -> dict[str, float]:
    """Run one size in this process; returns the figures.

    ``gc_mode``: ``replay`` runs with the cyclic GC off, as ``gridwatch replay`` does (it
    holds millions of small acyclic objects); ``on`` leaves it on (the live services)."""
    import numpy as np

    if gc_mode == "replay":
        gc.disable()

    from stream.hotspot import HotspotEngine, HotspotSettings
    from tests.support.hotspot_scenarios import Scenario, ScenarioSpec

    side = int(round(cells ** 0.5))
    rows, cols = side, max(1, cells // side)
    bands = tuple((s, lo * traffic, hi * traffic) for s, lo, hi in BANDS)
    spec = ScenarioSpec(rows=rows, cols=cols, days=days, seed=7, rate_bands=bands,
                        n_clusters=max(1, rows * cols // 300))
    t0 = time.perf_counter()
    sc = Scenario.generate(spec)
    t_gen = time.perf_counter() - t0
    rss_before = rss_mib()
    t0 = time.process_time()
    n_occ = sum(1 for _ in sc.occurrences())
    t_build = time.process_time() - t0

    engine = HotspotEngine(HotspotSettings(), sc.grid)
    # time in Python's cyclic garbage collector (it walks the evidence the engine holds,
    # see docs/hotspots.md, Cost): full collections and all collections
    gc_time = [0.0, 0.0, 0.0]  # start, all, full (generation 2)
    gc_full = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[0] = time.process_time()
            return
        spent = time.process_time() - gc_time[0]
        gc_time[1] += spent
        if info["generation"] == 2:
            gc_time[2] += spent
            gc_full[0] += 1

    gc.callbacks.append(on_gc)
    t0 = time.process_time()
    w0 = time.perf_counter()
    findings = 0
    for occ in sc.occurrences():
        out = engine.observe(occ)
        if out:
            findings += len(out)
    findings += len(engine.flush())
    t_total = time.process_time() - t0
    gc.callbacks.remove(on_gc)
    wall = time.perf_counter() - w0
    rss_after = rss_mib()
    t_engine = max(t_total - t_build, 0.0)
    state_bytes = sum(a.nbytes for st in engine._kinds.values()  # noqa: SLF001
                      for a in vars(st).values() if isinstance(a, np.ndarray))
    return {
        "cells": float(rows * cols),
        "days": float(days),
        "occurrences": float(n_occ),
        "findings": float(findings),
        "engine_s": t_engine,
        "engine_s_per_day": t_engine / days,
        "engine_us_per_occurrence": 1e6 * t_engine / max(n_occ, 1),
        "build_occurrences_s": t_build,
        "scenario_s": t_gen,
        "engine_numpy_state_mib": state_bytes / 2**20,
        "gc_s": gc_time[1],
        "gc_full_collections": float(gc_full[0]),
        "gc_full_s": gc_time[2],
        "wall_s_incl_building_occurrences": wall,
        "rss_before_engine_mib": rss_before,
        "engine_rss_growth_mib": rss_after - rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[2500, 5000, 10000])
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--traffic", type=float, default=1.0)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--gc", choices=("replay", "on"), default="replay",
                        help="replay (default): cyclic GC off as in gridwatch replay; "
                             "on: as in the live services")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.cells[0], args.days, args.traffic, args.gc)))
        return 0
    rows = []
    for n in args.cells:
        done = subprocess.run([sys.executable, __file__, "--one", "--cells", str(n),
                               "--days", str(args.days), "--traffic", str(args.traffic),
                               "--gc", args.gc],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {n} cells done", file=sys.stderr)
    print(f"## Hot-spot engine cost ({args.days} simulated days, occurrences fed directly, "
          f"cyclic GC {'off as in replay' if args.gc == 'replay' else 'on'})\n")
    print("| cells | occurrences | engine CPU s | CPU s / simulated day | us / occurrence | "
          "engine RSS growth MiB | of which numpy state | peak RSS MiB (whole process) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {int(r['cells'])} | {int(r['occurrences']):,} | {r['engine_s']:.1f} | "
              f"{r['engine_s_per_day']:.2f} | {r['engine_us_per_occurrence']:.2f} | "
              f"{r['engine_rss_growth_mib']:.0f} | {r['engine_numpy_state_mib']:.0f} | "
              f"{r['peak_rss_mib']:.0f} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"\ncells x{b['cells'] / a['cells']:.1f} -> engine time "
              f"x{b['engine_s'] / max(a['engine_s'], 1e-9):.2f}, occurrences "
              f"x{b['occurrences'] / max(a['occurrences'], 1):.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
