"""The embedded core's stream and ticket side with and without merged joins, same run.

    python benchmarks/merge_joins_bench.py [--count 20000] [--batch 1800] [--rounds 8]

``Pipeline.stream`` then ``TicketWriter.write`` (the live core over a fresh SQLite file
per round, as the embedded service writes a batch) on the ingest benchmark's detections
(three incident kinds over 25 cells, one a second), once with the desk applying a batch's
joins of one incident as one event (``IdempotentDesk.merge_joins``) and once one by one,
alternately. Prints CPU µs (this thread's) a detection per round and the minima, how many
outputs the desk applied, and whether both ways gave the same tickets.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from shapely.geometry import box  # noqa: E402

from benchmarks.ingest_bench import AREA, detection  # noqa: E402
from geo.grid import Grid  # noqa: E402
from geo.make import square_grid  # noqa: E402
from gridwatch.config import load_config  # noqa: E402
from gridwatch.pipeline import Pipeline  # noqa: E402
from ticketing.idempotent import IdempotentDesk  # noqa: E402
from ticketing.store import SqliteTicketStore  # noqa: E402

MERGE = IdempotentDesk.merge_joins


def one_round(detections: list[Any], grid: Grid, batch: int, merged: bool, tmp: Path
              ) -> tuple[float, int, dict[str, Any]]:
    IdempotentDesk.merge_joins = MERGE if merged else (  # type: ignore[method-assign]
        lambda self, outputs: list(outputs))
    store = SqliteTicketStore(tmp / f"{'merged' if merged else 'one'}-{time.time_ns()}.db")
    try:
        core = Pipeline(load_config(), grid, store, live=True, filter_event_ids=False)
        applied = 0
        apply = core.tickets._apply_one

        def counting(output: Any) -> Any:
            nonlocal applied
            applied += 1
            return apply(output)

        core.tickets._apply_one = counting
        gc.collect()
        start = time.thread_time()
        for i in range(0, len(detections), batch):
            core.tickets.write(core.stream(detections[i:i + batch]))
        cpu_us = (time.thread_time() - start) / len(detections) * 1e6
        return cpu_us, applied, {t.ticket_id: t.to_public() for t in store.all()}
    finally:
        store.close()
        IdempotentDesk.merge_joins = MERGE  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_800)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    detections = [detection(i) for i in range(args.count)]
    grid = Grid.from_geojson(square_grid(box(*AREA), size_m=1000))
    cpu: dict[str, list[float]] = {"merged": [], "one_by_one": []}
    applied: dict[str, int] = {}
    tickets: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for merged in ((True, False) if r % 2 == 0 else (False, True)):
                name = "merged" if merged else "one_by_one"
                us, applied[name], tickets[name] = one_round(detections, grid, args.batch,
                                                             merged, Path(tmp))
                cpu[name].append(round(us, 2))
    print(json.dumps({
        "count": args.count, "batch": args.batch, "rounds": args.rounds,
        "cpu_us_per_detection": cpu,
        "min_cpu_us": {k: min(v) for k, v in cpu.items()},
        "ratio_of_minima": round(min(cpu["merged"]) / min(cpu["one_by_one"]), 3),
        "outputs_applied": applied,
        "same_tickets": tickets["merged"] == tickets["one_by_one"],
    }, indent=2))


if __name__ == "__main__":
    main()
