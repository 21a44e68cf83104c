"""``gridwatch bridge``: edge detections from MQTT onto the scale-out input topic.

Subscribes (QoS 1, persistent session) to the edge boxes' detection topics
``gridwatch/v1/<station_id>/<source_id>/detection`` and produces each payload, unchanged,
to ``gridwatch.detections.v1`` keyed by the station id. An MQTT message is acknowledged
(PUBACK) only after the Kafka broker has acknowledged the record (``acks=all``), so a
bridge killed in between leaves it unacknowledged in its persistent session, and the MQTT
broker delivers it again: at least once, end to end (the workers drop repeats by event
id). While Kafka is unreachable the bridge retries the same record with back-off and
acknowledges nothing.

Several bridges share the load with ``--shared-group NAME`` (an MQTT shared
subscription ``$share/NAME/...``). Needs the ``kafka`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from gridwatch.errors import UserError

log = logging.getLogger(__name__)

TOPIC_FILTER = "gridwatch/v1/+/+/detection"
RETRY_MAX_S = 30.0


def station_of(topic: str) -> str | None:
    """The station id of an edge detection topic, ``None`` for any other topic."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:2] == ["gridwatch", "v1"] and parts[4] == "detection" \
            and parts[2]:
        return parts[2]
    return None


class Bridge:
    """MQTT → Kafka, acknowledging MQTT after Kafka.

    Args:
        mqtt_url: ``mqtt://[user@]host:port`` (password from ``$GRIDWATCH_BRIDGE_MQTT_PASSWORD``).
        broker_url: ``kafka://host:port[;kafka://...]``.
        client_id: the MQTT client id; its persistent session holds unacknowledged
            messages while the bridge is down, so keep it stable across restarts.
        shared_group: share the subscription with other bridges of this group.
    """

    def __init__(self, *, mqtt_url: str, broker_url: str, client_id: str = "gridwatch-bridge",
                 shared_group: str | None = None, topic_filter: str = TOPIC_FILTER) -> None:
        parts = urlsplit(mqtt_url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise UserError(f"--mqtt: expected mqtt://host:port, got {mqtt_url!r}")
        from stream.faust_app import bootstrap_servers

        self.mqtt_host = parts.hostname
        self.mqtt_port = parts.port or 1883
        self.mqtt_user = parts.username
        self.bootstrap = bootstrap_servers(broker_url)
        self.client_id = client_id
        self.subscription = (f"$share/{shared_group}/{topic_filter}" if shared_group
                             else topic_filter)
        self.counts: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._producer: Any = None
        self._client: Any = None
        self._stopped = threading.Event()

    # -- Kafka side, on the bridge's event loop (its own thread) -------------------------

    async def _start_producer(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        delay = 0.5
        while True:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                        linger_ms=5)
            try:
                await producer.start()
                self._producer = producer
                return
            except (KafkaError, OSError) as exc:
                await producer.stop()
                log.warning("Kafka %s not answering (%s); retrying in %.1f s",
                            self.bootstrap, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _forward(self, payload: bytes, key: bytes | None) -> None:
        from aiokafka.errors import KafkaError

        from stream.faust_app import TOPIC_DETECTIONS

        delay = 0.5
        while True:
            try:
                await self._producer.send_and_wait(TOPIC_DETECTIONS, payload, key=key)
                return
            except KafkaError as exc:
                self.counts["kafka_retries"] += 1
                log.warning("Kafka refused a record (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    # -- MQTT side, on paho's network thread ---------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any = None) -> None:
        if reason.is_failure:
            log.warning("MQTT %s:%s refused the connection: %s", self.mqtt_host,
                        self.mqtt_port, reason)
            return
        client.subscribe(self.subscription, qos=1)
        log.info("bridging MQTT %s (%s:%s) to Kafka %s", self.subscription, self.mqtt_host,
                 self.mqtt_port, ",".join(self.bootstrap))

    def _on_message(self, client: Any, _userdata: Any, message: Any) -> None:
        station = station_of(message.topic)
        self.counts["received"] += 1
        future = asyncio.run_coroutine_threadsafe(
            self._forward(message.payload, station.encode() if station else None),
            self._loop)

        def done(f: Any) -> None:
            if f.cancelled() or f.exception() is not None:
                self.counts["not_forwarded"] += 1  # stays unacked: redelivered later
                return
            self.counts["forwarded"] += 1
            client.ack(message.mid, message.qos)

        future.add_done_callback(done)

    def run(self) -> None:
        """Bridge until :meth:`stop` (or SIGTERM/SIGINT in the CLI)."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        thread = threading.Thread(target=self._loop.run_forever, name="bridge-kafka",
                                  daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(self._start_producer(), self._loop).result()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        if self.mqtt_user:
            client.username_pw_set(self.mqtt_user,
                                   os.environ.get("GRIDWATCH_BRIDGE_MQTT_PASSWORD"))
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client = client
        client.connect_async(self.mqtt_host, self.mqtt_port, keepalive=30)
        client.loop_start()
        try:
            self._stopped.wait()
        finally:
            client.disconnect()
            client.loop_stop()
            asyncio.run_coroutine_threadsafe(self._producer.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(10)
            log.info("bridge stopped: %s", dict(self.counts))

    def stop(self) -> None:
        self._stopped.set()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bridge", help="forward edge detections from MQTT to the Kafka input topic",
        description="MQTT (gridwatch/v1/+/+/detection, QoS 1) → gridwatch.detections.v1, "
                    "keyed by station; MQTT is acknowledged after Kafka acknowledges.")
    parser.add_argument("--mqtt", default=os.environ.get("GRIDWATCH_MQTT_URL",
                                                         "mqtt://127.0.0.1:1883"),
                        help="mqtt://[user@]host:port (or $GRIDWATCH_MQTT_URL); password "
                             "from $GRIDWATCH_BRIDGE_MQTT_PASSWORD")
    parser.add_argument("--broker", default=os.environ.get("GRIDWATCH_KAFKA_BROKER",
                                                           "kafka://localhost:9092"),
                        help="kafka://host:port[;...] (or $GRIDWATCH_KAFKA_BROKER)")
    parser.add_argument("--client-id", default="gridwatch-bridge",
                        help="MQTT client id; keep it stable (its session holds what is "
                             "not yet forwarded)")
    parser.add_argument("--shared-group",
                        help="share the subscription with other bridges ($share/NAME/...)")
    parser.add_argument("--log-repeat-s", type=float,
                        default=float(os.environ.get("GRIDWATCH_KAFKA_LOG_REPEAT_S", 30)),
                        help="while Kafka is down, log a repeated client error once, then "
                             "at most once per this many seconds with a count "
                             "(or $GRIDWATCH_KAFKA_LOG_REPEAT_S; default 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import aiokafka  # noqa: F401
    except ModuleNotFoundError:
        raise UserError("the bridge needs aiokafka: pip install 'gridwatch[kafka]'") from None
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    if args.log_repeat_s <= 0:
        raise UserError(f"--log-repeat-s: expected a number > 0, got {args.log_repeat_s}")
    from gridwatch.commands.quiet_logs import install

    install(args.log_repeat_s)
    bridge = Bridge(mqtt_url=args.mqtt, broker_url=args.broker, client_id=args.client_id,
                    shared_group=args.shared_group)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: bridge.stop())
    bridge.run()
    return 0
