"""Scale-out throughput and takeover on a real Kafka-protocol broker (Tansu).

    PYTHONPATH=. python benchmarks/scaleout_bench.py [--copies 8] [--partitions 4]

The sample detections, ``--copies`` times (each copy with its own event and station ids,
so keyed by station the input is balanced), are produced to a fresh private Tansu (memory
storage, restarted for every run so runs do not share by-cell records), then consumed by
one, then two ``gridwatch worker`` processes on SQLite / PostgreSQL. Reported in the same
run: replay (in memory) on the same input as the baseline, detections per second of each
worker run (from the moment every partition is assigned to the moment the workers' metrics
show every forwarded detection processed), the ratios, the time the group took to form,
and — with ``--kill`` — how long the survivor took to own the killed worker's partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gridwatch.config import load_config  # noqa: E402
from gridwatch.replay import replay_lines  # noqa: E402
from stream.faust_app import (  # noqa: E402
    TOPIC_BY_CELL,
    TOPIC_DETECTIONS,
    TOPIC_HOTSPOT,
    ScaleoutSettings,
    declare_topics,
)
from tests.support.tansu import TansuProcess  # noqa: E402

SAMPLE = ROOT / "sample_data" / "detections.jsonl"
GRID = ROOT / "sample_data" / "grid.geojson"


# one cell of sample_data/grid.geojson, in degrees (--spread moves copies by whole cells)
CELL_DLON, CELL_DLAT = 0.0048809, 0.0044916


def spread_shifts(copies: int, partitions: int, grid: Any) -> list[tuple[int, int]]:
    """(rows, columns) to move each copy by, so that the copies fall on other cells and
    the by-cell partitions get about the same number of detections: among the shifts that
    keep every in-area detection of the sample in the grid, greedily the one that keeps
    the partitions most even (the sample alone puts 55 % on one of four)."""
    from stream.faust_app import partition_for, route_many

    rows = []
    for raw in SAMPLE.read_bytes().splitlines():
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict) and all(type(row.get(k)) in (int, float)
                                         for k in ("lon", "lat")):
            rows.append(row)

    def per_partition(dr: int, dc: int) -> list[int] | None:
        moved = [json.dumps({**r, "lon": r["lon"] + dc * CELL_DLON,
                             "lat": r["lat"] + dr * CELL_DLAT}) for r in rows]
        cells = [r.cell_id for r in route_many(moved, grid)]
        if sum(c is not None for c in cells) < inside:
            return None
        counts = [0] * partitions
        for c in cells:
            if c is not None:
                counts[partition_for(c, partitions)] += 1
        return counts

    inside = sum(r.cell_id is not None for r in route_many([json.dumps(r) for r in rows], grid))
    candidates = {(dr, dc): c for dr in range(-2, 3) for dc in range(-1, 4)
                  if (c := per_partition(dr, dc)) is not None}
    totals = [0] * partitions
    chosen: list[tuple[int, int]] = []
    for _ in range(copies):
        unused = {k: v for k, v in candidates.items() if k not in chosen} or candidates
        shift, counts = min(unused.items(), key=lambda kv: max(
            t + c for t, c in zip(totals, kv[1], strict=True)) - min(
            t + c for t, c in zip(totals, kv[1], strict=True)))
        chosen.append(shift)
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
    return chosen


def copies_of_sample(copies: int, shifts: list[tuple[int, int]] | None = None
                     ) -> tuple[list[bytes], list[bytes]]:
    """(lines, station keys): the sample ``copies`` times, ids made unique per copy, each
    copy moved by ``shifts[n]`` (rows, columns of cells) when given, the copies
    interleaved in event-time order. (Appended one after the other, every copy after the
    first arrives behind the event time replay and the embedded service have reached:
    with ``lateness_s`` 0 they drop 87 % of the ×8 input as late, while the workers'
    reorder buffer puts it back in order and processes all of it.)"""
    lines: list[bytes] = []
    keys: list[bytes] = []
    for n in range(copies):
        dr, dc = shifts[n] if shifts else (0, 0)
        for raw in SAMPLE.read_bytes().splitlines():
            try:
                row = json.loads(raw)
            except ValueError:
                lines.append(raw)
                keys.append(b"bad")
                continue
            if isinstance(row, dict) and isinstance(row.get("event_id"), str):
                row["event_id"] += f":copy{n}"
                if isinstance(row.get("station_id"), str):
                    row["station_id"] += f"-{n}"
                if (dr or dc) and all(type(row.get(k)) in (int, float) for k in ("lon", "lat")):
                    row["lon"] += dc * CELL_DLON
                    row["lat"] += dr * CELL_DLAT
            lines.append(json.dumps(row).encode())
            keys.append(str(row.get("station_id", "x") if isinstance(row, dict)
                            else "x").encode())
    # a stable sort by observed_at; a line without a readable time stays behind the one
    # before it
    order: list[tuple[datetime, int]] = []
    last = datetime.min.replace(tzinfo=UTC)
    for i, raw in enumerate(lines):
        try:
            last = datetime.fromisoformat(json.loads(raw)["observed_at"]).astimezone(UTC)
        except (ValueError, TypeError, KeyError):
            pass
        order.append((last, i))
    order.sort()
    return [lines[i] for _, i in order], [keys[i] for _, i in order]


async def produce(bootstrap: str, lines: list[bytes], keys: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for key, value in zip(keys, lines, strict=True):
            await producer.send(TOPIC_DETECTIONS, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def last_metrics(log: Path) -> dict[str, Any] | None:
    """The last metrics line of a worker's log. Only that line is parsed: the bench
    polls every 0.1 s while the workers log one every 0.2 s, and parsing every line of
    the log each time took CPU from the workers it measures (two of them and the broker
    share two cores)."""
    text = log.read_text(errors="replace")
    at = len(text)
    while (at := text.rfind(" metrics {", 0, at)) >= 0:
        end = text.find("\n", at)
        try:
            return json.loads(text[at + len(" metrics "):end if end >= 0 else None])  # type: ignore[no-any-return]
        except ValueError:  # the line being written: the one before it
            continue
    return None


def embedded_rate(lines: list[bytes], grid: Any, config: Any, workdir: Path,
                  forwarded: int) -> float:
    """In-area detections/s through the embedded pipeline (``gridwatch serve``'s) into a
    fresh SQLite store, deadline clocks on event time as the workers run: every line
    submitted, timed until it drained. The collector is tuned as ``gridwatch serve``'s
    ingest tunes it while it runs (and the workers tune theirs)."""
    from gridwatch.embedded import EmbeddedPipeline
    from gridwatch.gc_tuning import GC_THRESHOLDS
    from ticketing.store import SqliteTicketStore

    store = SqliteTicketStore(workdir / f"embedded-{uuid.uuid4().hex[:6]}.sqlite3")
    pipeline = EmbeddedPipeline(config, grid, store, received=None)
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        start = time.perf_counter()
        for raw in lines:
            pipeline.submit_raw(raw, origin="bench")
        assert pipeline.drain(timeout=600), "the embedded pipeline did not drain"
        elapsed = time.perf_counter() - start
    finally:
        pipeline.close()
        gc.set_threshold(*saved)
        gc.unfreeze()
        gc.collect()
    return forwarded / elapsed


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assigned(log: Path, topic: str = "gridwatch.detections.by_cell") -> list[int] | None:
    """The partitions of ``topic`` a worker's log last said it owns; None before its
    first assignment (a member of the group may own none: see spare_hotspot_owner)."""
    marker = f"assigned {topic} partitions "
    last: list[int] | None = None
    for row in log.read_text(errors="replace").splitlines():
        if marker in row:
            last = json.loads(row.split(marker, 1)[1])
    return last


def run_workers(n: int, args: argparse.Namespace, lines: list[bytes], keys: list[bytes],
                forwarded: int, workdir: Path, *, kill: bool = False) -> dict[str, float]:
    with TansuProcess(log_path=workdir / f"tansu-{n}.log") as broker:
        settings = ScaleoutSettings(broker_url=broker.url, partitions=args.partitions,
                                    input_partitions=args.partitions)
        asyncio.run(declare_topics(settings))
        asyncio.run(produce(broker.bootstrap, lines, keys))
        store = workdir / f"tickets-{n}-{uuid.uuid4().hex[:6]}.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
        env.update({"PYTHONPATH": str(ROOT), "GRIDWATCH_KAFKA_BROKER": broker.url,
                    "GRIDWATCH_KAFKA_APP_ID": f"bench-{n}",
                    "GRIDWATCH_KAFKA_PARTITIONS": str(args.partitions),
                    "GRIDWATCH_KAFKA_INPUT_PARTITIONS": str(args.partitions),
                    "GRIDWATCH_KAFKA_EVENT_CLOCK": "1", "GRIDWATCH_KAFKA_IDLE_S": "2",
                    "GRIDWATCH_KAFKA_METRICS_S": "0.2",
                    "GRIDWATCH_KAFKA_SESSION_TIMEOUT_S": "6",
                    "GRIDWATCH_KAFKA_HEARTBEAT_S": "0.5",
                    "GRIDWATCH_KAFKA_REBALANCE_TIMEOUT_S": "8",
                    "GRIDWATCH_GRID": str(GRID),
                    "GRIDWATCH_TICKETS_URL": args.store_url or str(store)})
        if args.store_url:
            env["GRIDWATCH_TICKETS_SCHEMA"] = f"bench_{uuid.uuid4().hex[:8]}"
        env.update(item.split("=", 1) for item in args.worker_env)
        logs = [workdir / f"w{n}-{i}.log" for i in range(n)]
        started = time.monotonic()
        procs = []
        for log in logs:
            profile = ([] if args.profile is None else
                       ["-m", "cProfile", "-o", str(args.profile / f"{log.stem}.prof")])
            with log.open("wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, *profile, "-m", "gridwatch.cli", "worker"], env=env,
                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        try:
            # both groups (faust's: by-cell and hot-spot; the input pump's), every worker
            # a member of each: all partitions assigned, none to nobody (the hot-spot
            # stage's owner owns no by-cell partition while there is another worker)
            def formed_now() -> bool:
                for topic in (TOPIC_BY_CELL, TOPIC_DETECTIONS, TOPIC_HOTSPOT):
                    shares = [assigned(p, topic) for p in logs]
                    if any(share is None for share in shares):
                        return False
                    owned = sorted(sum((share or [] for share in shares), []))
                    if owned != list(range(1 if topic == TOPIC_HOTSPOT else args.partitions)):
                        return False
                    if topic == TOPIC_DETECTIONS and n > 1 and any(
                            assigned(p, TOPIC_HOTSPOT) and assigned(p, topic) for p in logs):
                        return False  # the hot-spot stage's owner is still reading input
                return True

            while not formed_now():
                time.sleep(0.2)
                if time.monotonic() - started > 180:
                    raise RuntimeError(f"group did not form; see {logs}")
            formed = time.monotonic()
            cpu_before = [cpu_s(p.pid) for p in procs]
            broker_before = cpu_s(broker.proc.pid) if broker.proc else float("nan")
            takeover = float("nan")
            at_99: float | None = None  # when 99 % were processed

            def processed_now() -> int:
                done = 0
                for log in logs:
                    m = last_metrics(log)
                    if m:  # the cells stage's own, then the hot-spot stage's (from ingest)
                        done += sum(r["processed"] + r["duplicates"]
                                    for r in m["partitions"].values())
                        hot = m.get("hotspots") or {}
                        done += hot.get("processed", 0) + hot.get("duplicates", 0)
                return done

            # what the workers processed while the groups were still forming is not part
            # of the timed run (a worker reads as soon as it owns input partitions)
            before = processed_now()
            while True:
                done = processed_now()
                if kill and done >= forwarded // 3 and len(procs) > 1 and \
                        procs[0].poll() is None:
                    procs[0].send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    # both groups: the by-cell partitions (faust) and the input (the pump)
                    while any(assigned(logs[1], topic) != list(range(
                            1 if topic == TOPIC_HOTSPOT else args.partitions))
                              for topic in (TOPIC_BY_CELL, TOPIC_DETECTIONS, TOPIC_HOTSPOT)):
                        time.sleep(0.1)
                    takeover = time.monotonic() - killed_at
                    break
                if at_99 is None and done >= 0.99 * forwarded:
                    at_99 = time.monotonic()
                if done >= forwarded:
                    break
                time.sleep(0.1)
                if time.monotonic() - formed > 600:
                    raise RuntimeError(f"only {done} of {forwarded} processed; see {logs}")
            finished = time.monotonic()
            worker_cpu = [cpu_s(p.pid) - b for p, b in zip(procs, cpu_before, strict=True)]
            broker_cpu = (cpu_s(broker.proc.pid) if broker.proc else float("nan")) - \
                broker_before
        finally:
            stop_times = []
            for proc in procs:
                if proc.poll() is None:
                    t = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    stop_times.append(time.monotonic() - t)
        return {"join_s": formed - started, "run_s": finished - formed,
                "det_per_s": (forwarded - before) / (finished - formed),
                "takeover_s": takeover, "before_formed": before,
                # the last detections of each partition wait idle_s for the others to
                # be announced idle (the end of a finite input), a fixed few seconds
                "det_per_s_99": (0.99 * forwarded - before) / ((at_99 or finished) - formed),
                "sigterm_s": max(stop_times) if stop_times else float("nan"),
                # CPU per detection during the measured run, each worker and the broker
                "worker_us": [1e6 * c / (forwarded - before) for c in worker_cpu],
                "broker_us": 1e6 * broker_cpu / (forwarded - before)}


def unprimed(n: int, args: argparse.Namespace, lines: list[bytes], keys: list[bytes],
             forwarded: int, workdir: Path, tries: int = 3) -> dict[str, Any]:
    """:func:`run_workers`, run again (up to ``tries`` times) when the workers processed
    detections before both groups had formed (one worker joined first and read alone):
    such a run starts with its pipeline already full and flatters the figure."""
    for attempt in range(1, tries + 1):
        run = run_workers(n, args, lines, keys, forwarded, workdir)
        if not run["before_formed"] or attempt == tries:
            return run
        print(f"({n} worker{'s' if n > 1 else ''}: {run['before_formed']} detections "
              f"processed before the groups formed; running again)")
    raise AssertionError("unreachable")


def report(one: dict[str, Any], two: dict[str, Any], embedded: float,
           replay_rate: float) -> None:
    print(f"to 99 % processed: 1 worker {one['det_per_s_99']:.0f} det/s "
          f"({one['det_per_s_99'] / embedded:.2f}x embedded), 2 workers "
          f"{two['det_per_s_99']:.0f} det/s "
          f"({two['det_per_s_99'] / one['det_per_s_99']:.2f}x one worker)")
    print(f"1 worker                 {one['det_per_s']:8.0f} det/s  "
          f"({one['det_per_s'] / embedded:.2f}x embedded, "
          f"{one['det_per_s'] / replay_rate:.2f}x replay; group formed in "
          f"{one['join_s']:.1f} s, {one['before_formed']} processed before; SIGTERM took "
          f"{one['sigterm_s']:.1f} s)")
    print(f"2 workers                {two['det_per_s']:8.0f} det/s  "
          f"({two['det_per_s'] / one['det_per_s']:.2f}x one worker; group formed in "
          f"{two['join_s']:.1f} s, {two['before_formed']} processed before; SIGTERM took "
          f"{two['sigterm_s']:.1f} s)")
    for name, run in (("1 worker", one), ("2 workers", two)):
        print(f"CPU per detection, {name:9s} workers "
              f"{' + '.join(f'{us:.0f}' for us in run['worker_us'])} µs, broker "
              f"{run['broker_us']:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--store-url", help="postgresql://... (default: a SQLite file)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the workers under cProfile, one .prof per worker in DIR")
    parser.add_argument("--spread", action="store_true",
                        help="a balanced input: move each copy onto other cells so the "
                             "by-cell partitions get about the same share")
    parser.add_argument("--workdir", type=Path,
                        help="keep the workers' and the broker's logs in this directory")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the workers (repeatable), e.g. "
                             "GRIDWATCH_KAFKA_ALIGN_S=0")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the embedded pipeline, one worker and two workers N "
                             "times in turn (each pair on fresh brokers) and report the "
                             "ratios of each run and their median")
    parser.add_argument("--kill", action="store_true",
                        help="also measure takeover after a kill -9 of one of two workers")
    args = parser.parse_args()
    from geo.grid import Grid

    shifts = (spread_shifts(args.copies, args.partitions, Grid.from_file(GRID))
              if args.spread else None)
    lines, keys = copies_of_sample(args.copies, shifts)

    config = load_config()
    config = config.model_copy(update={"stream": config.stream.model_copy(
        update={"lateness_s": 0})})
    t = time.perf_counter()
    result = replay_lines(lines, Grid.from_file(GRID), config)
    replay_s = time.perf_counter() - t
    s = result.summary
    forwarded = s.read - sum(s.rejected.values()) - s.stream.out_of_area
    replay_rate = forwarded / replay_s
    print(f"input: {len(lines)} lines, {forwarded} in-area detections, "
          f"{args.partitions} partitions"
          + (f", copies moved by (rows, columns) {shifts}" if shifts else ""))
    print(f"replay (in memory)       {replay_rate:8.0f} det/s")
    with tempfile.TemporaryDirectory() as tmp:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.workdir)
        ratios: list[tuple[float, float]] = []  # (one worker / embedded, two / one)
        for run in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"-- run {run} of {args.repeat}")
            embedded = embedded_rate(lines, Grid.from_file(GRID), config, Path(tmp),
                                     forwarded)
            print(f"embedded (SQLite)        {embedded:8.0f} det/s")
            one = unprimed(1, args, lines, keys, forwarded, Path(tmp))
            two = unprimed(2, args, lines, keys, forwarded, Path(tmp))
            report(one, two, embedded, replay_rate)
            ratios.append((one["det_per_s"] / embedded, two["det_per_s"] / one["det_per_s"]))
        if args.repeat > 1:
            for name, values in (("one worker x embedded", [r[0] for r in ratios]),
                                 ("two workers x one    ", [r[1] for r in ratios])):
                print(f"{name}  {', '.join(f'{v:.2f}' for v in values)} "
                      f"(median {statistics.median(values):.2f})")
        if args.kill:
            killed = run_workers(2, args, lines, keys, forwarded, Path(tmp), kill=True)
            print(f"kill -9 of one of two    survivor owned every partition of both groups "
                  f"{killed['takeover_s']:.1f} s after the kill")


if __name__ == "__main__":
    main()
