"""The centre ingest's connection to the broker: paho in a thread, or in a process of its own.

paho-mqtt parses every packet in Python, so on the centre the MQTT client alone keeps a
core busy at a few ten thousand messages a second. Sharing that process (and its GIL) with
validation, the stream core, the ticket store and the API is what held the ingest below
the bare client's rate. :class:`ProcessLink` moves the client into a child process that
only receives, acknowledges and publishes; messages cross a pipe in batches, and
acknowledgements and dead letters come back the same way. :class:`ThreadLink` keeps the
client in a thread of this process (tests, small boxes, ``gridwatch serve
--ingest-thread``).

Both deliver ``(topic, payload, token)`` to a :class:`LinkHandler` and take
``ack(token)`` from any thread. A token is ``(mid, qos)``; the broker re-sends an
unacknowledged message with its original packet id after a reconnect (MQTT 3.1.1, 4.4),
so an acknowledgement that arrives after the child was replaced still names the right
message.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from configs.mqtt import MqttConnection, make_client
from gridwatch.gc_tuning import tune_process

log = logging.getLogger(__name__)

Token = tuple[int, int]  # (mid, qos) of a received message
Filters = list[tuple[str, int]]

# the child forwards what it received FLUSH_S after the first message of a batch arrived
# (and looks at its stop flag every IDLE_MAX_S while idle), the parent its
# acknowledgements likewise: ~1 ms batches cost about 1 µs a message to pickle
PUBLISH_DRAIN_S = 10.0  # at stop, how long the child waits for its queued publishes
FLUSH_S = 0.001
IDLE_MAX_S = 0.02
# what one read of the broker's socket takes at most (see ReadAheadSocket)
READ_AHEAD_BYTES = 65_536

_PUBACK = struct.Struct("!BBH")  # a PUBACK packet: type, remaining length 2, message id


def acknowledge_many(client: mqtt.Client, tokens: list[tuple[int, int]]) -> None:
    """Acknowledge QoS 1 messages with one write of their PUBACKs, as ``client.ack`` for
    each would send them one by one.

    paho queues every acknowledgement as a packet of its own: one wake-up of its network
    thread and one ``send`` each, about a third of this process's time per message at
    full rate. The PUBACK packets are the same bytes on the wire, queued here as one
    (``Client._packet_queue``, paho 2's own queue, so nothing is interleaved with its other
    writes). QoS 2 (PUBCOMP), or a paho without that queue, go through ``client.ack``."""
    queue = getattr(client, "_packet_queue", None)
    packets = bytearray()
    for mid, qos in tokens:
        if qos == 1 and queue is not None:
            packets += _PUBACK.pack(mqtt.PUBACK, 2, mid)
        else:
            client.ack(mid, qos)
    if packets:
        assert queue is not None
        queue(mqtt.PUBACK, bytes(packets), 0, 1)


class LinkHandler(Protocol):
    """What a link calls; each method runs on the link's receiving thread."""

    def on_link_message(self, topic: str, payload: bytes | bytearray,
                        token: Token) -> None: ...

    def on_link_messages(self, batch: list[tuple[str, bytes | bytearray, int, int]]
                         ) -> None:
        """Several ``(topic, payload, mid, qos)`` at once (the process link's batches)."""

    def on_link_connected(self, session_present: bool | None) -> None: ...

    def on_link_subscribed(self) -> None: ...

    def on_link_disconnected(self, reason: str) -> None: ...


class ReadAheadSocket:
    """A connected socket whose reads are served from one ``recv`` of up to 64 KiB.

    paho reads each packet with three or four ``recv`` calls (its type, the bytes of its
    length, its body): at the ingest's rate those system calls were a quarter of the
    MQTT process's time. paho's network loop asks a socket with ``pending()`` for bytes
    it holds before waiting in ``select`` (as it does for TLS), so nothing read ahead
    waits there. Everything but ``recv`` and ``pending`` is the socket's own.
    """

    __slots__ = ("_sock", "_data", "_pos")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        data, pos = self._data, self._pos
        if pos >= len(data):
            # nothing held: read what the kernel has (raises as the socket does: would
            # block, TLS wants more, closed); b"" is the end of the stream, passed on
            data = self._sock.recv(max(bufsize, READ_AHEAD_BYTES))
            if len(data) <= bufsize:
                self._data, self._pos = b"", 0
                return data  # type: ignore[no-any-return]
            self._data, pos = data, 0
        end = min(pos + bufsize, len(data))  # what is held may be less than asked
        self._pos = end
        return data[pos:end]

    def pending(self) -> int:
        """Bytes read and not handed out yet (and the TLS layer's own)."""
        held = len(self._data) - self._pos
        inner = getattr(self._sock, "pending", None)
        return held + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ReadAheadClient(mqtt.Client):
    """paho's client over a :class:`ReadAheadSocket` (TCP and TLS; websockets as paho
    has them)."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._transport == "websockets":
            return sock
        return ReadAheadSocket(sock)


def _client(connection: MqttConnection, client_id: str) -> mqtt.Client:
    client = make_client(connection, client_id=client_id, clean_session=False,
                         manual_ack=True, client_class=ReadAheadClient)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)  # for the dead letters the ingest publishes
    return client


def _connect(client: mqtt.Client, connection: MqttConnection) -> None:
    client.connect_async(connection.host, connection.port, keepalive=connection.keepalive_s)
    client.loop_start()


class ThreadLink:
    """paho's network thread in this process calls the handler directly."""

    def __init__(self, connection: MqttConnection, *, client_id: str,
                 filters: Filters) -> None:
        self.connection = connection
        self.client_id = client_id
        self.filters = filters
        self._client: mqtt.Client | None = None
        self._handler: LinkHandler | None = None

    def start(self, handler: LinkHandler) -> None:
        self._handler = handler
        client = _client(self.connection, self.client_id)

        def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, p: Any) -> None:
            if reason.is_failure:
                handler.on_link_disconnected(f"broker refused: {reason}")
                return
            c.subscribe(self.filters)
            handler.on_link_connected(getattr(flags, "session_present", None))

        client.on_connect = on_connect
        client.on_subscribe = lambda *a: handler.on_link_subscribed()
        client.on_disconnect = lambda c, u, f, reason, p: handler.on_link_disconnected(
            str(reason))
        client.on_message = lambda c, u, msg: handler.on_link_message(
            msg.topic, msg.payload, (msg.mid, msg.qos))
        _connect(client, self.connection)
        self._client = client

    def ack(self, token: Token) -> None:
        if self._client is not None:
            self._client.ack(*token)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if self._client is not None:
            self._client.publish(topic, payload, qos=qos)

    def restart(self) -> None:
        """Reconnect, so the broker re-sends what this session has not acknowledged."""
        handler = self._handler
        if self._client is not None and handler is not None:
            self.stop()
            self.start(handler)

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


class ProcessLink:
    """paho in a child process; batches of messages and of commands cross a pipe.

    The child dies with the parent (it exits when the pipe closes). If the child dies on
    its own, the parent starts a new one after ``restart_delay_s`` (doubling to 30 s while
    it keeps failing); the broker's persistent session re-sends what was not acknowledged.
    """

    def __init__(self, connection: MqttConnection, *, client_id: str, filters: Filters,
                 restart_delay_s: float = 1.0) -> None:
        self.connection = connection
        self.client_id = client_id
        self.filters = filters
        self.restart_delay_s = restart_delay_s
        self.restarts = 0
        self._commands: deque[tuple[Any, ...]] = deque()  # tokens, publishes
        self._wake = threading.Event()
        self._running = False
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._sender: threading.Thread | None = None
        self._spawn_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, handler: LinkHandler) -> None:
        """Start the child. Raises ConfigFileError here, in the caller, for unreadable TLS
        files (rather than a child that keeps failing)."""
        _client(self.connection, self.client_id)
        self._running = True
        self._spawn()
        self._sender = threading.Thread(target=self._send, daemon=True,
                                        name="gridwatch-ingest-send")
        self._threads = [
            threading.Thread(target=self._receive, args=(handler,), daemon=True,
                             name="gridwatch-ingest-receive"),
            self._sender,
        ]
        for thread in self._threads:
            thread.start()

    def _spawn(self) -> None:
        # a fresh interpreter (``python -m gridwatch.mqtt_link FD``), not a fork: the
        # parent has threads (pipeline worker, API) that a fork would copy mid-flight, and
        # unlike multiprocessing's spawn it never re-imports the caller's __main__
        parent_end, child_end = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "gridwatch.mqtt_link", str(child_end.fileno())],
            pass_fds=[child_end.fileno()], stdin=subprocess.DEVNULL)
        child_end.close()
        conn = Connection(parent_end.detach())
        conn.send((self.connection, self.client_id, self.filters))
        with self._spawn_lock:
            self._conn, self._process = conn, process

    def _receive(self, handler: LinkHandler) -> None:
        delay = self.restart_delay_s
        while self._running:
            conn = self._conn
            assert conn is not None
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):
                if not self._running:
                    return
                process = self._process
                code = None
                if process is not None:
                    try:
                        code = process.wait(5)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        code = process.wait()
                handler.on_link_disconnected(f"the MQTT process exited (code {code})")
                log.error("ingest: the MQTT process exited (code %s); starting another in "
                          "%.0f s", code, delay)
                time.sleep(delay)
                if not self._running:
                    return
                self.restarts += 1
                self._spawn()
                self._wake.set()  # commands queued meanwhile go to the new child
                delay = min(delay * 2, 30.0)
                continue
            if kind == "m":
                handler.on_link_messages(body)
            elif kind == "connected":
                delay = self.restart_delay_s
                handler.on_link_connected(body)
            elif kind == "subscribed":
                handler.on_link_subscribed()
            elif kind == "disconnected":
                handler.on_link_disconnected(body)

    def _send(self) -> None:
        # the only thread that writes to the pipe: frames written from two threads
        # interleave (stop() used to send its sentinel from the caller's thread while a
        # batch was being written, and the child's command thread died on the garbage)
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            if not self._commands:
                if not self._running:
                    self._send_stop()
                    return
                continue
            time.sleep(FLUSH_S)  # let a batch's acknowledgements gather
            batch = [self._commands.popleft() for _ in range(len(self._commands))]
            try:
                assert self._conn is not None
                self._conn.send(batch)
            except (OSError, ValueError):
                # the child is gone; keep the commands for the next one (the broker
                # re-sends those messages with the same ids)
                self._commands.extendleft(reversed(batch))
                if not self._running:
                    return  # stopping, and no child to take them: the broker re-sends
                time.sleep(0.1)

    def _send_stop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.send(None)
        except (OSError, ValueError):
            pass

    def ack(self, token: Token) -> None:
        # the token itself is the command (``(mid, qos)``; a publish is a 4-tuple): no
        # tuple built per message
        self._commands.append(token)
        if not self._wake.is_set():  # the sender clears it before it drains the deque
            self._wake.set()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self._commands.append(("p", topic, payload, qos))
        self._wake.set()

    def restart(self) -> None:
        """Replace the child, so the broker re-sends what this session has not
        acknowledged (its replacement is started by the receiving thread)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (acknowledgements first), then disconnect the child."""
        if not self._running:
            return
        deadline = time.monotonic() + timeout_s
        while self._commands and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        self._running = False
        self._wake.set()
        if self._sender is not None:  # it sends what is left, then the stop sentinel
            self._sender.join(max(0.1, deadline - time.monotonic()))
        conn, process = self._conn, self._process
        if process is not None:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if conn is not None:
            conn.close()
        for thread in self._threads:
            thread.join(5)


def _settled(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether a publish needs no more waiting for: acknowledged, or one paho will not
    report on (a QoS 1 message queued while disconnected has ``rc`` NO_CONN, and paho's
    ``is_published`` raises for it although it sends it after the reconnect; it raised in
    the command thread, which then died and took every later acknowledgement with it)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True


def _child_main(conn: Connection, connection: MqttConnection, client_id: str,
                filters: Filters) -> None:
    """The MQTT process: receive → pipe in batches; pipe → acknowledge / publish."""
    # Ctrl-C reaches the whole process group: the parent decides when this one stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_process()  # the modules just imported: never garbage, never walked again
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s gridwatch-ingest-mqtt: %(message)s")
    inbox: deque[tuple[str, bytes | bytearray, int, int]] = deque()
    send_lock = threading.Lock()
    stop = threading.Event()

    def send(kind: str, body: Any) -> None:
        with send_lock:
            try:
                conn.send((kind, body))
            except (OSError, ValueError):  # the parent is gone
                stop.set()

    try:
        client = _client(connection, client_id)
    except Exception as exc:  # unreadable TLS files and the like: say so; the parent retries
        log.error("cannot start the MQTT client for %s:%s: %s", connection.host,
                  connection.port, exc)
        os._exit(2)

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, p: Any) -> None:
        if reason.is_failure:
            send("disconnected", f"broker refused: {reason}")
            return
        c.subscribe(filters)
        send("connected", getattr(flags, "session_present", None))

    arrived = threading.Event()  # set by the first message into an empty inbox

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        inbox.append((msg.topic, msg.payload, msg.mid, msg.qos))
        if not arrived.is_set():
            arrived.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: send("subscribed", None)
    client.on_disconnect = lambda c, u, f, reason, p: send("disconnected", str(reason))
    client.on_message = on_message

    published: deque[mqtt.MQTTMessageInfo] = deque()  # the parent's, not yet sent

    def commands() -> None:
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                batch = None
            if batch is None:
                stop.set()
                return
            acks: list[tuple[int, int]] = []
            for command in batch:
                if len(command) == 2:  # an acknowledgement: (mid, qos)
                    acks.append(command)
                else:
                    if acks:  # in order: what came before this publish goes first
                        acknowledge_many(client, acks)
                        acks = []
                    published.append(client.publish(command[1], command[2], qos=command[3]))
            if acks:
                acknowledge_many(client, acks)
            while published and _settled(published[0]):
                published.popleft()

    _connect(client, connection)
    threading.Thread(target=commands, daemon=True, name="commands").start()
    while not stop.is_set():
        # woken by the first message after a pause (not up to IDLE_MAX_S later: the
        # broker's in-flight window refills only as fast as this forwards what it sends),
        # then FLUSH_S for the rest of a batch to gather
        if not arrived.wait(IDLE_MAX_S):
            continue  # idle: look at stop again
        arrived.clear()
        stop.wait(FLUSH_S)
        if inbox:
            batch = [inbox.popleft() for _ in range(len(inbox))]
            send("m", batch)
    # stopped, or the parent is gone: what was not acknowledged stays with the broker;
    # what the parent published goes out before the disconnect (paho sends it from its
    # loop thread and drops what is still queued when the connection closes)
    deadline = time.monotonic() + PUBLISH_DRAIN_S
    for info in published:
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError):  # not connected, or never queued
            break
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":  # started by ProcessLink: python -m gridwatch.mqtt_link FD
    _conn = Connection(int(sys.argv[1]))
    _child_main(_conn, *_conn.recv())
