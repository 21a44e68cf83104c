"""What the centre's receipts cost: end-to-end ingest into SQLite tickets with receipts on
vs off, same broker, same run.

    python benchmarks/receipts_bench.py [--count 20000] [--rounds 3] [--stations 20]

A private Mosquitto is pre-loaded with COUNT detections from STATIONS stations, queued for
two persistent sessions per round; each is drained by ``MqttIngest`` + the real
``EmbeddedPipeline`` into a fresh SQLite ticket store, as ``gridwatch serve`` runs it
(MQTT client in its own process), once with receipts (the default: one receipt message per
station per committed batch) and once without, alternating which goes first. Every rate is
timed from the first message received to the last one committed and acknowledged. Prints
one JSON object: the rates, the receipt messages sent, and the median ratio on/off.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from shapely.geometry import box

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:  # run as a script: the helpers in tests/ are needed
    sys.path.insert(0, str(ROOT_DIR))

from benchmarks.ingest_bench import AREA, T0, subscribe_session  # noqa: E402
from configs.mqtt import MqttConnection  # noqa: E402
from detectors.schema import Detection  # noqa: E402
from geo.grid import Grid  # noqa: E402
from geo.make import square_grid  # noqa: E402
from gridwatch.config import load_config  # noqa: E402
from gridwatch.embedded import EmbeddedPipeline  # noqa: E402
from gridwatch.ingest import MqttIngest  # noqa: E402
from tests.support.mosquitto import MosquittoProcess  # noqa: E402
from ticketing.store import SqliteTicketStore  # noqa: E402


def detection(i: int, stations: int, salt: str) -> Detection:
    x0, y0, x1, y1 = AREA
    return Detection.new(
        event_id=f"{salt}:e{i}", observed_at=T0 + timedelta(seconds=i),
        station_id=f"st{i % stations}", source_id=f"src-{i % 50}",
        source_type="access_control", kind=("door_forced", "smoke")[i % 2], confidence=0.9,
        lon=x0 + 0.001 + (x1 - x0 - 0.002) * ((i * 7919) % 1000) / 1000,
        lat=y0 + 0.001 + (y1 - y0 - 0.002) * ((i * 104729) % 997) / 997)


def preload(port: int, count: int, stations: int, salt: str) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{salt}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = []
    for i in range(count):
        d = detection(i, stations, salt)
        infos.append(c.publish(f"gridwatch/v1/{d.station_id}/{d.source_id}/detection",
                               d.to_json().encode(), qos=1))
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


class TimedIngest(MqttIngest):
    first = 0.0

    def on_link_messages(self, batch: list[Any]) -> None:
        if not self.first:
            self.first = time.perf_counter()
        super().on_link_messages(batch)


def drain(port: int, count: int, tmp: Path, client_id: str, *, receipts: bool
          ) -> tuple[float, int]:
    grid = Grid.from_geojson(square_grid(box(*AREA), size_m=1000))
    store = SqliteTicketStore(tmp / f"{client_id}.sqlite")
    pipeline = EmbeddedPipeline(load_config(), grid, store)
    ingest = TimedIngest(MqttConnection(port=port), pipeline, client_id=client_id,
                         receipts=receipts)
    try:
        ingest.start()
        deadline = time.monotonic() + 600
        while ingest.stats()["committed"] < count and time.monotonic() < deadline:
            time.sleep(0.002)
        elapsed = time.perf_counter() - ingest.first
        assert ingest.stats()["committed"] >= count, ingest.stats()
        pipeline.drain(60)
        sent = int(ingest.stats()["receipts_sent"])
    finally:
        ingest.stop()
        pipeline.close()
        store.close()
        forget = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True)  # later rounds must not queue for it
        forget.connect("127.0.0.1", port)
        forget.loop_start()
        forget.disconnect()
        forget.loop_stop()
    return count / elapsed, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stations", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rates: dict[str, list[float]] = {"receipts_on": [], "receipts_off": []}
    receipts_sent: list[int] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with MosquittoProcess(tmp / "broker") as broker:
            for r in range(args.rounds):
                order = [True, False] if r % 2 == 0 else [False, True]
                ids = {on: f"bench-{r}-{'on' if on else 'off'}" for on in order}
                for on in order:
                    subscribe_session(broker.port, ids[on])
                preload(broker.port, args.count, args.stations, f"r{r}")
                for on in order:
                    rate, sent = drain(broker.port, args.count, tmp, ids[on], receipts=on)
                    rates["receipts_on" if on else "receipts_off"].append(round(rate))
                    if on:
                        receipts_sent.append(sent)
    ratios = [on / off for on, off in zip(rates["receipts_on"], rates["receipts_off"],
                                          strict=True)]
    print(json.dumps({
        "count": args.count, "stations": args.stations, **rates,
        "receipt_messages": receipts_sent,
        "on_per_s_median": statistics.median(rates["receipts_on"]),
        "off_per_s_median": statistics.median(rates["receipts_off"]),
        "on_to_off_ratio_median": round(statistics.median(ratios), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
