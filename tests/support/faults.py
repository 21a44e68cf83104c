"""Fault injection for the edge → broker → centre path, with real processes (issue 12 part 7).

One :class:`FaultRig` per case: a private Mosquitto
(:class:`~tests.support.mosquitto.MosquittoProcess`, with the persistence settings of the
case), the centre as ``gridwatch serve`` in its own
process (tickets in SQLite or in a fresh PostgreSQL database), the edge as a real
:class:`~edge.agent.EdgeAgent` in a child process (``python -m tests.support.faults edge``)
that commits ``count`` detections to its outbox at a steady rate and records each batch's
event ids once ``sink`` has returned (committed to the outbox: *accepted at the edge*),
and a listener on the dead-letter topic. A case's scenario stops, kills and restarts those
processes; :meth:`FaultRig.outcome` then counts, from the ticket store itself:

- ``accepted``: event ids the edge committed to its outbox;
- ``committed``: accepted ids on a ticket;
- ``deadlettered``: accepted ids the centre dead-lettered (and did not also commit);
- ``lost``: accepted ids neither committed nor dead-lettered once the edge's outbox is
  empty (or the wait is over);
- ``duplicated``: extra copies: an id on more than one ticket or twice on one, or both
  committed and dead-lettered;
- ``refused_at_edge``: far-future detections the edge's own clock check kept out.

``benchmarks/fault_matrix.py`` runs every case and prints the table; ``tests/faults/``
runs a few with ``lost == duplicated == 0`` asserted. ``GRIDWATCH_FAULTS_KEEP_DB=1`` keeps
a case's PostgreSQL database (its name goes to stderr) for a look afterwards.

Poison (``poison=True``): every 10th detection is refused for good by the ticket store
(``store_refused``: a trigger or CHECK constraint, as ``tests.ticketing.builders.refuse_poison``),
another every 10th is dated 1970 (the centre dead-letters it as ``clock_skew``), and another
is dated in the year 8999 (the edge refuses it: ``clock.max_future_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
AREA = (113.00, 23.00, 113.05, 23.05)
BATCH = 10
RECEIPT_TIMEOUT_S = 3.0  # the edge's receipt_timeout_s in the rig (production: 120 s)
CENTRE_CONFIG = """\
kinds:
  door_forced: {source_cooldown_s: 0}   # every detection lands on a ticket
"""


# -- the edge child ------------------------------------------------------------------------
def detection_for(station: str, i: int, *, poison: bool) -> tuple[Any, str]:
    """Detection ``i`` of a run and what should become of it: ``valid``, ``store_refused``,
    ``clock_skew`` (dead-lettered at the centre) or ``edge_refused`` (never accepted)."""
    from detectors.schema import Detection

    x0, y0, x1, y1 = AREA
    now = datetime.now(UTC)
    event_id, fate, observed = f"{station}:e{i}", "valid", now
    if poison and i % 10 == 3:
        event_id, fate = f"poison-{station}-{i}", "store_refused"
    elif poison and i % 10 == 6:
        observed, fate = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=i), "clock_skew"
    elif poison and i % 10 == 8:
        observed, fate = datetime(8999, 1, 1, tzinfo=UTC), "edge_refused"
    d = Detection.new(
        event_id=event_id, observed_at=observed, station_id=station,
        source_id=f"door-{i % 7}", source_type="access_control", kind="door_forced",
        confidence=0.9,
        lon=x0 + 0.001 + (x1 - x0 - 0.002) * ((i * 7919) % 1000) / 1000,
        lat=y0 + 0.001 + (y1 - y0 - 0.002) * ((i * 104729) % 997) / 997)
    return d, fate


def edge_main(argv: list[str]) -> int:
    """``python -m tests.support.faults edge --config station.yaml --count N ...``."""
    parser = argparse.ArgumentParser(prog="faults edge")
    parser.add_argument("--config", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=500.0, help="detections per second")
    parser.add_argument("--accepted", required=True, help="file: one accepted id a line")
    parser.add_argument("--poison", action="store_true")
    args = parser.parse_args(argv)
    from edge.agent import EdgeAgent
    from edge.config import load_station_config

    config = load_station_config(args.config)
    accepted_path = Path(args.accepted)
    start = 0
    if accepted_path.exists():  # a restart after kill -9: go on after the last batch
        done_batches = [line for line in accepted_path.read_text().splitlines()
                        if line.startswith("#")]
        start = (int(done_batches[-1][1:]) + BATCH) if done_batches else 0
    agent = EdgeAgent(config)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    agent.start()
    began = time.monotonic()
    with accepted_path.open("a", encoding="utf-8") as out:
        for first in range(start, args.count, BATCH):
            if done.is_set():
                break
            batch = [detection_for(config.station_id, i, poison=args.poison)
                     for i in range(first, min(first + BATCH, args.count))]
            agent.sink([d for d, _ in batch])
            # after sink returned: in the outbox (the edge refuses the far-future ones)
            out.write("".join(f"{d.event_id}\t{fate}\n" for d, fate in batch
                              if fate != "edge_refused"))
            out.write(f"#{first}\n")
            out.flush()
            ahead = (first + BATCH - start) / args.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    (accepted_path.parent / "edge.done").write_text("done", encoding="utf-8")
    done.wait()
    agent.stop()
    return 0


# -- the runner's side ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class ChildProcess:
    """A child process with its log; SIGTERM or SIGKILL, and start again."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=_env(), stdout=log,
                                         stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, kill: bool = False, timeout_s: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@dataclass
class Outcome:
    """What became of the detections of one case (see the module doc)."""

    case: str
    store: str
    accepted: int = 0
    committed: int = 0
    deadlettered: int = 0
    lost: int = 0
    duplicated: int = 0
    refused_at_edge: int = 0
    resent: int = 0
    seconds: float = 0.0
    lost_ids: list[str] = field(default_factory=list)
    notes: str = ""

    def row(self) -> str:
        return (f"| {self.case} | {self.store} | {self.accepted:,} | {self.committed:,} | "
                f"{self.deadlettered:,} | {self.lost:,} | {self.duplicated:,} | "
                f"{self.refused_at_edge:,} | {self.resent:,} | {self.seconds:.0f} |")


TABLE_HEAD = ("| case | store | accepted at edge | committed | dead-lettered | lost | "
              "duplicated | refused at edge | re-sent | s |\n"
              "|---|---|---|---|---|---|---|---|---|---|")


class FaultRig:
    """The processes of one case (see the module doc). Use as a context manager."""

    def __init__(self, workdir: Path, *, case: str, store: str = "sqlite", count: int = 1000,
                 rate: float = 500.0, poison: bool = False, persistence: bool = True,
                 autosave_interval: int | None = None, replicas: int = 1,
                 receipts: bool = True,
                 postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test") -> None:
        from tests.support.mosquitto import MosquittoProcess

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.case, self.store_kind, self.count, self.poison = case, store, count, poison
        self.station = f"st-{uuid.uuid4().hex[:8]}"
        self.broker = MosquittoProcess(self.workdir / "broker", persistence=persistence,
                                       autosave_interval=autosave_interval)
        self.started = time.monotonic()
        self._pg_admin = postgres_url
        self._pg_db: str | None = None
        self.db_url = self._make_store(store, postgres_url)
        grid = self.workdir / "grid.geojson"
        self._write_grid(grid)
        config = self.workdir / "centre.yaml"
        config.write_text(CENTRE_CONFIG, encoding="utf-8")
        self.centres = [
            ChildProcess([sys.executable, "-m", "gridwatch", "-v", "serve", "--grid", str(grid),
                          "--config", str(config), "--db", self.db_url,
                          "--mqtt-url", self.broker.url, "--client-id",
                          f"centre-{self.station}-{n}", "--port", str(free_port()),
                          "--mqtt-reconnect-max-s", "1",
                          *(["--mqtt-share-group", "centre"] if replicas > 1 else [])],
                         self.workdir / f"centre-{n}.log")
            for n in range(replicas)]
        self.accepted_path = self.workdir / "accepted.txt"
        station_yaml = self.workdir / "station.yaml"
        station_yaml.write_text(
            f"station_id: {self.station}\n"
            f"state_dir: {self.workdir / 'edge'}\n"
            f"uplink: {{port: {self.broker.port}, reconnect_min_s: 1, reconnect_max_s: 1,"
            f" receipt_timeout_s: {RECEIPT_TIMEOUT_S}, receipt_timeout_max_s: 30,"
            f" receipts: {'true' if receipts else 'false'}}}\n"
            "metrics: {port: 0}\n", encoding="utf-8")
        self.outbox_path = self.workdir / "edge" / "outbox.sqlite"
        self.status_path = self.workdir / "edge" / "status.json"
        self.edge = ChildProcess(
            [sys.executable, "-m", "tests.support.faults", "edge", "--config",
             str(station_yaml), "--count", str(count), "--rate", str(rate), "--accepted",
             str(self.accepted_path), *(["--poison"] if poison else [])],
            self.workdir / "edge.log")
        self.dead: list[bytes] = []
        self._listener: Any = None

    # -- set-up ----------------------------------------------------------------------------
    def _make_store(self, store: str, postgres_url: str) -> str:
        from ticketing.store import open_store

        if store == "sqlite":
            url = str(self.workdir / "tickets.db")
        elif store == "postgres":
            import psycopg

            self._pg_db = f"gwfault_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self._pg_db}"')
            url = postgres_url.rsplit("/", 1)[0] + f"/{self._pg_db}"
        else:
            raise ValueError(f"store: expected sqlite or postgres, got {store!r}")
        if self.poison:
            from tests.ticketing.builders import refuse_poison

            made = open_store(url)
            refuse_poison(made)
            made.engine.dispose()
        return url

    @staticmethod
    def _write_grid(path: Path) -> None:
        from shapely.geometry import box

        from geo.make import square_grid

        path.write_text(json.dumps(square_grid(box(*AREA), size_m=1000)), encoding="utf-8")

    def __enter__(self) -> FaultRig:
        self.broker.start()
        self._start_listener()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_listener(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dead-{self.station}",
                             clean_session=False)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("gridwatch/v1/deadletter", 1)
        client.on_message = lambda c, u, m: self.dead.append(bytes(m.payload))
        client.reconnect_delay_set(1, 1)
        client.connect_async("127.0.0.1", self.broker.port)
        client.loop_start()
        self._listener = client
        wait_until(client.is_connected, 10)

    # -- the processes -----------------------------------------------------------------------
    def start_centres(self, which: list[int] | None = None) -> None:
        for n in which if which is not None else range(len(self.centres)):
            self.centres[n].start()
        assert wait_until(self._centres_subscribed, 60), self.tail("centre-0.log")
        time.sleep(1.0)  # connected; the subscription follows at once

    def _centres_subscribed(self) -> bool:
        # the broker logs each client id's connection; the ingest subscribes on connect
        log = self.broker.log_path.read_text(encoding="utf-8", errors="replace") \
            if self.broker.log_path.exists() else ""
        return all(f"as centre-{self.station}-{n} " in log
                   for n, c in enumerate(self.centres) if c.running)

    def start_edge(self) -> None:
        self.edge.start()

    def accepted(self) -> dict[str, str]:
        """Event id -> fate, of what the edge has committed to its outbox so far."""
        if not self.accepted_path.exists():
            return {}
        out = {}
        for line in self.accepted_path.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                event_id, fate = line.split("\t")
                out[event_id] = fate
        return out

    def wait_accepted(self, n: int, timeout_s: float = 120.0) -> None:
        assert wait_until(lambda: len(self.accepted()) >= n, timeout_s, 0.05), (
            len(self.accepted()), self.tail("edge.log"))

    def edge_done(self, timeout_s: float = 300.0) -> None:
        assert wait_until((self.workdir / "edge.done").exists, timeout_s), self.tail("edge.log")

    def outbox_depth(self) -> int:
        try:
            db = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True, timeout=5)
            try:
                return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            finally:
                db.close()
        except sqlite3.Error:
            return -1

    def drain(self, timeout_s: float = 120.0) -> bool:
        """Wait until the edge has everything receipted (its outbox is empty)."""
        return wait_until(lambda: self.outbox_depth() == 0, timeout_s, 0.2)

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / name
        return path.read_text(encoding="utf-8", errors="replace")[-chars:] \
            if path.exists() else f"({name}: none)"

    # -- the count -----------------------------------------------------------------------
    def outcome(self, *, drain_timeout_s: float = 120.0) -> Outcome:
        drained = self.drain(drain_timeout_s)
        self.edge.stop()
        resent = -1
        try:  # the outbox's persistent total, across restarts of the edge
            db = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True, timeout=5)
            try:
                row = db.execute("SELECT value FROM counters WHERE name = 'resent'"
                                 ).fetchone()
                resent = int(row[0]) if row else 0
            finally:
                db.close()
        except sqlite3.Error:
            pass
        for centre in self.centres:
            centre.stop()
        from ticketing.store import open_store

        store = open_store(self.db_url)
        on_tickets: Counter[str] = Counter()
        for ticket in store.all():
            on_tickets.update(ticket.event_ids)
        store.engine.dispose()
        dead_ids: set[str] = set()
        for payload in list(self.dead):
            try:
                record = json.loads(payload)
                dead_ids.add(json.loads(record["payload"])["event_id"])
            except (ValueError, KeyError, TypeError):
                continue
        accepted = self.accepted()
        committed = {i for i in accepted if on_tickets[i]}
        dead = {i for i in accepted if i in dead_ids} - committed
        lost = sorted(set(accepted) - committed - dead)
        duplicated = (sum(n - 1 for i, n in on_tickets.items() if i in accepted and n > 1)
                      + len({i for i in accepted if on_tickets[i]} & dead_ids))
        refused_at_edge = sum(1 for i in range(self.count)
                              if self.poison and i % 10 == 8)
        return Outcome(case=self.case, store=self.store_kind, accepted=len(accepted),
                       committed=len(committed), deadlettered=len(dead), lost=len(lost),
                       duplicated=duplicated, refused_at_edge=refused_at_edge,
                       resent=resent, seconds=time.monotonic() - self.started,
                       lost_ids=lost[:20],
                       notes="" if drained else f"outbox not empty ({self.outbox_depth()})")

    def close(self) -> None:
        self.edge.stop(kill=True)
        for centre in self.centres:
            centre.stop(kill=True)
        if self._listener is not None:
            self._listener.loop_stop()
            self._listener.disconnect()
        self.broker.stop(kill=True)
        if self._pg_db is not None and os.environ.get("GRIDWATCH_FAULTS_KEEP_DB"):
            print(f"kept PostgreSQL database {self._pg_db}", file=sys.stderr)  # noqa: T201
        elif self._pg_db is not None:
            import psycopg

            with psycopg.connect(self._pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_db}" WITH (FORCE)')
            self._pg_db = None


# -- the cases -----------------------------------------------------------------------------
Scenario = Callable[[FaultRig], None]


def _baseline(rig: FaultRig) -> None:
    rig.start_centres()
    rig.start_edge()
    rig.edge_done()


def _broker_mid_stream(kill: bool) -> Scenario:
    def run(rig: FaultRig) -> None:
        rig.start_centres()
        rig.start_edge()
        rig.wait_accepted(rig.count // 3)
        rig.broker.stop(kill=kill)
        time.sleep(1.0)
        rig.broker.start()
        rig.wait_accepted(2 * rig.count // 3)
        rig.broker.stop(kill=kill)  # twice: once more while the first gap drains
        rig.broker.start()
        rig.edge_done()
    return run


def _broker_while_centre_offline(kill: bool) -> Scenario:
    def run(rig: FaultRig) -> None:
        rig.start_centres()  # the centre's persistent session exists on the broker
        for centre in rig.centres:
            centre.stop()
        rig.start_edge()
        rig.edge_done()  # everything acknowledged by the broker, queued for the centre
        assert wait_until(lambda: _pending(rig) == 0, 60)
        rig.broker.stop(kill=kill)
        rig.broker.start()
        rig.start_centres()
    return run


def _pending(rig: FaultRig) -> int:
    try:
        db = sqlite3.connect(f"file:{rig.outbox_path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"
                                  ).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return -1


def _edge_kill9(rig: FaultRig) -> None:
    rig.start_centres()
    rig.start_edge()
    for part in (1, 2):
        rig.wait_accepted(part * rig.count // 3)
        rig.edge.stop(kill=True)
        rig.start_edge()  # goes on after its last recorded batch, same event ids
    rig.edge_done()


def _centre_kill9_draining(rig: FaultRig) -> None:
    rig.start_centres()
    for centre in rig.centres:
        centre.stop()
    rig.start_edge()
    rig.edge_done()
    assert wait_until(lambda: _pending(rig) == 0, 60)
    held = rig.outbox_depth()
    rig.start_centres()
    # kill it while it works through the broker's backlog: once a third is receipted
    assert wait_until(lambda: 0 <= rig.outbox_depth() <= 2 * held // 3, 120, 0.02), (
        rig.outbox_depth(), rig.tail("centre-0.log"))
    rig.centres[0].stop(kill=True)
    rig.start_centres([0])


def _replica_kill9(rig: FaultRig) -> None:
    rig.start_centres()
    rig.start_edge()
    rig.wait_accepted(rig.count // 3)
    rig.centres[0].stop(kill=True)
    rig.wait_accepted(2 * rig.count // 3)
    rig.start_centres([0])
    rig.edge_done()


@dataclass(frozen=True)
class Case:
    name: str
    scenario: Scenario
    store: str = "sqlite"
    persistence: bool = True
    autosave_interval: int | None = None  # Mosquitto's default (1800 s)
    poison: bool = False
    replicas: int = 1
    receipts: bool = True  # False: the edge deletes on PUBACK, as before issue 12


CASES: list[Case] = [
    Case("baseline", _baseline),
    Case("broker SIGTERM mid-stream", _broker_mid_stream(kill=False)),
    Case("broker SIGKILL mid-stream", _broker_mid_stream(kill=True)),
    Case("broker SIGKILL mid-stream, persistence off", _broker_mid_stream(kill=True),
         persistence=False),
    Case("broker SIGTERM, centre offline", _broker_while_centre_offline(kill=False)),
    Case("broker SIGKILL, centre offline", _broker_while_centre_offline(kill=True)),
    Case("broker SIGKILL, centre offline, persistence off",
         _broker_while_centre_offline(kill=True), persistence=False),
    Case("edge kill -9 (twice)", _edge_kill9),
    Case("centre kill -9 draining a backlog", _centre_kill9_draining),
    Case("poison + far-future + ancient clocks", _baseline, poison=True),
    Case("baseline", _baseline, store="postgres"),
    Case("broker SIGKILL, centre offline", _broker_while_centre_offline(kill=True),
         store="postgres"),
    Case("centre kill -9 draining a backlog", _centre_kill9_draining, store="postgres"),
    Case("poison + far-future + ancient clocks", _baseline, store="postgres", poison=True),
    Case("2 replicas ($share)", _baseline, store="postgres", replicas=2),
    Case("2 replicas ($share), one kill -9", _replica_kill9, store="postgres", replicas=2),
    # the measurement behind issue 12, for comparison: what the same fault costs without
    # receipts (the only case allowed to lose)
    Case("broker SIGKILL, centre offline, receipts off", _broker_while_centre_offline(
        kill=True), receipts=False),
]


def run_case(case: Case, workdir: Path, *, count: int, rate: float,
             postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test",
             drain_timeout_s: float = 300.0) -> Outcome:
    """Run one case in ``workdir`` and count what became of its detections."""
    with FaultRig(workdir, case=case.name, store=case.store, count=count, rate=rate,
                  poison=case.poison, persistence=case.persistence,
                  autosave_interval=case.autosave_interval, replicas=case.replicas,
                  receipts=case.receipts, postgres_url=postgres_url) as rig:
        case.scenario(rig)
        return rig.outcome(drain_timeout_s=drain_timeout_s)


@contextmanager
def scratch(parent: Path | None = None) -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="gw-faults-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":  # the edge child: python -m tests.support.faults edge ...
    if sys.argv[1:2] != ["edge"]:
        raise SystemExit("usage: python -m tests.support.faults edge --config ... ")
    raise SystemExit(edge_main(sys.argv[2:]))
