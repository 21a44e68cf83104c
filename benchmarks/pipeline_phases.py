"""Where the embedded pipeline's time goes, per detection, by batch size (SQLite store).

    PYTHONPATH=. python benchmarks/pipeline_phases.py [--count 20000] [--batch 500,1000,2000]
                                                      [--service-gc]

The ``ingest_bench`` workload (``detection(i)``: 36 cells, 3 kinds, ~108 tickets) is
submitted to an ``EmbeddedPipeline`` over a fresh SQLite file in batches of each size, each
batch drained before the next (so every store write carries exactly one batch, as when
MQTT's in-flight window is the limit). The first 2,000 detections warm it up and are not
timed. Each phase is timed by wrapping the method that does it (wall time, this process):

- ``stream``: cell lookup and the stream core (``Pipeline.stream``);
- ``write``: the ticket side (``TicketWriter.write``: the idempotent desk, the batching
  store and its commit), of which ``save_many`` is the store's transaction, and inside
  it ``ticket_rows`` (row values and body JSON), ``event_ids`` (the id rows), ``record``
  (audit entries, change log), ``versions`` and ``check_open`` (the checks);
- ``keep``: what the batching store keeps between batches.

What is left of ``total`` is intake (``submit_many``: dedup, queueing) and the worker's
hand-offs. ``--service-gc``: the garbage collector set as a running ingest sets it
(``gridwatch.gc_tuning.GC_THRESHOLDS``, start-up objects frozen); without it, CPython's
defaults. Prints one line per batch size. A profiling aid: figures swing with the load of
a shared machine, so compare sizes within one run.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shapely.geometry import box

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

import ticketing.store as store_module  # noqa: E402
from benchmarks.ingest_bench import AREA, detection  # noqa: E402
from geo.grid import Grid  # noqa: E402
from geo.make import square_grid  # noqa: E402
from gridwatch.config import load_config  # noqa: E402
from gridwatch.embedded import EmbeddedPipeline  # noqa: E402
from gridwatch.gc_tuning import GC_THRESHOLDS  # noqa: E402
from ticketing.store import SqliteTicketStore  # noqa: E402

WARM_UP = 2000


def _timed(totals: Counter[str], key: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start
    return call


def run(batch: int, count: int, grid: Grid) -> tuple[float, Counter[str]]:
    totals: Counter[str] = Counter()
    detections = [detection(i) for i in range(count)]
    row = store_module.ticket_row
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteTicketStore(Path(tmp) / "tickets.sqlite")
        pipeline = EmbeddedPipeline(load_config(), grid, store)
        items = [(d, None, None) for d in detections]
        pipeline.submit_many(items[:WARM_UP])  # type: ignore[arg-type]
        pipeline.drain(None)
        core, tickets = pipeline._core, pipeline._tickets
        for obj, name, key in (
                (core, "stream", "stream"), (tickets, "write", "write"),
                (store, "save_many", "save_many"), (store, "_record", "record"),
                (store._event_ids, "append", "event_ids"),
                (store._tickets, "stored_versions", "versions"),
                (store._tickets, "check_open", "check_open"),
                (tickets.batching, "_keep", "keep")):
            setattr(obj, name, _timed(totals, key, getattr(obj, name)))
        store_module.ticket_row = _timed(totals, "ticket_rows", row)  # type: ignore[assignment]
        try:
            start = time.perf_counter()
            for i in range(WARM_UP, count, batch):
                pipeline.submit_many(items[i:i + batch])  # type: ignore[arg-type]
                pipeline.drain(None)
            totals["total"] = time.perf_counter() - start
        finally:
            store_module.ticket_row = row
            pipeline.close()
            store.close()
    return (count - WARM_UP) / totals["total"], totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--batch", default="500,1000,2000",
                        help="batch sizes, comma-separated")
    parser.add_argument("--service-gc", action="store_true",
                        help="the garbage collector as a running ingest sets it")
    args = parser.parse_args()
    if args.count <= WARM_UP:
        raise SystemExit(f"--count: expected more than {WARM_UP}, got {args.count}")
    logging.basicConfig(level=logging.WARNING)
    grid = Grid.from_geojson(square_grid(box(*AREA), size_m=1000))
    if args.service_gc:
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    order = ("total", "stream", "write", "save_many", "ticket_rows", "event_ids", "record",
             "versions", "check_open", "keep")
    for size in (int(b) for b in args.batch.split(",")):
        rate, totals = run(size, args.count, grid)
        per = {k: totals[k] / (args.count - WARM_UP) * 1e6 for k in order}
        print(f"batch {size:>5}: {rate:>7,.0f} det/s; us/det " +
              " ".join(f"{k} {v:.1f}" for k, v in per.items()))


if __name__ == "__main__":
    main()
