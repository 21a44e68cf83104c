"""Ticket API throughput and latency on loopback, beside a bare FastAPI endpoint.

For each store (SQLite file, PostgreSQL), one uvicorn process serves the ticketing app
with an extra bare route (``GET /bench/bare`` returning a constant), so the framework's
own cost is measured in the same run, on the same server. A closed-loop async client
(``--concurrency`` requests in flight) runs each scenario for ``--duration`` seconds:

* ``bare``   GET /bench/bare
* ``list``   GET /tickets?limit=50 (the first page of ``--seed`` tickets, as an operator;
  after the first request the page comes from the app's page cache, as it does for a
  console polling a page while no ticket changes)
* ``list_nocache`` the same on a second app over the same store with the page cache off
  (``ticketing.list_cache_entries: 0``): every request reads and encodes the page
* ``create`` POST /tickets (a report placed in the grid and routed; as ingest)

Run::

    . .venv/bin/activate
    python benchmarks/api_bench.py --duration 10 --concurrency 16 \\
        --postgres postgresql://postgres@127.0.0.1:5432/test

Client and server share the machine's cores; figures are for comparison within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENS = {"ops": "bench-ops", "ingest": "bench-ingest"}


def _grid():  # type: ignore[no-untyped-def]
    from geo.grid import Grid

    features = [{"type": "Feature",
                 "properties": {"cell_id": f"C{c}{r}", "district": "D1",
                                "town": f"T{c}", "village": f"V{c}{r}"},
                 "geometry": {"type": "Polygon", "coordinates": [[
                     [c, r], [c + 1, r], [c + 1, r + 1], [c, r + 1], [c, r]]]}}
                for c in range(4) for r in range(4)]
    return Grid.from_geojson({"type": "FeatureCollection", "features": features})


def serve(url: str, schema: str | None, port: int) -> None:
    import uvicorn

    from geo.admin import Level
    from stream.policy import KindPolicy, PolicyBook
    from ticketing.api.app import create_app
    from ticketing.auth import Principal, Role, TokenAuth
    from ticketing.config import TicketingSettings
    from ticketing.store import SqlTicketStore

    store = SqlTicketStore(url, schema=schema)
    policies = PolicyBook(kinds={"smoke": KindPolicy(
        level=Level.TOWN, department="fire_rescue", priority="P1", auto_dispatch=True)})
    auth = TokenAuth.from_mapping({TOKENS["ops"]: Principal("ops", Role.OPERATOR),
                                   TOKENS["ingest"]: Principal("ingest", Role.INGEST)})
    app = create_app(store=store, policies=policies, grid=_grid(), auth=auth)
    # the same app without its page cache, on the same store: what a list costs when
    # the page is not cached (the first read after any ticket changed)
    app.mount("/nocache", create_app(store=store, policies=policies, grid=_grid(),
                                     auth=auth,
                                     settings=TicketingSettings(list_cache_entries=0)))

    @app.get("/bench/bare", include_in_schema=False)
    def bare() -> dict[str, bool]:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _load(base: str, scenario: str, *, duration_s: float, concurrency: int
                ) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    ops = {"Authorization": f"Bearer {TOKENS['ops']}"}
    ingest = {"Authorization": f"Bearer {TOKENS['ingest']}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        stop = time.perf_counter() + duration_s

        async def worker(n: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < stop:
                i += 1
                start = time.perf_counter()
                if scenario == "bare":
                    r = await client.get("/bench/bare")
                elif scenario == "list":
                    r = await client.get("/tickets", params={"limit": 50}, headers=ops)
                elif scenario == "list_nocache":
                    r = await client.get("/nocache/tickets", params={"limit": 50},
                                         headers=ops)
                else:
                    r = await client.post("/tickets", headers=ingest, json={
                        "kind": "smoke", "lon": (i % 40) / 10 + 0.05, "lat": (n % 40) / 10
                        + 0.05, "external_id": uuid.uuid4().hex})
                latencies.append(time.perf_counter() - start)
                if r.status_code >= 400:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {"scenario": scenario, "requests": len(latencies), "errors": errors,
            "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
                            2)}


async def _seed(base: str, n: int) -> None:
    import httpx

    ingest = {"Authorization": f"Bearer {TOKENS['ingest']}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                r = await client.post("/tickets", headers=ingest, json={
                    "kind": "smoke", "lon": (i % 40) / 10 + 0.05, "lat": (i // 40 % 40) / 10
                    + 0.05, "external_id": f"seed-{i}"})
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))


async def _wait_ready(base: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(200):
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the server at {base} did not start")


SCENARIOS = ("bare", "list", "list_nocache", "create")


def run_backend(name: str, url: str, schema: str | None, args: argparse.Namespace
                ) -> list[dict[str, Any]]:
    port = args.port
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=serve, args=(url, schema, port), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_ready(base))
        asyncio.run(_seed(base, args.seed))
        results = []
        for round_ in range(1, args.rounds + 1):
            bare: dict[str, Any] = {}
            for scenario in SCENARIOS:
                result = asyncio.run(_load(base, scenario, duration_s=args.duration,
                                           concurrency=args.concurrency))
                if scenario == "bare":
                    bare = result
                # against the bare endpoint of the same round (the machine's load moves)
                result["rps_ratio"] = round(result["rps"] / bare["rps"], 2)
                result["p99_ratio"] = round(result["p99_ms"] / bare["p99_ms"], 2)
                results.append({"backend": name, "round": round_, **result})
                print(f"{name:<10} {round_:>2} {scenario:<12} {result['rps']:>8} req/s  "
                      f"p50 {result['p50_ms']:>7} ms  p99 {result['p99_ms']:>7} ms  "
                      f"vs bare: {result['rps_ratio']:>4} x req/s, "
                      f"{result['p99_ratio']:>4} x p99  "
                      f"({result['requests']} requests, {result['errors']} errors)",
                      flush=True)
        if args.rounds > 1:
            for scenario in SCENARIOS[1:]:
                rows = [r for r in results if r["scenario"] == scenario]
                print(f"{name:<10} median of {args.rounds} rounds, {scenario:<12} "
                      f"{statistics.median(r['rps_ratio'] for r in rows):>4} x bare req/s, "
                      f"{statistics.median(r['p99_ratio'] for r in rows):>4} x bare p99",
                      flush=True)
        return results
    finally:
        server.terminate()
        server.join(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every scenario this many times, interleaved (ratios are "
                             "taken against the bare endpoint of the same round)")
    parser.add_argument("--seed", type=int, default=2000, help="tickets stored first")
    parser.add_argument("--port", type=int, default=18931)
    parser.add_argument("--postgres", default=None,
                        help="PostgreSQL URL (a throw-away schema is used and dropped)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, concurrency {args.concurrency}, "
          f"{args.duration:g} s per scenario", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results += run_backend("sqlite", f"sqlite:///{tmp}/tickets.db", None, args)
    if args.postgres:
        from sqlalchemy import create_engine, text

        from ticketing.store import _normalise_url

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        try:
            results += run_backend("postgresql", args.postgres, schema, args)
        finally:
            engine = create_engine(_normalise_url(args.postgres))
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
