"""Embedded live pipeline into a SQL ticket store vs the same pipeline over memory.

    python benchmarks/pipeline_bench.py [--count 20000] [--rounds 3]
                                        [--postgres postgresql://postgres@127.0.0.1/test]

The workload of ``benchmarks/ingest_bench.py`` (``detection(i)``: 36 grid cells, 3 kinds,
~108 tickets, nearly every detection joining an open ticket) as wire payloads, submitted
through :meth:`EmbeddedPipeline.submit_raw` and timed until :meth:`EmbeddedPipeline.drain`
returns (validation, dedup, stream, desk and the store's commits). Each round runs:

1. memory: the pipeline over a ``MemoryTicketStore`` (no I/O: the ceiling);
2. sqlite: a fresh ``SqliteTicketStore`` file in a temporary folder;
3. postgres (with ``--postgres URL``): a ``SqlTicketStore`` in a fresh schema, dropped
   after.

Prints one JSON object: detections/s per round and their medians, tickets written, and
each SQL store's median as a ratio of the memory median.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from shapely.geometry import box
from sqlalchemy import create_engine, text

from geo.grid import Grid
from geo.make import square_grid
from gridwatch.config import load_config
from gridwatch.embedded import EmbeddedPipeline
from ticketing.store import MemoryTicketStore, SqliteTicketStore, SqlTicketStore, TicketStore

try:
    from benchmarks.ingest_bench import AREA, detection
except ModuleNotFoundError:  # run as a script: benchmarks/ is on sys.path, the root is not
    from ingest_bench import AREA, detection  # type: ignore[no-redef]


def run_once(grid: Grid, payloads: list[bytes], store: TicketStore) -> tuple[float, int]:
    """Detections/s through one fresh pipeline over ``store``, and the tickets it holds."""
    pipeline = EmbeddedPipeline(load_config(), grid, store)
    try:
        start = time.perf_counter()
        for payload in payloads:
            result = pipeline.submit_raw(payload, origin="bench")
            assert result.accepted, result
        assert pipeline.drain(timeout=600), "pipeline did not drain"
        elapsed = time.perf_counter() - start
        assert pipeline.stats()["failed"] == 0, pipeline.stats()
    finally:
        pipeline.close()
    return len(payloads) / elapsed, sum(1 for _ in store.all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="also run on PostgreSQL (a fresh schema, dropped after)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    grid = Grid.from_geojson(square_grid(box(*AREA), size_m=1000))
    payloads = [detection(i).to_json().encode() for i in range(args.count)]
    rates: dict[str, list[float]] = {"memory": [], "sqlite": []}
    tickets: dict[str, int] = {}
    if args.postgres:
        rates["postgres"] = []
    for _ in range(args.rounds):
        rate, tickets["memory"] = run_once(grid, payloads, MemoryTicketStore())
        rates["memory"].append(rate)
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SqliteTicketStore(Path(tmp) / "tickets.sqlite")
            try:
                rate, tickets["sqlite"] = run_once(grid, payloads, sqlite)
            finally:
                sqlite.close()
            rates["sqlite"].append(rate)
        if args.postgres:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            pg = SqlTicketStore(args.postgres, schema=schema)
            try:
                rate, tickets["postgres"] = run_once(grid, payloads, pg)
            finally:
                pg.close()
                engine = create_engine(pg.url)
                with engine.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                engine.dispose()
            rates["postgres"].append(rate)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    result: dict[str, object] = {"count": args.count, "rounds": args.rounds,
                                 "tickets": tickets}
    for name, values in rates.items():
        result[f"{name}_det_per_s"] = [round(v) for v in values]
        result[f"{name}_det_per_s_median"] = round(medians[name])
    for name in rates:
        if name != "memory":
            result[f"{name}_to_memory_ratio"] = round(medians[name] / medians["memory"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
