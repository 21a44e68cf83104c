"""Centre ingest rate from Mosquitto vs the raw paho subscribe rate, same broker, same run.

    python benchmarks/ingest_bench.py [--count 20000] [--rounds 3]

A private Mosquitto (max_queued_messages 0, max_inflight_messages 1000) is pre-loaded with
COUNT valid detections queued for persistent sessions; each session is then drained in turn
and timed (ROUNDS rounds of every variant, rotating which goes first; medians):

1. raw:     a bare paho client, QoS 1, auto-ack, counting messages (the ceiling);
2. ingest:  MqttIngest as ``gridwatch serve`` runs it (paho in a child process; validate,
            topic check, dedup, manual ack in this one) with a pipeline stand-in that
            commits at once — the ingest's own cost;
   ingest_thread: the same with paho in a thread of this process (``--ingest-thread``);
3. e2e:     MqttIngest + the real EmbeddedPipeline into SQLite tickets (ack after commit),
            as ``gridwatch serve`` runs it; e2e_thread: with paho in a thread.

Every rate is timed from the first message received to the last one counted (raw) or
committed and acknowledged (ingest): connecting, and starting the child process, is not.

CPU accounting: over the same window, each process's CPU time (user + system, from
``/proc/PID/stat``) divided by the messages: ``cpu_us_per_msg`` has, per variant, the
median over rounds of ``broker`` (Mosquitto), ``centre`` (this process: the raw
subscriber for ``raw``, the ingest and pipeline otherwise) and ``mqtt_child`` (the ingest's
MQTT process, for the isolated variants), in CPU-µs per message, ``cores`` (their sum
divided by the window: how many cores the variant kept busy) and ``machine_cores`` (every
process of the machine, from ``/proc/stat``: near 2 on a 2-core box means others were
competing for the cores). ``cpu_us_per_msg_rounds`` has each round's figures.

Prints one JSON object with the rates, the ratios to raw and the CPU accounting.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from shapely.geometry import box

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:  # run as a script: the helpers in tests/ are needed
    sys.path.insert(0, str(ROOT_DIR))

from configs.mqtt import MqttConnection  # noqa: E402
from detectors.schema import Detection  # noqa: E402
from geo.grid import Grid  # noqa: E402
from geo.make import square_grid  # noqa: E402
from gridwatch.config import load_config  # noqa: E402
from gridwatch.embedded import EmbeddedPipeline, Submission, SubmitResult  # noqa: E402
from gridwatch.ingest import MqttIngest  # noqa: E402
from gridwatch.mqtt_link import ProcessLink  # noqa: E402
from tests.support.mosquitto import MosquittoProcess  # noqa: E402
from ticketing.store import SqliteTicketStore  # noqa: E402

FILTER = "gridwatch/v1/+/+/detection"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
AREA = (113.00, 23.00, 113.05, 23.05)
T0 = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)


def detection(i: int) -> Detection:
    x0, y0, x1, y1 = AREA
    kind = ("door_forced", "smoke", "door_held_open")[i % 3]
    return Detection.new(
        event_id=f"bench:e{i}", observed_at=T0 + timedelta(seconds=i), station_id="bench",
        source_id=f"src-{i % 50}", source_type="access_control", kind=kind, confidence=0.9,
        lon=x0 + 0.001 + (x1 - x0 - 0.002) * ((i * 7919) % 1000) / 1000,
        lat=y0 + 0.001 + (y1 - y0 - 0.002) * ((i * 104729) % 997) / 997)


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process has used; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14, 15)


def box_busy_s() -> float:
    """CPU seconds all processes of the machine have used (``/proc/stat``: every state
    but idle and iowait), to see what else ran meanwhile."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) * TICK_S


class CpuWindow:
    """CPU seconds of some processes between :meth:`begin` and :meth:`end`."""

    def __init__(self, **pids: int | None) -> None:
        self.pids = pids
        self.start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def begin(self) -> None:
        self.start = {name: cpu_s(pid) for name, pid in self.pids.items()}
        self.start["machine"] = box_busy_s()

    def end(self) -> None:
        self.used = {name: cpu_s(pid) - self.start.get(name, 0.0)
                     for name, pid in self.pids.items() if pid is not None}
        self.used["machine"] = box_busy_s() - self.start["machine"]


def subscribe_session(port: int, client_id: str) -> None:
    """Create a persistent session subscribed to FILTER, then leave."""
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_connect = lambda cl, *a: cl.subscribe(FILTER, qos=1)
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def preload(port: int, count: int) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(f"gridwatch/v1/bench/src-{i % 50}/detection",
                       detection(i).to_json().encode(), qos=1) for i in range(count)]
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def drain_raw(port: int, count: int, client_id: str, cpu: CpuWindow) -> float:
    """Seconds from the first message to the last (connecting is not timed)."""
    got = 0
    first = 0.0
    done = threading.Event()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal got, first
        if not got:
            cpu.begin()
            first = time.perf_counter()
        got += 1
        if got >= count:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(600), f"raw got {got} of {count}"
    elapsed = time.perf_counter() - first
    cpu.end()
    c.disconnect()
    c.loop_stop()
    return elapsed


class InstantPipeline:
    """Stand-in for EmbeddedPipeline: commits at once (isolates the ingest's own cost)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def submit_many(self, items: list[Submission]) -> list[SubmitResult]:
        results = []
        for d, on_committed, *_ in items:
            duplicate = d.event_id in self.seen
            self.seen.add(d.event_id)
            if on_committed is not None:
                on_committed()
            results.append(SubmitResult(True, duplicate=duplicate))
        return results


class TimedIngest(MqttIngest):
    """MqttIngest noting when its first message arrived, and the CPU window from then."""

    first = 0.0
    broker_pid: int | None = None
    cpu: CpuWindow | None = None

    def on_link_messages(self, batch: list[Any]) -> None:
        if not self.first:
            # built here, not after start(): the first batch may come before start()
            # returns; the link (and its child) exist by now
            link = self._link
            self.cpu = CpuWindow(broker=self.broker_pid, centre=os.getpid(),
                                 mqtt_child=link.pid if isinstance(link, ProcessLink)
                                 else None)
            self.cpu.begin()
            self.first = time.perf_counter()
        super().on_link_messages(batch)


def drain_ingest(port: int, count: int, pipeline: Any, client_id: str, *,
                 isolate: bool = True, broker_pid: int | None = None,
                 cpu: dict[str, float] | None = None) -> float:
    """Seconds from the first message received to the last one committed and acknowledged
    (starting the client, and its process, is not timed). ``cpu`` gets each process's
    CPU seconds over that window."""
    ingest = TimedIngest(MqttConnection(port=port), pipeline, client_id=client_id,
                         isolate=isolate)
    ingest.broker_pid = broker_pid
    ingest.start()
    deadline = time.monotonic() + 600
    while ingest.stats()["committed"] < count and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed = time.perf_counter() - ingest.first
    assert ingest.cpu is not None
    ingest.cpu.end()  # before stop(): the child exits there
    if cpu is not None:
        cpu.update(ingest.cpu.used)
    ingest.stop()
    assert ingest.stats()["committed"] >= count, ingest.stats()
    return elapsed


def e2e(port: int, n: int, tmp: Path, client_id: str, *, isolate: bool,
        broker_pid: int | None, cpu: dict[str, float]) -> float:
    grid = Grid.from_geojson(square_grid(box(*AREA), size_m=1000))
    store = SqliteTicketStore(tmp / f"{client_id}.sqlite")
    pipeline = EmbeddedPipeline(load_config(), grid, store)
    try:
        return n / drain_ingest(port, n, pipeline, client_id, isolate=isolate,
                                broker_pid=broker_pid, cpu=cpu)
    finally:
        pipeline.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="raw,ingest,ingest_thread,e2e,e2e_thread",
                        help="which to run, comma-separated (raw is always run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n = args.count
    known = ("raw", "ingest", "ingest_thread", "e2e", "e2e_thread")
    wanted = set(args.variants.split(",")) | {"raw"}
    if wanted - set(known):
        raise SystemExit(f"--variants: expected some of {', '.join(known)}, got "
                         f"{args.variants}")
    variants = tuple(v for v in known if v in wanted)
    rates: dict[str, list[float]] = {v: [] for v in variants}
    # per variant, per process: CPU-µs per message of each round; cores kept busy
    cpu_us: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    with tempfile.TemporaryDirectory() as tmp, MosquittoProcess(Path(tmp) / "broker") as broker:
        for r in range(args.rounds):
            for v in variants:
                subscribe_session(broker.port, f"bench-{v}-{r}")
        t = time.perf_counter()
        preload(broker.port, n)
        preload_s = time.perf_counter() - t
        for r in range(args.rounds):
            # rotate the order so no variant always runs on a warmer machine
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                cid = f"bench-{v}-{r}"
                gc.collect()  # no round pays for the garbage of the one before
                broker_pid = broker.proc.pid if broker.proc is not None else None
                used: dict[str, float] = {}
                if v == "raw":
                    window = CpuWindow(broker=broker_pid, centre=os.getpid())
                    rate = n / drain_raw(broker.port, n, cid, window)
                    used = window.used
                elif v.startswith("ingest"):
                    rate = n / drain_ingest(broker.port, n, InstantPipeline(), cid,
                                            isolate=v == "ingest", broker_pid=broker_pid,
                                            cpu=used)
                else:
                    rate = e2e(broker.port, n, Path(tmp), cid, isolate=v == "e2e",
                               broker_pid=broker_pid, cpu=used)
                rates[v].append(rate)
                machine = used.pop("machine", 0.0)
                for name, seconds in used.items():
                    cpu_us[v].setdefault(name, []).append(seconds / n * 1e6)
                cpu_us[v].setdefault("cores", []).append(sum(used.values()) * rate / n)
                cpu_us[v].setdefault("machine_cores", []).append(machine * rate / n)
    raw = statistics.median(rates["raw"])
    result: dict[str, Any] = {"count": n, "rounds": args.rounds,
                              "preload_publish_per_s": round(n / preload_s)}
    for v in variants:
        result[f"{v}_per_s"] = [round(x) for x in rates[v]]
        result[f"{v}_per_s_median"] = round(statistics.median(rates[v]))
        if v != "raw":
            result[f"{v}_to_raw_ratio_median"] = round(statistics.median(rates[v]) / raw, 3)
    result["cpu_us_per_msg"] = {
        v: {name: round(statistics.median(values), 2 if "cores" in name else 1)
            for name, values in per.items()} for v, per in cpu_us.items()}
    result["cpu_us_per_msg_rounds"] = {
        v: {name: [round(x, 2 if "cores" in name else 1) for x in values]
            for name, values in per.items()} for v, per in cpu_us.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
