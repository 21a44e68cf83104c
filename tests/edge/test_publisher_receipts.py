"""The publisher's side of receipts (issue 12 part 1), on a real private Mosquitto with a
hand-driven "centre" (a raw client that receipts what it chooses) and a clock the test
moves: rows leave the outbox only on a receipt; what stays unreceipted is sent again after
its timeout, doubling; a silent centre gets one probe per timeout, not the backlog."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from detectors.receipt_message import COMMITTED, DEADLETTERED, Receipt, encode_receipt
from detectors.topics import detection_topic, receipt_topic
from edge.config import UplinkSettings
from edge.metrics import EdgeMetrics
from edge.outbox import Outbox
from edge.publisher import Publisher
from tests.edge.helpers import listening, spread_detection, unique
from tests.support.mosquitto import MosquittoProcess
from tests.support.waiting import wait_until

TIMEOUT_S = 100.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    with MosquittoProcess(tmp_path / "broker") as b:
        yield b


class Rig:
    """An outbox of ``n`` detections, its publisher running in a thread, a listener on the
    station's detections, and a raw client that publishes receipts."""

    def __init__(self, tmp_path: Path, broker: MosquittoProcess, n: int) -> None:
        self.station = unique("st")
        self.clock = Clock(10_000.0)
        self.outbox = Outbox(tmp_path / "outbox.sqlite")
        self.ids = []
        for i in range(n):
            d = spread_detection(i, station=self.station)
            self.outbox.put_detection(d, detection_topic("gridwatch/v1", self.station,
                                                         d.source_id))
            self.ids.append(d.event_id)
        self.metrics = EdgeMetrics(self.station)
        settings = UplinkSettings(port=broker.port, reconnect_max_s=1,
                                  receipt_timeout_s=TIMEOUT_S, receipt_timeout_max_s=250)
        self.publisher = Publisher(settings, self.station, self.outbox, self.metrics,
                                   clock=self.clock)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.publisher.run, args=(self.stop,))
        self.centre = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("centre"))
        self.centre.connect("127.0.0.1", broker.port)
        self.centre.loop_start()

    def receipt(self, *event_ids: str, payload: bytes | None = None,
                station: str | None = None) -> None:
        if payload is None:
            r = Receipt()
            for event_id in event_ids:
                r.add("detection", event_id, COMMITTED)
            payload = encode_receipt(r)
        self.centre.publish(receipt_topic("gridwatch/v1", station or self.station), payload,
                            qos=1).wait_for_publish(10)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.publisher.wake.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.centre.loop_stop()
        self.centre.disconnect()
        self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path, broker: MosquittoProcess) -> Iterator[Rig]:
    r = Rig(tmp_path, broker, 6)
    yield r
    r.close()


def test_rows_leave_only_on_their_receipt(rig: Rig, broker: MosquittoProcess) -> None:
    with listening(broker.url, f"gridwatch/v1/{rig.station}/+/detection") as uplink:
        rig.thread.start()
        assert wait_until(lambda: rig.outbox.pending == 0 and len(uplink.snapshot()) == 6, 10)
        assert wait_until(lambda: rig.publisher.connected, 10)
    assert (rig.outbox.depth, rig.outbox.awaiting_receipt) == (6, 6)  # PUBACK: not enough
    rig.receipt(payload=b"{broken")  # ignored and counted
    rig.receipt(rig.ids[0], station=unique("st"))  # another station's: never reaches us
    r = Receipt()
    r.add("detection", rig.ids[0], COMMITTED)
    r.add("detection", rig.ids[1], DEADLETTERED, "clock_skew")
    r.add("detection", "ghost", COMMITTED)  # not ours: ignored and counted
    rig.receipt(payload=encode_receipt(r))
    assert wait_until(lambda: rig.outbox.depth == 4, 10)
    assert rig.publisher.bad_receipts == 1
    counters = rig.outbox.counters()
    assert (counters["receipted"], counters["receipts_unknown"]) == (2, 1)
    rig.receipt(*rig.ids[2:])
    assert wait_until(lambda: rig.outbox.depth == 0, 10)
    from prometheus_client import generate_latest

    text = generate_latest(rig.metrics.registry).decode()
    assert "gridwatch_edge_receipted_total 6.0" in text
    assert "gridwatch_edge_receipts_unknown_total 1.0" in text
    assert 'gridwatch_edge_deadlettered_total{channel="detection",code="clock_skew"} 1.0' in text
    assert "gridwatch_edge_outbox_awaiting_receipt 0.0" in text


def test_a_lost_one_is_sent_again_and_a_silent_centre_only_gets_probes(
        rig: Rig, broker: MosquittoProcess) -> None:
    def seen(uplink: object, event_id: str) -> int:
        import json

        return sum(json.loads(p)["event_id"] == event_id
                   for p in uplink.snapshot())  # type: ignore[attr-defined]

    with listening(broker.url, f"gridwatch/v1/{rig.station}/+/detection") as uplink:
        rig.thread.start()
        assert wait_until(lambda: rig.outbox.awaiting_receipt == 6, 10)
        # the centre answers all but ids[3] (as if the broker had lost it)
        rig.receipt(*(rig.ids[:3] + rig.ids[4:]))
        assert wait_until(lambda: rig.outbox.depth == 1, 10)
        rig.advance(TIMEOUT_S - 1)
        rig.advance(0)
        assert not wait_until(lambda: seen(uplink, rig.ids[3]) > 1, 1.5)  # not due yet
        rig.advance(2)  # due: the centre answered after it was sent, so it was lost
        assert wait_until(lambda: seen(uplink, rig.ids[3]) == 2, 10)
        rig.receipt(rig.ids[3])
        assert wait_until(lambda: rig.outbox.depth == 0, 10)

        # now the centre goes silent: six more rows, none receipted
        for i in range(6, 12):
            d = spread_detection(i, station=rig.station)
            rig.outbox.put_detection(d, detection_topic("gridwatch/v1", rig.station,
                                                        d.source_id))
            rig.ids.append(d.event_id)
        rig.publisher.wake.set()
        assert wait_until(lambda: rig.outbox.awaiting_receipt == 6, 10)
        before = len(uplink.snapshot())
        for step in range(3):  # three timeouts of silence: one probe each, no more
            rig.advance(TIMEOUT_S + 1)
            want = before + step + 1
            assert wait_until(lambda: len(uplink.snapshot()) == want, 10), step  # noqa: B023
            rig.publisher.wake.set()
            assert not wait_until(lambda: len(uplink.snapshot()) > want, 1.5)  # noqa: B023
        assert rig.publisher.resent == 1 + 3
        # the centre is back and answers the probe: the other overdue rows get one more
        # timeout to be receipted from the broker's queue, then are sent again
        probed = [rig.ids[i] for i in range(6, 12) if seen(uplink, rig.ids[i]) > 1]
        rig.receipt(*probed)
        assert wait_until(lambda: rig.outbox.depth == 6 - len(probed), 10)
        rig.advance(TIMEOUT_S / 2)
        assert not wait_until(lambda: len(uplink.snapshot()) > before + 3, 1.5)
        rig.advance(TIMEOUT_S)
        assert wait_until(lambda: len(uplink.snapshot()) == before + 3 + 6 - len(probed), 10)
        rig.receipt(*rig.ids[6:])
        assert wait_until(lambda: rig.outbox.depth == 0, 10)
    assert rig.outbox.counters()["dropped"] == 0
