"""Replay throughput against the floor of just reading and JSON-decoding the same file.

    python benchmarks/replay_bench.py [--n 1000000] [--keep FILE]

Generates N detections over the sample district grid (a realistic mix: camera tracks of
several frames for the hot-spot kinds, multi-sensor alarms for the incident kinds, 1 %
re-sent duplicates, 0.1 % malformed lines, a little out-of-order delivery), then measures
in this one run, each in a fresh child process on one core:

  (a) floor: read the file and ``json.loads`` every line;
  (b) replay: ``gridwatch replay`` end to end (validate, cell lookup, dedup, incidents,
      hot-spot counting, tickets, write the tickets file).

It prints detections/s for both, the ratio (b's rate / a's rate) and each child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "sample_data" / "grid.geojson"

FLOOR = """
import json, sys
n = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        if line.strip():
            try:
                json.loads(line)
            except ValueError:
                pass
            n += 1
print(n)
"""


def generate(path: Path, n: int, seed: int = 1) -> None:
    from shapely.geometry import shape

    rng = random.Random(seed)
    cells = json.loads(GRID.read_text())["features"]
    points = []
    for feature in cells:
        p = shape(feature["geometry"]).representative_point()
        points.append((p.x, p.y))
    start = datetime(2026, 5, 4, tzinfo=UTC)
    span_s = 7 * 86400
    kinds = [("helmetless_rider", "camera", 0.45), ("wrong_way_ebike", "camera", 0.2),
             ("smoke", "smoke_sensor", 0.15), ("door_forced", "access_control", 0.1),
             ("door_held_open", "access_control", 0.1)]
    written = 0
    seq = 0
    with path.open("w", encoding="utf-8") as out:
        while written < n:
            seq += 1
            kind, source_type, _ = rng.choices(kinds, weights=[k[2] for k in kinds])[0]
            cell = rng.randrange(len(points))
            lon, lat = points[cell]
            station = f"st-{cell:04d}"
            t = start + timedelta(seconds=span_s * written / n + rng.uniform(-30, 30))
            frames = rng.randint(2, 8) if source_type == "camera" else rng.randint(1, 4)
            for f in range(frames):
                seq_id = f"{station}:{seq}:{f}"
                obj = {
                    "schema": "gridwatch.detection/1", "event_id": seq_id,
                    "observed_at": (t + timedelta(seconds=f * (0.5 if source_type == "camera"
                                                               else 40))).isoformat(),
                    "station_id": station,
                    "source_id": (f"cam-{rng.randrange(3)}" if source_type == "camera"
                                  else f"{kind}-{f}"),
                    "source_type": source_type, "kind": kind,
                    "confidence": round(0.5 + rng.random() / 2, 3),
                    "lon": round(lon + rng.uniform(-1e-4, 1e-4), 6),
                    "lat": round(lat + rng.uniform(-1e-4, 1e-4), 6),
                }
                if source_type == "camera":
                    obj["track_id"] = f"t{seq}"
                    obj["evidence"] = {"snapshot_url": f"file:///snap/{seq}.jpg"}
                text = json.dumps(obj)
                out.write(text + "\n")
                written += 1
                if rng.random() < 0.01:
                    out.write(text + "\n")  # re-sent duplicate
                    written += 1
                if rng.random() < 0.001:
                    out.write(text[: len(text) // 2] + "\n")  # truncated
                    written += 1
                if written >= n:
                    break


PEAK = """
import resource, runpy, sys
code, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if code == "-m":
        sys.argv = sys.argv[1:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        exec(compile(code, "<bench>", "exec"), {"__name__": "__main__"})
finally:
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def run_child(argv: list[str]) -> tuple[float, int, str]:
    """Wall seconds, the child's own peak RSS in bytes, and its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # pin to one core where the platform allows it
    prefix = ["taskset", "-c", "0"] if Path("/usr/bin/taskset").exists() else []
    t0 = time.perf_counter()
    proc = subprocess.run(prefix + [sys.executable, "-c", PEAK, *argv], capture_output=True,
                          text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return wall, peak_kb * 1024, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the generated file here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    data = args.keep or tmp / "detections.jsonl"
    t0 = time.perf_counter()
    generate(data, args.n)
    print(f"generated {args.n:,} detections ({data.stat().st_size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - t0:.1f} s")
    floor_s, floor_rss, _ = run_child([FLOOR, str(data)])
    replay_s, replay_rss, summary = run_child([
        "-m", "gridwatch", "replay", str(data), "--grid", str(GRID),
        "--tickets-out", str(tmp / "tickets.jsonl"), "--summary-json"])
    floor_rate, replay_rate = args.n / floor_s, args.n / replay_s
    print(f"(a) read + json.loads : {floor_s:7.2f} s  {floor_rate:>10,.0f} det/s  "
          f"peak RSS {floor_rss / 2**20:6.0f} MiB")
    print(f"(b) gridwatch replay  : {replay_s:7.2f} s  {replay_rate:>10,.0f} det/s  "
          f"peak RSS {replay_rss / 2**20:6.0f} MiB")
    print(f"ratio (b rate / a rate): {replay_rate / floor_rate:.2f}")
    print(f"replay summary: {summary.strip()}")


if __name__ == "__main__":
    main()
