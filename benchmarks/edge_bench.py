"""Edge publish rate with the durable outbox vs a bare paho publish, and the agent's RSS.

    python benchmarks/edge_bench.py [--count 20000]

Against a private Mosquitto: (1) bare: paho QoS 1 publishes from memory, max 1000 in flight,
timed until every PUBACK; (2) outbox: the agent's path — commit to the SQLite outbox in
batches of 100 (``EdgeAgent.sink``) while the publisher drains it, timed until the outbox
is empty. (3) RSS of a ``gridwatch edge run`` process (no cameras) after start and after
COUNT/10 webhook detections.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:  # run as a script: the helpers in tests/ are needed
    sys.path.insert(0, str(ROOT_DIR))

from edge.agent import EdgeAgent  # noqa: E402
from edge.config import MetricsSettings, StationConfig, UplinkSettings  # noqa: E402
from tests.edge.helpers import spread_detection  # noqa: E402
from tests.support.mosquitto import MosquittoProcess, free_port  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402


def bare(port: int, payloads: list[tuple[str, bytes]]) -> float:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    acked = 0
    done = threading.Event()

    def on_publish(*args: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(payloads):
            done.set()

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    start = time.perf_counter()
    for topic, payload in payloads:
        c.publish(topic, payload, qos=1)
    assert done.wait(300)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return elapsed


def with_outbox(tmp: Path, port: int, count: int) -> float:
    config = StationConfig(station_id="bench", state_dir=tmp / "edge",
                           uplink=UplinkSettings(port=port), metrics=MetricsSettings(port=0))
    agent = EdgeAgent(config)
    agent.start()
    assert wait_until(lambda: bool(agent.publisher and agent.publisher.connected), 10)
    detections = [spread_detection(i, station="bench") for i in range(count)]
    start = time.perf_counter()
    for i in range(0, count, 100):
        agent.sink(detections[i:i + 100])
    # to the broker's PUBACK, as the bare publish (no centre, so no receipts here)
    assert wait_until(lambda: agent.outbox.pending == 0, 300, interval_s=0.002)
    elapsed = time.perf_counter() - start
    agent.stop()
    return elapsed


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def agent_rss(tmp: Path, port: int, posts: int) -> dict[str, int]:
    hook = free_port()
    cfg = tmp / "station.yaml"
    cfg.write_text(f"station_id: bench\nstate_dir: rss-state\nuplink: {{port: {port}}}\n"
                   f"webhook: {{port: {hook}}}\nmetrics: {{port: 0}}\nsources:\n"
                   "  - {type: access_control, id: gate, transport: webhook, lon: 113.01,"
                   " lat: 23.01, debounce_s: 0.000001}\n"
                   "  - {type: zigbee2mqtt_smoke, id: s1, device: d1, lon: 113.01, lat: 23.01}\n",
                   encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "gridwatch", "edge", "run", "--config",
                             str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{hook}/", timeout=0.5)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True

        assert wait_until(up, 20)
        time.sleep(1)
        idle = rss_kib(proc.pid)
        for _ in range(posts):
            req = urllib.request.Request(f"http://127.0.0.1:{hook}/webhook/gate",
                                         data=b'{"event": "forced"}', method="POST")
            urllib.request.urlopen(req, timeout=5).read()
        time.sleep(1)
        return {"idle_rss_kib": idle, "after_rss_kib": rss_kib(proc.pid), "posts": posts}
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n = args.count
    payloads = [(f"gridwatch/v1/bench/{d.source_id}/detection", d.to_json().encode())
                for d in (spread_detection(i, station="bare") for i in range(n))]
    with tempfile.TemporaryDirectory() as tmp, MosquittoProcess(Path(tmp) / "broker") as broker:
        bare_s = bare(broker.port, payloads)
        outbox_s = with_outbox(Path(tmp), broker.port, n)
        rss = agent_rss(Path(tmp), broker.port, max(1, n // 10))
    print(json.dumps({
        "count": n,
        "bare_paho_publish_per_s": round(n / bare_s),
        "outbox_publish_per_s": round(n / outbox_s),
        "outbox_to_bare_ratio": round(bare_s / outbox_s, 3),
        **rss,
    }, indent=2))


if __name__ == "__main__":
    main()
