"""Hot-spot evaluation: GridWatch's engine vs a naive fixed-count threshold, same scenarios.

    python benchmarks/hotspot_eval.py                 # both families x 3 seeds x 900 cells
    python benchmarks/hotspot_eval.py --family quiet --seeds 1 2 3 4 5 --json out.json

Three scenario families (``tests.support.hotspot_scenarios.FAMILIES``), all evaluated by
default: "mixed" (12 to 1,500 occurrences per cell and day), "quiet" (2 to 40 a day, a
camera in one cell of ten, like real cameras on quiet roads) and "quiet_busy" (2 to 600 a
day side by side; only single-cell, one-day clusters of 3x to 6x). Three methods side by
side: GridWatch's engine, the naive fixed-count threshold (two quantiles) and a
prospective space-time scan run daily as SaTScan's surveillance does
(``SpaceTimeScanEngine``). Figures are printed per family, pooled over the seeds and for
each seed.

Drives both engines with the scenario's occurrences directly (what the stream stage would
emit after dedup); ``--replay`` also runs the first scenario end to end through
``gridwatch.replay.replay_lines`` and checks the tickets. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datetime import datetime  # noqa: E402

from stream.hotspot import HotspotEngine, HotspotSettings  # noqa: E402
from stream.types import HotspotFinding  # noqa: E402
from tests.support.hotspot_scenarios import FAMILIES, Scenario, family_spec  # noqa: E402
from tests.support.hotspot_scoring import (  # noqa: E402
    NaiveThresholdEngine,
    Score,
    SpaceTimeScanEngine,
    oracle_alpha,
    oracle_detects,
    oracle_power,
    score,
    score_tickets,
)

# the oracle's lines: a per-cluster test that knows the true baseline, and the cluster's
# cells and span; the first also knows its start hour, the second tests each of the 24
# start hours of a day (Bonferroni: what an engine knowing the baseline could spend)
ORACLES = {"oracle, known baseline": 1, "oracle, known baseline, start hour unknown": 24}
# the first oracle's test applied to the counts drawn (what it finds of these clusters)
ORACLE_DRAWN = "oracle, known baseline, on the counts drawn"


def run_engine(engine: Any, scenario: Scenario) -> list[HotspotFinding]:
    findings: list[HotspotFinding] = []
    for occ in scenario.occurrences():
        out = engine.observe(occ)
        if out:
            findings.extend(out)
    findings.extend(engine.flush())
    return findings


def naive_threshold(scenario: Scenario, warmup_days: int, quantile: float) -> int:
    """The count a naive operator would pick: a high quantile of the 24-hour counts of all
    cells during the warm-up weeks (one number for the whole city)."""
    warm = scenario.counts[: warmup_days * 24]
    daily = warm[: (warm.shape[0] // 24) * 24].reshape(-1, 24, warm.shape[1]).sum(axis=1)
    return int(math.ceil(float(np.quantile(daily, quantile))))


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", choices=sorted(FAMILIES),
                        default=sorted(FAMILIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rows", type=int, help="grid rows (default: the family's, 30)")
    parser.add_argument("--cols", type=int, help="grid columns (default: the family's, 30)")
    parser.add_argument("--days", type=int, help="days (default: the family's, 28)")
    parser.add_argument("--clusters", type=int,
                        help="injected clusters per scenario (default: the family's)")
    parser.add_argument("--methods", nargs="*", choices=["naive", "scan", "oracle"],
                        default=["naive", "scan", "oracle"],
                        help="methods beside GridWatch (default: all; none: GridWatch alone)")
    parser.add_argument("--naive-quantile", type=float, nargs="+", default=[0.99, 0.999])
    parser.add_argument("--scan-alpha", type=float, default=0.01,
                        help="the space-time scan's signal level per daily analysis "
                             "(recurrence interval 1/alpha days; default %(default)s)")
    parser.add_argument("--scan-replicates", type=int, default=199)
    parser.add_argument("--config", type=Path, help="a GridWatch YAML config (hotspot:)")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--replay", action="store_true",
                        help="also replay every scenario end to end through "
                             "gridwatch.replay and score its tickets (slower)")
    parser.add_argument("--oracle-budget", type=float, default=1.0,
                        help="false tickets per 1,000 cell-days the oracle may spend "
                             "(default %(default)s, the target)")
    args = parser.parse_args(argv)

    if args.config:
        from gridwatch.config import load_config
        settings = load_config(args.config).hotspot
    else:
        settings = HotspotSettings()
    result: dict[str, Any] = {}
    for family in args.family:
        result[family] = evaluate_family(family, args, settings)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    return 0


def evaluate_family(family: str, args: argparse.Namespace,
                    settings: HotspotSettings) -> dict[str, Any]:
    warmup_days = settings.warmup_s / 86400
    totals: dict[str, Score] = {}
    per_seed: dict[int, dict[str, Score]] = {}
    per_cluster: list[dict[str, Any]] = []
    oracle_powers: dict[str, list[tuple[Any, float]]] = {}
    timing = 0.0
    for seed in args.seeds:
        overrides: dict[str, Any] = {"seed": seed}
        for key in ("rows", "cols", "days"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        if args.clusters is not None:
            overrides["n_clusters"] = args.clusters
        spec = family_spec(family, **overrides)
        sc = Scenario.generate(spec)
        n_scored = int((sc.rates.sum(axis=0) > 0).sum())  # cells with a camera
        t0 = time.perf_counter()
        findings = run_engine(HotspotEngine(settings, sc.grid), sc)
        timing += time.perf_counter() - t0
        s = score("gridwatch", findings, sc.clusters, n_cells=n_scored, days=spec.days,
                  warmup_days=warmup_days)
        scores = {"gridwatch": s}
        for o in s.clusters:
            c = o.cluster
            per_cluster.append({"seed": seed, "cluster": c.cluster_id, "cells": len(c.cells),
                                "strength": c.strength, "hours": c.hours,
                                "baseline_per_hour": round(c.baseline_expected / c.hours, 2),
                                "detected": o.detected, "hours_to_detect": o.hours_to_detect})
        for q in args.naive_quantile if "naive" in args.methods else []:
            threshold = naive_threshold(sc, int(warmup_days), q)
            nf = run_engine(NaiveThresholdEngine(sc.grid, threshold=threshold,
                                                 warmup_s=settings.warmup_s,
                                                 utc_offset_s=settings.utc_offset_s), sc)
            name = f"naive q{q}"
            scores[name] = score(name, nf, sc.clusters, n_cells=n_scored, days=spec.days,
                                 warmup_days=warmup_days)
        if "scan" in args.methods:
            scan = SpaceTimeScanEngine(sc.grid, warmup_s=settings.warmup_s,
                                       utc_offset_s=settings.utc_offset_s,
                                       alpha=args.scan_alpha,
                                       replicates=args.scan_replicates, seed=seed)
            name = "space-time scan"
            scores[name] = score(name, run_engine(scan, sc), sc.clusters, n_cells=n_scored,
                                 days=spec.days, warmup_days=warmup_days)
        if args.replay:
            name = "GridWatch replay (end to end)"
            scores[name] = score_tickets(name, replay_tickets(sc), sc.clusters,
                                         n_cells=n_scored, days=spec.days,
                                         warmup_days=warmup_days)
        for name, sc_score in scores.items():
            totals[name] = totals[name].merge(sc_score) if name in totals else sc_score
        per_seed[seed] = scores
        budget = args.oracle_budget / 1000.0
        for o in s.clusters if "oracle" in args.methods else []:
            c = o.cluster
            for name, starts in ORACLES.items():
                oracle_powers.setdefault(name, []).append(
                    (c, oracle_power(sc, c, oracle_alpha(c, false_per_cell_day=budget,
                                                         start_hours=starts))))
            oracle_powers.setdefault(ORACLE_DRAWN, []).append(
                (c, oracle_detects(sc, c, oracle_alpha(c, false_per_cell_day=budget))))

    cells = spec.rows * spec.cols
    print(f"## Hot-spot evaluation, family {family!r}: {len(args.seeds)} scenarios x {cells} "
          f"cells x {spec.days} days, {spec.n_clusters} injected clusters each "
          f"(cell-days: cells with a camera, after warm-up)\n")
    header = ("| method | clusters detected (all) | detected (>=3x, >=1 day) | tickets | "
              "false tickets | false / 1,000 cell-days | median h to detect | p90 h |")
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    result: dict[str, Any] = {"scenarios": len(args.seeds), "cells": cells, "days": spec.days}
    for name, sc_total in totals.items():
        sm = sc_total.summary()
        result[name] = sm
        print(row(name, sm, sc_total))
    for name, powers in oracle_powers.items():
        target = [p for c, p in powers if c.strength >= 3 and c.hours >= 24]
        result[name] = {"detected_all": float(np.mean([p for _, p in powers])),
                        "detected_target": float(np.mean(target)) if target else math.nan,
                        "expected_hits_target": float(np.sum(target)),
                        "false_per_1000_cell_days": args.oracle_budget}
        print(f"| {name} | {fmt(result[name]['detected_all'])} | "
              f"{fmt(result[name]['detected_target'])} ({sum(target):.1f}/{len(target)}) | - | "
              f"- | {args.oracle_budget:.3f} (its budget) | - | - |")
    print("\nPer seed:\n")
    print(header.replace("| method |", "| seed | method |"))
    print("|---|---|---|---|---|---|---|---|---|")
    result["per_seed"] = {}
    for seed, scores in per_seed.items():
        result["per_seed"][str(seed)] = {}
        for name, sc_score in scores.items():
            sm = sc_score.summary()
            result["per_seed"][str(seed)][name] = sm
            print(f"| {seed} " + row(name, sm, sc_score))
    gw = totals["gridwatch"]
    print("\nGridWatch detection by cluster strength x duration (detected / injected):\n")
    strengths = sorted({o.cluster.strength for o in gw.clusters})
    durations = sorted({o.cluster.hours for o in gw.clusters})
    print("| strength | " + " | ".join(f"{d:g} h" for d in durations) + " |")
    print("|---|" + "---|" * len(durations))
    for st in strengths:
        cells_txt = []
        for d in durations:
            group = [o for o in gw.clusters if o.cluster.strength == st and o.cluster.hours == d]
            cells_txt.append(f"{sum(o.detected for o in group)}/{len(group)}" if group else "-")
        print(f"| {st:g}x | " + " | ".join(cells_txt) + " |")
    print(f"\nGridWatch engine time: {timing:.1f} s for {len(args.seeds)} scenarios\n")
    result["per_cluster"] = per_cluster
    return result


def row(name: str, sm: dict[str, float], total: Score) -> str:
    target = [o for o in total.clusters if o.cluster.strength >= 3 and o.cluster.hours >= 24]
    hit = sum(o.detected for o in target)
    return (f"| {name} | {fmt(sm['detected_all'])} | {fmt(sm['detected_target'])} "
            f"({hit}/{len(target)}) | {int(sm['tickets'])} | {int(sm['false_tickets'])} | "
            f"{fmt(sm['false_per_1000_cell_days'], 3)} | "
            f"{fmt(sm['median_hours_to_detect'], 1)} | {fmt(sm['p90_hours_to_detect'], 1)} |")


def replay_tickets(sc: Scenario) -> list[list[HotspotFinding]]:
    """Replay the scenario's detections end to end (``gridwatch.replay.replay_lines``,
    the default config) and turn each hot-spot ticket back into the findings the scorer
    reads: its first window (when it opened) and its last (what it says now), with its
    member cells; one list per ticket. The desk's re-alert cooldown applies here, so this
    counts tickets as an operator would see them."""
    from gridwatch.config import load_config
    from gridwatch.replay import replay_lines

    result = replay_lines(sc.detection_lines(), sc.grid, load_config())
    out: list[list[HotspotFinding]] = []
    for t in result.tickets:
        hs = t.hotspot
        if hs is None:
            continue
        end = datetime.fromisoformat(str(hs["window_end"])) \
            if not isinstance(hs["window_end"], datetime) else hs["window_end"]
        start = datetime.fromisoformat(str(hs["window_start"])) \
            if not isinstance(hs["window_start"], datetime) else hs["window_start"]
        members = tuple(hs.get("member_cells") or (t.cell_id,))
        common = {"kind": t.kind, "cell_id": t.cell_id, "member_cells": members,
                  "observed": int(hs["observed"]), "expected": float(hs["expected"]),
                  "p_value": float(hs["p_value"]), "lon": t.lon, "lat": t.lat}
        opened = t.opened_at
        # the ticket's first window ends when it opened; its length is the last one's
        first_start = opened - (end - start)
        out.append([HotspotFinding(window_start=first_start, window_end=opened, **common),
                    HotspotFinding(window_start=start, window_end=end, **common)])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
