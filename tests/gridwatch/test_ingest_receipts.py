"""The centre's receipts (issue 12 part 1), through a real private Mosquitto: every event id
the centre settles is named once in a receipt on its own station's topic, with its
outcome, and receipts come in batches, not one per detection."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from detectors.receipt_message import COMMITTED, DEADLETTERED, DUPLICATE, parse_receipt
from detectors.topics import detection_topic, receipt_topic
from tests.edge.helpers import T0, Centre, listening, spread_detection, unique
from tests.support.mosquitto import MosquittoProcess
from tests.support.waiting import wait_until


@pytest.fixture
def broker(tmp_path: Path) -> MosquittoProcess:
    with MosquittoProcess(tmp_path / "broker") as b:
        yield b


@pytest.mark.parametrize("isolate", [False, True], ids=["thread", "process"])
def test_each_station_gets_its_own_batched_receipts_with_every_outcome(
        tmp_path: Path, broker: MosquittoProcess, isolate: bool) -> None:
    from tests.ticketing.builders import refuse_poison

    stations = [unique("st"), unique("st")]
    centre = Centre(tmp_path, broker.url, isolate=isolate,
                    skew_clock=lambda: T0 + timedelta(hours=1)).start()
    refuse_poison(centre.store)
    n = 400
    sent: list[tuple[str, str, bytes]] = []  # (station, topic, payload)
    expected: dict[str, tuple[str, str | None]] = {}
    for i in range(n):
        station = stations[i % 2]
        d = spread_detection(i, station=station, kind="smoke")
        sent.append((station, detection_topic("gridwatch/v1", station, d.source_id),
                     d.to_json().encode()))
        expected[d.event_id] = (COMMITTED, None)
    a, b = stations
    late = spread_detection(1000, station=a, kind="smoke").model_copy(
        update={"observed_at": datetime(8999, 1, 1, tzinfo=UTC)})
    poison = spread_detection(1001, station=b, kind="smoke").model_copy(
        update={"event_id": f"poison-{b}"})
    wrong = spread_detection(1002, station=a, kind="smoke")  # under b's topic
    sent += [(a, detection_topic("gridwatch/v1", a, late.source_id), late.to_json().encode()),
             (b, detection_topic("gridwatch/v1", b, poison.source_id),
              poison.to_json().encode()),
             (b, detection_topic("gridwatch/v1", b, wrong.source_id), wrong.to_json().encode()),
             (a, detection_topic("gridwatch/v1", a, "door-1"), b"{not json")]
    expected[late.event_id] = (DEADLETTERED, "clock_skew")
    expected[poison.event_id] = (DEADLETTERED, "store_refused")
    expected[wrong.event_id] = (DEADLETTERED, "topic_mismatch")
    with listening(broker.url, "gridwatch/v1/+/receipt") as receipts:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        pub.max_inflight_messages_set(500)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            infos = [pub.publish(topic, payload, qos=1) for _, topic, payload in sent]
            for info in infos:
                info.wait_for_publish(20)
            assert wait_until(lambda: centre.ingest.stats()["receipted"] >= n + 3, 30), \
                centre.ingest.stats()
            # a repeat of a committed one is receipted again, as a duplicate
            first = sent[0][1:]
            pub.publish(*first, qos=1).wait_for_publish(10)
            assert wait_until(lambda: centre.ingest.stats()["receipted"] >= n + 4, 30)
        finally:
            pub.disconnect()
            pub.loop_stop()
        assert wait_until(lambda: len(receipts.snapshot()) >= centre.ingest.stats()[
            "receipts_sent"], 10)
        got = list(zip(receipts.topics, receipts.snapshot(), strict=True))
    stats = centre.ingest.stats()
    centre.close()

    outcomes: dict[str, list[tuple[str, str | None]]] = {}
    for topic, payload in got:
        for entry in parse_receipt(payload):
            assert entry.channel == "detection"
            # each id on the receipt topic of the station whose topic it came on
            owner = b if entry.event_id == wrong.event_id else (
                a if entry.event_id.startswith(a) else b)
            assert topic == receipt_topic("gridwatch/v1", owner), (entry, topic)
            outcomes.setdefault(entry.event_id, []).append((entry.outcome, entry.code))
    first_id = json.loads(sent[0][2])["event_id"]
    assert outcomes.pop(first_id) == [(COMMITTED, None), (DUPLICATE, None)]
    expected.pop(first_id)
    assert {k: v[0] for k, v in outcomes.items()} == expected
    assert all(len(v) == 1 for v in outcomes.values())  # the rest: named exactly once
    # batched: far fewer receipt messages than ids (one per station per batch)
    assert stats["receipts_sent"] == len(got) < (n + 4) / 4, stats
    assert Counter(t for t, _ in got).keys() == {receipt_topic("gridwatch/v1", s)
                                                  for s in stations}


def test_without_receipts_the_centre_sends_none(tmp_path: Path,
                                                broker: MosquittoProcess) -> None:
    from gridwatch.ingest import MqttIngest
    from tests.edge.helpers import connection

    station = unique("st")
    centre = Centre(tmp_path, broker.url)
    centre.ingest = MqttIngest(connection(broker.url), centre.pipeline,
                               client_id=unique("centre"), receipts=False)
    centre.start()
    d = spread_detection(1, station=station)
    with listening(broker.url, "gridwatch/v1/+/receipt") as receipts:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish(detection_topic("gridwatch/v1", station, d.source_id), d.to_json(),
                    qos=1).wait_for_publish(10)
        assert wait_until(lambda: centre.ingest.stats()["committed"] == 1, 10)
        pub.disconnect()
        pub.loop_stop()
        centre.pipeline.drain(10)
        assert receipts.snapshot() == []
    centre.close()


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_a_share_group_name_that_mqtt_cannot_carry_is_refused(tmp_path: Path,
                                                              group: str) -> None:
    from gridwatch.ingest import MqttIngest
    from tests.edge.helpers import connection

    centre = Centre(tmp_path, "mqtt://127.0.0.1:1")
    try:
        with pytest.raises(ValueError, match="share_group"):
            MqttIngest(connection("mqtt://127.0.0.1:1"), centre.pipeline, share_group=group)
    finally:
        centre.pipeline.close()


def test_receipts_grouped_on_the_hot_path_are_the_bytes_encode_receipt_writes() -> None:
    """The ingest builds each station's receipt while it takes the settled outcomes off
    (deliveries and tuples mixed, any order); the bytes are those of ``encode_receipt`` for
    the same entries, and each station's count is its number of entries."""
    import random
    from collections import deque
    from typing import Any

    from detectors.receipt_message import Receipt, encode_receipt
    from gridwatch.ingest import _Delivery, _encode_body, _group_receipts

    rng = random.Random(7)
    for _ in range(200):
        settled: deque[Any] = deque()
        expected: dict[str, Receipt] = {}
        for i in range(rng.randrange(1, 40)):
            station = rng.choice(["st-a", "st-b", "st-c"])
            d = spread_detection(i, station=station, kind="smoke").model_copy(
                update={"event_id": f"{station}:e{i}"})
            shape = rng.randrange(5)
            if shape <= 1:  # a delivery: committed, or found to be a repeat
                delivery = _Delivery(None, print, True, d, "t", b"", (1, 1))  # type: ignore[arg-type]
                delivery.outcome = COMMITTED if shape == 0 else DUPLICATE
                settled.append(delivery)
                entry = ("detection", d.event_id, delivery.outcome, None)
            elif shape == 2:  # a tuple naming a delivery
                delivery = _Delivery(None, print, True, d, "t", b"", (1, 1))  # type: ignore[arg-type]
                delivery.outcome = rng.choice([COMMITTED, DUPLICATE])
                settled.append((station, "detection", d.event_id, delivery, None))
                entry = ("detection", d.event_id, delivery.outcome, None)
            else:  # dead-lettered, or evidence stored
                channel = rng.choice(["detection", "evidence"])
                if shape == 3:
                    code = rng.choice(["clock_skew", "topic_mismatch", "evidence_size"])
                    entry = (channel, d.event_id, DEADLETTERED, code)
                else:
                    entry = (channel, d.event_id, COMMITTED, None)
                settled.append((station, *entry))
            expected.setdefault(station, Receipt()).add(*entry)
        extra = len(settled)
        settled.append(("st-z", "detection", "left:e1", COMMITTED, None))  # not taken
        got = _group_receipts(settled, extra)
        assert list(settled) == [("st-z", "detection", "left:e1", COMMITTED, None)]
        assert list(got) == list(expected)
        for station, receipt in expected.items():
            body, count = got[station]
            assert _encode_body(body) == encode_receipt(receipt)
            assert count == len(receipt)
