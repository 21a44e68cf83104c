"""``gridwatch worker``: a scale-out faust worker on Kafka (needs the ``kafka`` extra).

Consumes ``gridwatch.detections.v1``, re-keys valid detections by cell onto
``gridwatch.detections.by_cell``, dead-letters the rest to ``gridwatch.deadletter``, and
turns each cell's detections into tickets in the SQL store (see ``docs/scaleout.md``).
Start as many workers as you like with the same ``--app-id``: Kafka shares the partitions
among them. Settings come from flags, else ``GRIDWATCH_*`` environment variables; a store
password only from ``$GRIDWATCH_TICKETS_URL``.

This module is also the wiring of the scale-out runtime: the faust agents
(``stream/faust_app.py``) know only the stream core; the ticket side — an idempotent
desk over a SQL store — is built here, like ``gridwatch/embedded.py`` wires the embedded
service. faust's own CLI finds the app here too: ``faust -A gridwatch.commands.worker
worker`` (the ``app`` attribute is built from the environment on first access, never at
import time). Importing this module does not import faust; building a worker does.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from geo.grid import Grid
from gridwatch.commands.quiet_logs import install
from gridwatch.config import GridWatchConfig
from gridwatch.errors import UserError
from gridwatch.pipeline import (
    SEED_TICKETS_PER_CELL,
    STORE_UNAVAILABLE,
    TicketWriter,
    held_event_ids,
)
from stream.processor import StreamOutput
from ticketing import checkpoints
from ticketing.idempotent import IdempotentDesk
from ticketing.store import SqlTicketStore, TicketStore, configured_url

if TYPE_CHECKING:
    from stream.faust_app import Scaleout, ScaleoutSettings, Sender

DEFAULT_STORE_URL = "var/scaleout/tickets.sqlite3"

log = logging.getLogger(__name__)


# -- the ticket side: the idempotent desk over the store ---------------------------------

class StoreSink:
    """The scale-out runtime's :class:`~stream.faust_app.TicketSink`: a thin adapter over
    the runtime core's :class:`~gridwatch.pipeline.TicketWriter` (the idempotent desk,
    batched writes over a SQL store: one transaction per :meth:`apply`, the poison split),
    as the embedded service uses it. Store outages (:data:`~gridwatch.pipeline.STORE_UNAVAILABLE`)
    surface as :class:`~stream.faust_app.StoreUnavailable` so the agent retries the call;
    what an earlier try wrote is absorbed by the idempotent desk, not written twice.

    An output the store refuses for good (a value it cannot hold) is logged and counted in
    :attr:`refused` and skipped, so one bad detection cannot stop its partition; the rest
    of the call's outputs commit.

    ``received`` is when the centre receives the work, where deadline clocks start: the
    wall clock in production; None starts them at event time, as replay does."""

    def __init__(self, config: GridWatchConfig, grid: Grid, store: TicketStore, *,
                 received: Callable[[], datetime] | None = None) -> None:
        self.store = store
        # no event-id filter ahead of it (a replayed partition comes through a fresh
        # stream processor): every output is checked against the store
        self.tickets = TicketWriter(config, grid, store, received=received,
                                    idempotent=True, only_reopened=False)
        self.refused = 0

    @property
    def desk(self) -> IdempotentDesk:
        assert self.tickets.idempotent is not None
        return self.tickets.idempotent

    def apply(self, outputs: Sequence[StreamOutput]) -> list[str]:
        from stream.faust_app import StoreUnavailable

        try:
            tickets = self.tickets.write(list(outputs))
        except STORE_UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        finally:
            self.refused += len(self.tickets.take_refused())
        return [t.ticket_id for t in tickets]

    def held_event_ids(self, cell_id: str) -> Iterable[tuple[str, float]]:
        from stream.faust_app import StoreUnavailable

        try:
            return held_event_ids(self.store, cell_id=cell_id,
                                  newest=SEED_TICKETS_PER_CELL)
        except STORE_UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc


class StoreCheckpoints:
    """The scale-out runtime's :class:`~stream.faust_app.StateSink`: the hot-spot stage's
    checkpoint in the ticket store (:mod:`ticketing.checkpoints`)."""

    def __init__(self, store: TicketStore) -> None:
        if not isinstance(store, SqlTicketStore):
            raise ValueError(f"expected a SQL ticket store, got {type(store).__name__}")
        self.store = store

    def load_state(self, name: str) -> bytes | None:
        from stream.faust_app import StoreUnavailable

        try:
            with self.store.connection() as conn:
                return checkpoints.load(conn, name=name).body
        except STORE_UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    def save_state(self, name: str, body: bytes) -> None:
        from stream.faust_app import StoreUnavailable
        from stream.hotspot_state import FORMAT

        try:
            with self.store.transaction() as conn:
                checkpoints.save_checkpoint(conn, name=name, format=FORMAT, body=body,
                                            saved_at=datetime.now(UTC))
        except STORE_UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc


# -- construction -------------------------------------------------------------------------

def resolved_store_url(settings: ScaleoutSettings, config: GridWatchConfig,
                       environ: Mapping[str, str] | None = None) -> str:
    """``$GRIDWATCH_TICKETS_URL``, else ``--store-url``, else ``ticketing.storage_url``,
    else the default SQLite file."""
    return configured_url(settings.store_url or config.ticketing.storage_url,
                          default=DEFAULT_STORE_URL,
                          environ=None if environ is None else dict(environ))


def utc_now() -> datetime:
    return datetime.now(UTC)


def scaleout_for(settings: ScaleoutSettings, config: GridWatchConfig, grid: Grid,
                 store: TicketStore, *, sender: Sender | None = None,
                 received: Callable[[], datetime] | None = utc_now) -> Scaleout:
    """The faust app over the stream core and an idempotent desk on ``store``.

    Deadline clocks start when the worker receives the work (``received``, the wall
    clock), so a backlog is not overdue on arrival, and detections observed more than
    ``stream.max_future_s`` after or ``max_age_s`` before it are dead-lettered
    (``clock_skew``); ``received=None`` starts them at event time, checks no clocks and
    gives exactly the tickets replay gives."""
    from stream.faust_app import HOTSPOT_STATE, CellWorker, HotspotStage, Scaleout

    sink = StoreSink(config, grid, store, received=received)
    worker = CellWorker(stream=config.stream, policies=config.policies,
                        hotspot=config.hotspot, grid=grid, sink=sink,
                        lateness_s=settings.lateness_s, sources=settings.input_partitions)
    # one hot-spot stage for the whole grid, its state durable in the ticket store
    hotspots = HotspotStage(stream=config.stream, policies=config.policies,
                            hotspot=config.hotspot, grid=grid, sink=sink,
                            state=StoreCheckpoints(store)
                            if isinstance(store, SqlTicketStore) else None,
                            state_name=f"worker:{settings.app_id}:{HOTSPOT_STATE}",
                            lateness_s=settings.lateness_s, sources=settings.input_partitions)
    # a live worker (a received clock) dead-letters detections whose clock is far off it
    return Scaleout(settings, grid=grid, worker=worker, hotspots=hotspots, sender=sender,
                    skew_clock=received)


def build_scaleout(settings: ScaleoutSettings, *,
                   environ: Mapping[str, str] | None = None) -> Scaleout:
    """Load the grid and config the settings name, open the store, build the app."""
    from gridwatch.commands._common import load_grid, load_gridwatch_config
    from ticketing.store import open_store

    if settings.grid is None:
        raise UserError("the worker needs a grid: --grid FILE or $GRIDWATCH_GRID")
    grid = load_grid(settings.grid)
    config = load_gridwatch_config(settings.config)
    store = open_store(resolved_store_url(settings, config, environ),
                       schema=settings.store_schema)
    return scaleout_for(settings, config, grid, store,
                        received=None if settings.event_clock else utc_now)


_built: Scaleout | None = None


def __getattr__(name: str) -> Any:
    # ``faust -A gridwatch.commands.worker worker`` asks for ``app``: build it then, from
    # the environment, never at import time
    global _built
    if name == "app":
        if _built is None:
            from stream.faust_app import ScaleoutSettings

            _built = build_scaleout(ScaleoutSettings.from_env())
        return _built.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the command ----------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker", help="run a scale-out faust worker on Kafka (pip install 'gridwatch[kafka]')",
        description="Cell-partitioned stream processing on Kafka with faust-streaming. "
                    "Flags override GRIDWATCH_* environment variables.")
    parser.add_argument("--grid", type=Path, metavar="GRID.geojson",
                        help="the cell grid (or $GRIDWATCH_GRID)")
    parser.add_argument("--config", type=Path, metavar="FILE.yaml",
                        help="merged over configs/default.yaml (or $GRIDWATCH_CONFIG)")
    parser.add_argument("--broker", dest="broker_url", metavar="URL",
                        help="kafka://host:port[;kafka://host2:port] "
                             "(or $GRIDWATCH_KAFKA_BROKER; default kafka://localhost:9092)")
    parser.add_argument("--partitions", type=int,
                        help="partitions of the by-cell topic (created at start; an "
                             "existing topic must have this count) "
                             "(or $GRIDWATCH_KAFKA_PARTITIONS; default 8)")
    parser.add_argument("--input-partitions", type=int,
                        help="partitions of the input topic gridwatch.detections.v1 "
                             "(or $GRIDWATCH_KAFKA_INPUT_PARTITIONS; default 8)")
    parser.add_argument("--lateness-s", type=float,
                        help="hold detections until every input partition is this far "
                             "past them (or $GRIDWATCH_KAFKA_LATENESS_S; default 0)")
    parser.add_argument("--app-id", help="consumer group / app id shared by all workers "
                                         "(or $GRIDWATCH_KAFKA_APP_ID)")
    parser.add_argument("--store-url", metavar="URL",
                        help="ticket store without a password (sqlite path or "
                             "postgresql://user@host/db); $GRIDWATCH_TICKETS_URL wins")
    parser.add_argument("--store-schema", help="PostgreSQL schema for the tables")
    parser.add_argument("--web-port", type=int,
                        help="serve faust's web endpoints on this port (default: off)")
    parser.add_argument("--loglevel", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--check", action="store_true",
                        help="load settings, grid, config and store, print what the worker "
                             "would run, and exit without connecting to Kafka")
    parser.set_defaults(func=run)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port
                                                          else "")
    return urlunsplit(parts._replace(netloc=netloc))


def run(args: argparse.Namespace) -> int:
    try:
        from stream.faust_app import (
            TOPIC_BY_CELL,
            TOPIC_DEADLETTER,
            TOPIC_DETECTIONS,
            ScaleoutSettings,
        )
    except ModuleNotFoundError as exc:
        if exc.name in ("faust", "aiokafka", "mode"):
            raise UserError("the worker needs faust-streaming: "
                            "pip install 'gridwatch[kafka]'") from None
        raise
    from pydantic import ValidationError

    from configs.reader import format_validation_error

    try:
        settings = ScaleoutSettings.from_env(
            grid=args.grid, config=args.config, broker_url=args.broker_url,
            partitions=args.partitions, input_partitions=args.input_partitions,
            lateness_s=args.lateness_s, app_id=args.app_id, store_url=args.store_url,
            store_schema=args.store_schema, web_port=args.web_port)
    except ValidationError as exc:
        raise UserError(format_validation_error("worker settings", exc)) from None
    scaleout = build_scaleout(settings)
    if args.check:
        store_url = getattr(scaleout.worker.sink, "store", None)
        store_url = getattr(store_url, "url", "?")
        print(f"app id        {settings.app_id}")
        print(f"broker        {settings.broker_url}")
        print(f"consumes      {TOPIC_DETECTIONS} (consumer group {settings.app_id}-input)")
        print(f"by cell       {TOPIC_BY_CELL} ({settings.partitions} partitions, "
              f"key = cell id)")
        print(f"input         {settings.input_partitions} partitions, lateness "
              f"{settings.lateness_s:g} s, idle after {settings.idle_s:g} s")
        print(f"dead letters  {TOPIC_DEADLETTER}")
        print(f"replication   {settings.replication_factor}")
        print(f"grid          {len(scaleout.grid)} cells ({settings.grid})")
        print(f"config        {settings.config or 'configs/default.yaml'}")
        print(f"ticket store  {redact(str(store_url))}")
        print(f"store schema  {settings.store_schema or '-'}")
        print(f"web port      {settings.web_port or 'off'}")
        return 0
    import asyncio

    from gridwatch.gc_tuning import tune_process
    from stream.faust_app import TopicMismatch, declare_topics

    install(settings.log_repeat_s)  # the CLI's handlers, until faust sets up its own
    try:
        asyncio.run(declare_topics(settings))
    except (TopicMismatch, TimeoutError) as exc:
        raise UserError(str(exc)) from None
    worker = quiet_worker(scaleout.app, loglevel=args.loglevel,
                          log_repeat_s=settings.log_repeat_s, stop_s=settings.stop_s)
    tune_process()  # grid, config, store and app built: frozen out of the collector
    worker.execute_from_commandline()  # runs until a signal stops it
    return 0


STOPPED_LATE = 75  # exit status of a worker that had to be cut off (EX_TEMPFAIL)


def quiet_worker(app: Any, *, log_repeat_s: float, stop_s: float, **kwargs: Any) -> Any:
    """faust's :class:`~faust.Worker` for ``app``: its log handlers quiet about repeated
    broker errors (:mod:`gridwatch.commands.quiet_logs`, one line per ``log_repeat_s``),
    and a stop that ends within ``stop_s`` seconds. (With the broker down, faust's
    consumer thread dies in its own shutdown and faust then waits for it forever; a
    worker still stopping at the deadline exits with status :data:`STOPPED_LATE`. What
    it had not committed is delivered again.)"""
    import os
    import sys
    import threading

    from faust import Worker

    def cut_off() -> None:
        log.error("the worker did not stop within %.0f s (broker unreachable?); exiting "
                  "with status %d", stop_s, STOPPED_LATE)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        os._exit(STOPPED_LATE)

    class QuietWorker(Worker):
        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            install(log_repeat_s, logger)

        async def stop(self) -> None:
            deadline = threading.Timer(stop_s, cut_off)
            deadline.daemon = True
            deadline.start()
            await super().stop()

    return QuietWorker(app, **kwargs)
