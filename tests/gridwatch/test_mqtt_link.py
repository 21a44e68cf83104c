"""The ingest's MQTT client in a child process: replaced when it dies, gone when its parent
dies, and re-delivery after a failed batch (both links), against a real Mosquitto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from configs.mqtt import MqttConnection
from detectors.schema import Detection
from gridwatch.embedded import Submission, SubmitResult
from gridwatch.ingest import MqttIngest
from tests.edge.helpers import Centre, spread_detection, unique
from tests.support.mosquitto import MosquittoProcess
from tests.support.waiting import wait_until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    with MosquittoProcess(tmp_path / "broker") as b:
        yield b


def publish(port: int, detections: list[Detection], *, pause_every: int = 0) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    pub.max_inflight_messages_set(200)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = []
    for i, d in enumerate(detections):
        infos.append(pub.publish(f"gridwatch/v1/{d.station_id}/{d.source_id}/detection",
                                 d.to_json(), qos=1))
        if pause_every and i % pause_every == 0:
            time.sleep(0.01)
    for info in infos:
        info.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()


def test_a_killed_mqtt_process_is_replaced_and_nothing_is_lost(
        tmp_path: Path, broker: MosquittoProcess) -> None:
    station = unique("st")
    centre = Centre(tmp_path, broker.url, isolate=True).start()
    link = centre.ingest._link
    try:
        detections = [spread_detection(i, station=station) for i in range(3000)]
        sender = threading.Thread(target=publish, args=(broker.port, detections),
                                  kwargs={"pause_every": 50})
        sender.start()
        assert wait_until(lambda: centre.ingest.stats()["committed"] >= 500, 30)
        first_pid = link.pid
        os.kill(first_pid, signal.SIGKILL)  # mid-stream, with messages in flight
        sender.join(60)
        assert wait_until(lambda: centre.ingest.stats()["committed"] >= 3000, 60), \
            centre.ingest.stats()
        assert link.restarts == 1 and link.pid != first_pid
        counts = centre.ticket_event_ids()
        assert set(counts) == {d.event_id for d in detections}
        assert max(counts.values()) == 1
    finally:
        centre.close()


CHILD_OF_A_DOOMED_PARENT = """
import sys, time
from configs.mqtt import MqttConnection
from gridwatch.mqtt_link import ProcessLink

class Handler:
    def on_link_message(self, *a): pass
    def on_link_connected(self, *a): print("connected", flush=True)
    def on_link_subscribed(self): pass
    def on_link_disconnected(self, *a): pass

if __name__ == "__main__":
    link = ProcessLink(MqttConnection(port=int(sys.argv[1])), client_id=sys.argv[2],
                       filters=[("gridwatch/v1/+/+/detection", 1)])
    link.start(Handler())
    print(link.pid, flush=True)
    time.sleep(60)
"""


def test_the_mqtt_process_exits_when_its_parent_is_killed(
        tmp_path: Path, broker: MosquittoProcess) -> None:
    script = tmp_path / "parent.py"
    script.write_text(CHILD_OF_A_DOOMED_PARENT, encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script), str(broker.port), unique("c")],
                              stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "connected"
        os.kill(child_pid, 0)  # alive
        parent.kill()
        parent.wait(10)

        def gone() -> bool:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                return True
            # a zombie of the dead parent counts as gone (init reaps it)
            stat = Path(f"/proc/{child_pid}/stat")
            return not stat.exists() or stat.read_text().split()[2] == "Z"

        assert wait_until(gone, 10), "the MQTT process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


class FailingOncePipeline:
    """Fails each detection's first attempt (no ack, on_failed), commits repeats: what the
    embedded pipeline does when its stream core raises."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.committed: set[str] = set()
        self.lock = threading.Lock()

    def submit_many(self, items: list[Submission]) -> list[SubmitResult]:
        results = []
        for d, on_committed, on_failed, *_ in items:
            with self.lock:
                n = self.attempts[d.event_id] = self.attempts.get(d.event_id, 0) + 1
            if n == 1:
                assert on_failed is not None
                on_failed()
            else:
                with self.lock:
                    self.committed.add(d.event_id)
                if on_committed is not None:
                    on_committed()
            results.append(SubmitResult(True))
        return results


@pytest.mark.parametrize("isolate", [False, True], ids=["thread", "process"])
def test_a_failed_batch_is_redelivered_after_a_reconnect(
        tmp_path: Path, broker: MosquittoProcess, isolate: bool) -> None:
    pipeline = FailingOncePipeline()
    ingest = MqttIngest(MqttConnection(port=broker.port), pipeline,  # type: ignore[arg-type]
                        client_id=unique("centre"), isolate=isolate, retry_after_s=0.2)
    ingest.start()
    try:
        assert ingest.wait_subscribed(10)
        detections = [spread_detection(i, station=unique("st")) for i in range(20)]
        publish(broker.port, detections)
        ids = {d.event_id for d in detections}
        assert wait_until(lambda: pipeline.committed == ids, 30), pipeline.attempts
        assert ingest.stats()["reconnects_for_redelivery"] >= 1
        assert all(n >= 2 for n in pipeline.attempts.values())
    finally:
        ingest.stop()


class _Quiet:
    def __init__(self) -> None:
        self.connected = threading.Event()

    def on_link_messages(self, *a: object) -> None: pass
    def on_link_connected(self, *a: object) -> None: self.connected.set()
    def on_link_subscribed(self) -> None: pass
    def on_link_disconnected(self, *a: object) -> None: pass


def test_stop_right_after_a_large_batch_delivers_every_publish(
        broker: MosquittoProcess) -> None:
    # stop() used to write its stop sentinel to the pipe from the caller's thread while
    # the sender thread was still writing a batch: the frames interleaved, the child's
    # command thread died (UnpicklingError) and the last commands were lost
    from gridwatch.mqtt_link import ProcessLink

    topic = f"gridwatch/test/{unique('stop')}"
    got: set[bytes] = set()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("sub"))
    sub.on_message = lambda c, u, m: got.add(m.payload[:8])
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    try:
        for round_ in range(3):
            handler = _Quiet()
            link = ProcessLink(MqttConnection(port=broker.port), client_id=unique("link"),
                               filters=[(f"{topic}/none", 1)])
            link.start(handler)
            assert handler.connected.wait(10)
            for i in range(40):  # ~8 MB in one batch: writing it takes a while
                link.publish(topic, f"{round_:02d}-{i:05d}".encode() + bytes(200_000))
            link.stop()
        expected = {f"{r:02d}-{i:05d}".encode() for r in range(3) for i in range(40)}
        assert wait_until(lambda: got >= expected, 30), len(expected - got)
    finally:
        sub.loop_stop()
        sub.disconnect()


def _drain(port: int, client_id: str, count: int, timeout_s: float = 20.0
           ) -> tuple[mqtt.Client, list[mqtt.MQTTMessage]]:
    """A persistent manual-ack session that has received ``count`` messages (still
    connected, nothing acknowledged)."""
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        if len(got) >= count:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                    manual_ack=True)
    c.on_message = on_message
    c.on_connect = lambda cl, *a: cl.subscribe("gridwatch/v1/+/+/detection", qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(timeout_s), f"got {len(got)} of {count}"
    return c, got


def test_many_acknowledgements_in_one_write_settle_each_message(
        broker: MosquittoProcess) -> None:
    from gridwatch.mqtt_link import acknowledge_many

    station = unique("st")
    cid = unique("acks")
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    subscriber.on_connect = lambda cl, *a: cl.subscribe("gridwatch/v1/+/+/detection", qos=1)
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    time.sleep(0.5)  # the session exists and is subscribed; now away
    subscriber.disconnect()
    subscriber.loop_stop()
    publish(broker.port, [spread_detection(i, station=station) for i in range(300)])

    client, got = _drain(broker.port, cid, 300)
    acked = got[:200]  # settled in one write; the other 100 not at all
    acknowledge_many(client, [(m.mid, m.qos) for m in acked])
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()

    # the broker re-delivers exactly the 100 that were not acknowledged
    client, again = _drain(broker.port, cid, 100)
    time.sleep(0.5)  # and nothing more comes
    client.disconnect()
    client.loop_stop()
    assert sorted(m.payload for m in again) == sorted(m.payload for m in got[200:])


def test_a_read_ahead_socket_hands_out_the_stream_unchanged() -> None:
    import socket as socketlib

    from gridwatch.mqtt_link import ReadAheadSocket

    left, right = socketlib.socketpair()
    right.setblocking(False)
    sock = ReadAheadSocket(right)
    try:
        with pytest.raises(BlockingIOError):  # nothing sent yet: as the socket says
            sock.recv(1)
        stream = bytes(range(256)) * 1000  # 256,000 bytes: several read-aheads
        sender = threading.Thread(target=left.sendall, args=(stream,))
        sender.start()  # more than the socket buffers: sent while read
        got = bytearray()
        sizes = [1, 1, 2, 300, 7, 70_000, 5]
        k = 0
        while len(got) < len(stream):
            try:
                part = sock.recv(sizes[k % len(sizes)])
            except BlockingIOError:
                time.sleep(0.001)
                continue
            assert len(part) <= sizes[k % len(sizes)]
            got += part
            k += 1
            assert sock.pending() >= 0
        sender.join(10)
        assert bytes(got) == stream
        assert sock.pending() == 0
        assert sock.fileno() == right.fileno()  # the rest is the socket's own
        left.close()
        assert sock.recv(10) == b""  # the end of the stream is passed on
    finally:
        right.close()
