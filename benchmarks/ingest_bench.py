"""Centre ingest rate from Mosquitto vs the raw paho subscribe rate, same broker, same run.

    python benchmarks/ingest_bench.py [--count 20000] [--rounds 3]

A private Mosquitto (max_queued_messages 0, max_inflight_messages 1000) is pre-loaded with
COUNT valid detections queued for persistent sessions; each session is then drained in turn
and timed (ROUNDS rounds of raw and ingest, alternating which goes first; medians):

1. raw:     a bare paho client, QoS 1, auto-ack, counting messages (the ceiling);
2. ingest:  MqttIngest (validate, topic check, dedup, manual ack) with a pipeline stand-in
            that commits at once — the ingest's own cost;
3. e2e:     MqttIngest + the real EmbeddedPipeline into SQLite tickets (ack after commit).

Prints one JSON object with the rates and the ratios ingest/raw and e2e/raw.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from shapely.geometry import box

from detectors.schema import Detection
from edge.config import MqttConnection
from edge.testing import MosquittoProcess
from geo.grid import Grid
from geo.make import square_grid
from gridwatch.config import load_config
from gridwatch.embedded import EmbeddedPipeline, SubmitResult
from gridwatch.ingest import MqttIngest
from ticketing.store import SqliteTicketStore

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
    got = 0
    done = threading.Event()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got >= count:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_message = on_message
    start = time.perf_counter()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(600), f"raw got {got} of {count}"
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return elapsed


class InstantPipeline:
    """Stand-in for EmbeddedPipeline: commits at once (isolates the ingest's own cost)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def submit(self, d: Detection, *, on_committed: Callable[[], None] | None = None
               ) -> SubmitResult:
        duplicate = d.event_id in self.seen
        self.seen.add(d.event_id)
        if on_committed is not None:
            on_committed()
        return SubmitResult(True, duplicate=duplicate)


def drain_ingest(port: int, count: int, pipeline: Any, client_id: str) -> float:
    ingest = MqttIngest(MqttConnection(port=port), pipeline, client_id=client_id)
    start = time.perf_counter()
    ingest.start()
    deadline = time.monotonic() + 600
    while ingest.stats()["committed"] < count and time.monotonic() < deadline:
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    ingest.stop()
    assert ingest.stats()["committed"] >= count, ingest.stats()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n = args.count
    raw_rates: list[float] = []
    ingest_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, MosquittoProcess(Path(tmp) / "broker") as broker:
        for r in range(args.rounds):
            for client_id in (f"bench-raw-{r}", f"bench-ingest-{r}"):
                subscribe_session(broker.port, client_id)
        subscribe_session(broker.port, "bench-e2e")
        t = time.perf_counter()
        preload(broker.port, n)
        preload_s = time.perf_counter() - t
        for r in range(args.rounds):
            # alternate the order so neither side always runs on a warmer machine
            order = ("raw", "ingest") if r % 2 == 0 else ("ingest", "raw")
            for which in order:
                if which == "raw":
                    raw_rates.append(n / drain_raw(broker.port, n, f"bench-raw-{r}"))
                else:
                    ingest_rates.append(n / drain_ingest(broker.port, n, InstantPipeline(),
                                                         f"bench-ingest-{r}"))
        grid = Grid.from_geojson(square_grid(box(*AREA), size_m=1000))
        store = SqliteTicketStore(Path(tmp) / "tickets.sqlite")
        pipeline = EmbeddedPipeline(load_config(), grid, store)
        e2e_rate = n / drain_ingest(broker.port, n, pipeline, "bench-e2e")
        pipeline.close()
    raw = statistics.median(raw_rates)
    ingest = statistics.median(ingest_rates)
    result = {
        "count": n,
        "rounds": args.rounds,
        "preload_publish_per_s": round(n / preload_s),
        "raw_paho_subscribe_per_s": [round(x) for x in raw_rates],
        "ingest_per_s": [round(x) for x in ingest_rates],
        "ingest_to_raw_ratio_median": round(ingest / raw, 3),
        "e2e_to_tickets_per_s": round(e2e_rate),
        "e2e_to_raw_ratio": round(e2e_rate / raw, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
