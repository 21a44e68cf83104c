"""This tree against another checkout (``main``, say), same machine, same run, alternating.

    git worktree add --detach /tmp/gw-main main
    python benchmarks/ab_compare.py --base /tmp/gw-main [--rounds 5]
                                    [--only replay,pipeline,ingest] [--replay-n 200000]

A refactor must not make the runtimes slower, and this machine's speed drifts by ±10 %
over minutes, so one tree's figure from an hour ago says little. Each round runs every
benchmark once in each tree, in a fresh child process (``PYTHONPATH`` and working folder
set to that tree, the same interpreter), alternating which tree goes first:

- replay:   ``gridwatch replay`` of one generated file (``replay_bench.generate``, seed 1;
            ``--replay-n`` lines), detections per second of wall time and per second of
            the child's CPU time, pinned to one core where ``taskset`` is;
- pipeline: ``benchmarks/pipeline_bench.py --rounds 1``: the embedded pipeline into
            SQLite and over memory, detections/s, and the child's CPU seconds in all;
- ingest:   ``benchmarks/ingest_bench.py --rounds 1``: raw paho and end to end into
            SQLite tickets (ack after commit), msg/s and the ratio to raw of that run.

Prints one JSON object: per figure, each tree's values and medians, and ``ratio`` (this
tree's median / the base's; above 1 is more here: faster, or for ``*_cpu_s`` costlier).
On a machine others share, wall-time rates swing by 2-3x between runs; the CPU-time
figures are what to compare there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child(tree: Path, argv: list[str], *, pin: bool = False) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and stdout of ``python ARGV`` run in
    ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    prefix = ["taskset", "-c", "0"] if pin and Path("/usr/bin/taskset").exists() else []
    cpu, start = _children_cpu_s(), time.perf_counter()
    proc = subprocess.run([*prefix, sys.executable, *argv], cwd=tree, env=env,
                          capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(argv)} failed ({proc.returncode}): "
                         f"{proc.stderr[-2000:]}")
    return wall, cpu, proc.stdout


def replay(tree: Path, data: Path, n: int, out: Path) -> dict[str, float]:
    wall, cpu, _ = child(tree, ["-m", "gridwatch", "replay", str(data), "--grid",
                                str(tree / "sample_data" / "grid.geojson"),
                                "--tickets-out", str(out)], pin=True)
    return {"replay_det_per_s": n / wall, "replay_det_per_cpu_s": n / cpu}


def pipeline(tree: Path) -> dict[str, float]:
    _, cpu, stdout = child(tree, ["benchmarks/pipeline_bench.py", "--rounds", "1"])
    got = json.loads(stdout)
    return {"pipeline_sqlite_det_per_s": got["sqlite_det_per_s_median"],
            "pipeline_memory_det_per_s": got["memory_det_per_s_median"],
            "pipeline_process_cpu_s": cpu}


def ingest(tree: Path) -> dict[str, float]:
    _, _, stdout = child(tree, ["benchmarks/ingest_bench.py", "--rounds", "1"])
    got = json.loads(stdout)
    return {"ingest_raw_msg_per_s": got["raw_per_s_median"],
            "ingest_e2e_msg_per_s": got["e2e_per_s_median"],
            "ingest_e2e_to_raw": got["e2e_to_raw_ratio_median"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True,
                        help="the other checkout (e.g. a worktree of main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="replay,pipeline,ingest")
    parser.add_argument("--replay-n", type=int, default=200_000)
    args = parser.parse_args()
    base = args.base.resolve()
    if not (base / "gridwatch").is_dir():
        raise SystemExit(f"--base {base}: expected a GridWatch checkout (no gridwatch/)")
    which = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(which) - {"replay", "pipeline", "ingest"}
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {sorted(unknown)}; expected "
                         "replay, pipeline, ingest")
    trees = {"this": HERE, "base": base}
    values: dict[str, dict[str, list[float]]] = {"this": {}, "base": {}}
    with tempfile.TemporaryDirectory(prefix="gw-ab-") as tmp:
        data = Path(tmp) / "detections.jsonl"
        if "replay" in which:
            sys.path.insert(0, str(HERE / "benchmarks"))
            import replay_bench

            replay_bench.generate(data, args.replay_n)
        for r in range(args.rounds):
            order = ["this", "base"] if r % 2 == 0 else ["base", "this"]
            for bench in which:
                for name in order:
                    tree = trees[name]
                    if bench == "replay":
                        got = replay(tree, data, args.replay_n, Path(tmp) / f"{name}.jsonl")
                    elif bench == "pipeline":
                        got = pipeline(tree)
                    else:
                        got = ingest(tree)
                    for key, value in got.items():
                        values[name].setdefault(key, []).append(value)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    result: dict[str, Any] = {"rounds": args.rounds, "base": str(base),
                              "replay_n": args.replay_n if "replay" in which else None}
    for key in values["this"]:
        this, other = values["this"][key], values["base"][key]
        result[key] = {
            "this": [round(v, 3) for v in this], "base": [round(v, 3) for v in other],
            "this_median": round(statistics.median(this), 3),
            "base_median": round(statistics.median(other), 3),
            "ratio": round(statistics.median(this) / statistics.median(other), 3),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
