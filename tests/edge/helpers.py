"""Builders shared by the edge and ingest tests: a centre, detections, an MQTT listener."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from shapely.geometry import box

from configs.mqtt import MqttConnection, make_client
from detectors.schema import Detection
from geo.grid import Grid
from geo.make import square_grid
from gridwatch.config import GridWatchConfig
from gridwatch.embedded import EmbeddedPipeline
from gridwatch.ingest import MqttIngest
from stream.policy import KindPolicy
from ticketing.evidence import EvidenceSettings, EvidenceStore
from ticketing.store import SqliteTicketStore

# 5 km x 5 km of square 1 km cells around Foshan
AREA = (113.00, 23.00, 113.05, 23.05)
T0 = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def connection(url: str) -> MqttConnection:
    parts = urlsplit(url)
    return MqttConnection(host=parts.hostname or "127.0.0.1", port=parts.port or 1883)


_url_connection = connection  # Centre's parameter of that name hides the function


def centre_config() -> GridWatchConfig:
    """Incident kinds with no per-source cooldown, so every detection lands on a ticket."""
    incident = {"mode": "incident", "window_s": 300, "auto_dispatch": True,
                "review_below_confidence": 0.1}
    return GridWatchConfig(kinds={
        "door_forced": KindPolicy(**incident, department="community_security"),
        "smoke": KindPolicy(**incident, department="fire_rescue"),
    })


def spread_detection(i: int, *, station: str, kind: str = "door_forced",
                     source_count: int = 37) -> Detection:
    """Detection ``i`` of a run: one second apart, spread over the 25 cells of AREA."""
    x0, y0, x1, y1 = AREA
    return Detection.new(
        event_id=f"{station}:e{i}", observed_at=T0 + timedelta(seconds=i),
        station_id=station, source_id=f"door-{i % source_count}",
        source_type="access_control", kind=kind, confidence=0.9,
        lon=x0 + 0.001 + (x1 - x0 - 0.002) * ((i * 7919) % 1000) / 1000,
        lat=y0 + 0.001 + (y1 - y0 - 0.002) * ((i * 104729) % 997) / 997)


class Centre:
    """EmbeddedPipeline + MqttIngest on a broker, tickets in a temporary SQLite file.
    ``isolate``: the MQTT client in a child process, as ``gridwatch serve`` runs it.
    The broker is ``url`` (``mqtt://host:port``) or a full ``connection`` (TLS, login).
    ``evidence``: also keep camera snapshots (``evidence/`` beside the database), as
    ``gridwatch serve`` does; ``config`` and ``area`` replace the default policies and grid;
    ``skew_clock``: dead-letter bad clocks against it (``gridwatch serve``: the wall clock)."""

    def __init__(self, tmp_path: Path, url: str | None = None, *,
                 topic_prefix: str = "gridwatch/v1", client_id: str | None = None,
                 isolate: bool = False, connection: MqttConnection | None = None,
                 config: GridWatchConfig | None = None,
                 area: tuple[float, float, float, float] = AREA,
                 evidence: EvidenceSettings | None = None,
                 skew_clock: Callable[[], datetime] | None = None) -> None:
        if (url is None) == (connection is None):
            raise ValueError(f"Centre takes a url or a connection, got url={url!r} "
                             f"connection={connection!r}")
        self.config = config or centre_config()
        self.grid = Grid.from_geojson(square_grid(box(*area), size_m=1000))
        self.store = SqliteTicketStore(tmp_path / "tickets.sqlite")
        self.evidence = (None if evidence is None else
                         EvidenceStore.beside(self.store, tmp_path / "tickets.sqlite",
                                              evidence))
        self.pipeline = EmbeddedPipeline(self.config, self.grid, self.store,
                                         skew_clock=skew_clock)
        conn = connection if connection is not None else _url_connection(str(url))
        self.ingest = MqttIngest(conn, self.pipeline,
                                 client_id=client_id or unique("centre"),
                                 topic_prefix=topic_prefix, isolate=isolate,
                                 evidence=self.evidence)

    def start(self) -> Centre:
        self.ingest.start()
        assert self.ingest.wait_subscribed(10), "the ingest never subscribed"
        return self

    def ticket_event_ids(self) -> Counter[str]:
        self.pipeline.drain(60)
        counts: Counter[str] = Counter()
        for ticket in self.store.all():
            counts.update(ticket.event_ids)
        return counts

    def close(self) -> None:
        """Stop, and end the persistent session on the broker: on the shared broker a
        session left behind would outlive the test."""
        self.ingest.stop()
        self.pipeline.close()
        forget_session(self.ingest.connection, self.ingest.client_id)


def forget_session(conn: MqttConnection, client_id: str) -> None:
    """Connect once with ``clean_session=True``: the broker drops the client's session."""
    client = make_client(conn, client_id=client_id, clean_session=True)
    try:
        client.connect(conn.host, conn.port)
        client.loop_start()
        client.disconnect()
        client.loop_stop()
    except OSError:  # the broker is already gone (private brokers stop with the test)
        pass


class Listener:
    """A raw paho subscriber that keeps every payload of a topic filter (QoS 1)."""

    def __init__(self, url: str, topic_filter: str, *, client_id: str | None = None,
                 clean_session: bool = True) -> None:
        self.payloads: list[bytes] = []
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        conn = connection(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or unique("listener"),
                                  clean_session=clean_session)

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe(topic_filter, qos=1)

        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.payloads.append(bytes(msg.payload))
                self.topics.append(msg.topic)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = on_message
        self.client.connect(conn.host, conn.port)
        self.client.loop_start()
        assert self._ready.wait(10), f"no SUBACK for {topic_filter}"

    def snapshot(self) -> list[bytes]:
        with self._lock:
            return list(self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def listening(url: str, topic_filter: str, **kw: Any) -> Iterator[Listener]:
    listener = Listener(url, topic_filter, **kw)
    try:
        yield listener
    finally:
        listener.close()
