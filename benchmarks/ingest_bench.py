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
Prints one JSON object with the rates and the ratios to raw.
"""

from __future__ import annotations

import argparse
import json
import logging
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
from tests.support.mosquitto import MosquittoProcess  # noqa: E402
from ticketing.store import SqliteTicketStore  # noqa: E402

FILTER = "gridwatch/v1/+/+/detection"
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


def drain_raw(port: int, count: int, client_id: str) -> float:
    """Seconds from the first message to the last (connecting is not timed)."""
    got = 0
    first = 0.0
    done = threading.Event()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal got, first
        if not got:
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
    """MqttIngest noting when its first message arrived."""

    first = 0.0

    def on_link_messages(self, batch: list[Any]) -> None:
        if not self.first:
            self.first = time.perf_counter()
        super().on_link_messages(batch)


def drain_ingest(port: int, count: int, pipeline: Any, client_id: str, *,
                 isolate: bool = True) -> float:
    """Seconds from the first message received to the last one committed and acknowledged
    (starting the client, and its process, is not timed)."""
    ingest = TimedIngest(MqttConnection(port=port), pipeline, client_id=client_id,
                         isolate=isolate)
    ingest.start()
    deadline = time.monotonic() + 600
    while ingest.stats()["committed"] < count and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed = time.perf_counter() - ingest.first
    ingest.stop()
    assert ingest.stats()["committed"] >= count, ingest.stats()
    return elapsed


def e2e(port: int, n: int, tmp: Path, client_id: str, *, isolate: bool) -> float:
    grid = Grid.from_geojson(square_grid(box(*AREA), size_m=1000))
    store = SqliteTicketStore(tmp / f"{client_id}.sqlite")
    pipeline = EmbeddedPipeline(load_config(), grid, store)
    try:
        return n / drain_ingest(port, n, pipeline, client_id, isolate=isolate)
    finally:
        pipeline.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n = args.count
    variants = ("raw", "ingest", "ingest_thread", "e2e", "e2e_thread")
    rates: dict[str, list[float]] = {v: [] for v in variants}
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
                if v == "raw":
                    rate = n / drain_raw(broker.port, n, cid)
                elif v.startswith("ingest"):
                    rate = n / drain_ingest(broker.port, n, InstantPipeline(), cid,
                                            isolate=v == "ingest")
                else:
                    rate = e2e(broker.port, n, Path(tmp), cid, isolate=v == "e2e")
                rates[v].append(rate)
    raw = statistics.median(rates["raw"])
    result: dict[str, Any] = {"count": n, "rounds": args.rounds,
                              "preload_publish_per_s": round(n / preload_s)}
    for v in variants:
        result[f"{v}_per_s"] = [round(x) for x in rates[v]]
        result[f"{v}_per_s_median"] = round(statistics.median(rates[v]))
        if v != "raw":
            result[f"{v}_to_raw_ratio_median"] = round(statistics.median(rates[v]) / raw, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
