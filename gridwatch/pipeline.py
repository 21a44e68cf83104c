"""The runtime core: validate → cell → stream → desk, under every runtime.

Replay (``gridwatch.replay``), the embedded service (``gridwatch.embedded``) and the
scale-out worker (``gridwatch.commands.worker.StoreSink``) each build the objects here and
only feed them; none wires the stream or ticket side its own way.

- :func:`read_lines`: detection JSONL lines in batches, valid ones parsed, the rest
  refused with their line number (replay, ``gridwatch report``, ``gridwatch hotspots``).
- :class:`Pipeline`: cell lookup (one STRtree query per batch) → the stream core → the
  ticket side; ``live=True`` is the live settings (:func:`live_config`).
- :class:`TicketWriter`: stream outputs into a ticket store. Straight through for replay;
  live, the idempotent desk (a redelivery changes nothing) with batched writes over a SQL
  store (one transaction per batch, each touched ticket written once) and the poison
  split (a batch the store refuses for good is split until only the offender is left,
  which is refused; the rest commits).
- :data:`STORE_UNAVAILABLE` and :func:`until_stored`: which store errors are passing, and
  the one retry-until-stored loop (waits from :class:`stream.retry.Backoff`).
- :func:`held_event_ids`: what a restarted runtime seeds its event-id filter with.

Example:
    >>> pipeline = Pipeline(config, grid, MemoryTicketStore())
    >>> for batch in read_lines(open("detections.jsonl", "rb")):
    ...     pipeline.feed(batch.valid)
    >>> pipeline.finish()
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from operator import attrgetter
from typing import TypeVar

import numpy as np
import sqlalchemy.exc
from sqlalchemy import Connection

from detectors.schema import Detection, DetectionRejected, parse_detection
from geo.grid import Grid
from gridwatch.config import GridWatchConfig
from stream.hotspot import HotspotEngine
from stream.processor import StreamOutput, StreamProcessor, live_stream_settings
from stream.retry import Backoff
from stream.types import HotspotFinding, IncidentEvent
from ticketing.batch import BatchingStore
from ticketing.desk import TicketDesk
from ticketing.idempotent import IdempotentDesk
from ticketing.models import Ticket
from ticketing.store import SqlTicketStore, TicketFilter, TicketStore, VersionConflict

log = logging.getLogger(__name__)

# what a store raises while it cannot write (disk full, locked, database gone): retried.
# Anything else is a bug on this batch's data and would fail again: not retried.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, sqlite3.OperationalError, sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError)
# the live runtimes' wait before retrying a store that cannot write: 0.5 s doubling to 30 s
STORE_BACKOFF = Backoff(first_s=0.5, max_s=30.0)

BATCH_LINES = 1024  # small enough for a batch's objects to stay in cache
# per cell, the newest tickets whose event ids a scale-out worker seeds when it first
# sees the cell
SEED_TICKETS_PER_CELL = 200

AlsoWrite = Callable[[Connection], None]
_T = TypeVar("_T")
_LON = attrgetter("lon")
_LAT = attrgetter("lat")


def live_config(config: GridWatchConfig) -> GridWatchConfig:
    """``config`` as the live runtimes run it (:func:`stream.processor.live_stream_settings`:
    no reorder buffer)."""
    return config.model_copy(update={"stream": live_stream_settings(config.stream)})


# -- validate -------------------------------------------------------------------------------

@dataclass(slots=True)
class LineBatch:
    """Up to :data:`BATCH_LINES` input lines: the valid detections in input order, how many
    lines were records (not blank), and the refused ones as (line number, why, the line
    stripped)."""

    valid: list[Detection]
    read: int
    refused: list[tuple[int, DetectionRejected, bytes | str]] = field(default_factory=list)


def read_lines(lines: Iterable[bytes | str]) -> Iterator[LineBatch]:
    """Detection JSONL lines (bytes or str, one object each; line numbers from 1) parsed
    in batches. Blank lines are not records; a refused line keeps its number and reason."""
    it = iter(lines)
    first = 1
    while batch := list(islice(it, BATCH_LINES)):
        valid: list[Detection] = []
        out = LineBatch(valid, 0)
        refused = out.refused
        read = 0
        for number, line in enumerate(batch, first):
            # JSON allows the line's own newline around the object: one copy fewer per
            # line. Refused lines are parsed again stripped, for the same reasons and
            # positions as before (and to tell blank lines, which are not records).
            try:
                valid.append(parse_detection(line))
                read += 1
                continue
            except DetectionRejected:
                pass
            stripped = line.strip()
            if not stripped:
                continue
            read += 1
            try:
                valid.append(parse_detection(stripped))
            except DetectionRejected as exc:
                refused.append((number, exc, stripped))
        out.read = read
        first += len(batch)
        yield out


# -- the ticket side ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Refusal:
    """A stream output the ticket store refused for good, and the store's reason."""

    output: StreamOutput
    reason: str


class TicketWriter:
    """Stream outputs into tickets in ``store``.

    Replay (``idempotent=False``) applies each output through the desk. The live runtimes
    (``idempotent=True``) go through :class:`~ticketing.idempotent.IdempotentDesk`, so an
    output repeating what the store holds is absorbed; ``only_reopened`` is for a runtime
    whose seeded event-id filter already drops the repeats it knows (the embedded
    service): only incidents found re-opened are checked. Over a SQL store,
    :meth:`write` holds the desk's writes for the batch (:class:`BatchingStore`) and
    commits them in one transaction.

    ``received`` is when the centre receives the work (the live runtimes: the wall clock),
    where deadline clocks start; None starts them at event time, as replay does.
    """

    def __init__(self, config: GridWatchConfig, grid: Grid, store: TicketStore, *,
                 received: Callable[[], datetime] | None = None, idempotent: bool = False,
                 only_reopened: bool = True, shared_store: bool = False) -> None:
        self.store = store
        # the desk works on a write-behind copy per batch: each touched ticket is written
        # once per batch, in one transaction, instead of once per output
        self.batching = (BatchingStore(store)
                         if idempotent and isinstance(store, SqlTicketStore) else None)

        def desk_over(target: TicketStore) -> TicketDesk:
            return TicketDesk(policies=config.policies, settings=config.ticketing,
                              grid=grid, store=target, received=received)

        self.desk = desk_over(self.batching or store)
        # shared_store: other writers (centre replicas) add detections to this store too
        held = (store.event_ids_held
                if shared_store and isinstance(store, SqlTicketStore) else None)
        self.idempotent = (IdempotentDesk(self.desk, only_reopened=only_reopened,
                                          held_anywhere=held)
                           if idempotent else None)
        self._apply_one: Callable[[StreamOutput], Ticket | None] = (
            self.desk.apply if self.idempotent is None else self.idempotent.apply)
        # after a batch met a concurrent change: output by output, written at once, the
        # desk re-reading and retrying each (the same incidents found re-opened)
        self._direct: IdempotentDesk | None = None
        if self.batching is not None and self.idempotent is not None:
            self._direct = IdempotentDesk(desk_over(store), only_reopened=only_reopened,
                                          reopened=self.idempotent.reopened,
                                          held_anywhere=held)
        self._also: list[AlsoWrite] = []  # the durable state's write, until written
        self.refused: list[Refusal] = []  # since the last take_refused()
        self.lock = threading.Lock()  # one writer at a time (the batch is not shared)

    @property
    def opened(self) -> int:
        """Tickets opened, batched and one by one."""
        direct = 0 if self._direct is None else self._direct.desk.stats.opened
        return self.desk.stats.opened + direct

    def take_refused(self) -> list[Refusal]:
        """The outputs refused since the last call (a retried write keeps adding)."""
        refused, self.refused = self.refused, []
        return refused

    def apply(self, outputs: Iterable[StreamOutput]) -> None:
        """Apply outputs one by one, in order (replay; any error propagates)."""
        apply = self._apply_one
        for output in outputs:
            apply(output)

    def write(self, outputs: list[StreamOutput], also: AlsoWrite | None = None, *,
              resume: bool = False) -> list[Ticket]:
        """Apply ``outputs`` (and ``also(conn)``, the stream stage's durable state, in the
        same transaction): batched over a SQL store, one by one after a concurrent change.
        The tickets written, in order.

        A batch the store refuses for a reason that is not transient (a value it cannot
        hold, a constraint) is split and each part retried, down to the one output that
        fails alone: that output goes to :attr:`refused` (with the store's reason; see
        :meth:`take_refused`) and everything else commits.

        Raises one of :data:`STORE_UNAVAILABLE` while the store cannot write. ``outputs``
        is then left holding what is not written yet (a batch is written whole or not at
        all; one by one, the written ones are removed), and ``also`` is kept until it is
        written: call again with the same list and ``resume=True`` (``also`` is then
        ignored) and nothing is applied twice.
        """
        if not resume:
            self._also[:] = [] if also is None else [also]
        written: list[Ticket] = []
        with self.lock:
            if self.batching is None:
                self._one_by_one(outputs, written)
            else:
                self._batched(outputs, written, self.batching)
        return written

    def _batched(self, outputs: list[StreamOutput], written: list[Ticket],
                 batching: BatchingStore) -> None:
        also = self._also
        apply = self._apply_one
        merge: Callable[[list[StreamOutput]], list[StreamOutput]] = (
            list if self.idempotent is None else self.idempotent.merge_joins)
        size = len(outputs)
        with_also = True  # False: retry one output without the durable state's write
        while outputs or also:
            part = outputs[:size]
            stats = self.desk.stats
            opened, updated = stats.opened, stats.updated
            carried = also[0] if also and with_also else None
            tickets: list[Ticket] = []
            # the tickets of the batch before are copies the desk no longer appends to:
            # its sets of their ids would only hold them in memory
            self.desk.known.forget()
            try:
                with batching.batch(also=carried):
                    # the new incidents' "has it a ticket already?" (the idempotent
                    # desk's re-open check) in one read, not one each
                    batching.prefetch_incidents([
                        o.incident.incident_id for o in part
                        if isinstance(o, IncidentEvent) and o.opened])
                    # one application per busy incident (the same tickets); a refused
                    # batch is split in the outputs as they came, so a poison
                    # detection never takes a merged one with it
                    for output in merge(part):
                        ticket = apply(output)
                        if ticket is not None:
                            tickets.append(ticket)
            except VersionConflict:
                # an operator changed a ticket meanwhile: nothing of the part was written;
                # apply output by output, the desk re-reading and retrying each
                self.desk.stats.opened, self.desk.stats.updated = opened, updated
                log.info("batch of %d outputs met a concurrent change; applying one by one",
                         len(part))
                self._one_by_one(outputs, written, upto=len(part))
                continue
            except STORE_UNAVAILABLE:
                self.desk.stats.opened, self.desk.stats.updated = opened, updated
                raise
            except Exception as exc:
                self.desk.stats.opened, self.desk.stats.updated = opened, updated
                if len(part) > 1:
                    size = (len(part) + 1) // 2
                    continue
                if not part:
                    raise  # the durable state's own write: not an output's fault
                if carried is not None:
                    with_also = False  # is it the output, or the write that went with it?
                    continue
                self._refuse(part[0], exc)
                del outputs[0]
                size, with_also = len(outputs), True
                continue
            written.extend(tickets)
            del outputs[:len(part)]
            if carried is not None:
                also.clear()
            size, with_also = len(outputs), True

    def _one_by_one(self, outputs: list[StreamOutput], written: list[Ticket],
                    upto: int | None = None) -> None:
        """Apply the first ``upto`` outputs (all: None) each on its own, through the desk
        that writes at once; one the store refuses for good is refused alone."""
        apply = self._apply_one if self._direct is None else self._direct.apply
        n = len(outputs) if upto is None else upto
        for _ in range(n):
            try:
                ticket = apply(outputs[0])
            except STORE_UNAVAILABLE:
                raise
            except Exception as exc:
                self._refuse(outputs[0], exc)
            else:
                if ticket is not None:
                    written.append(ticket)
            del outputs[0]
        also = self._also
        if also:
            if isinstance(self.store, SqlTicketStore):
                with self.store.transaction() as conn:
                    also[0](conn)
            also.clear()

    def _refuse(self, output: StreamOutput, exc: Exception) -> None:
        reason = f"the ticket store refused it: {type(exc).__name__}: {exc}"[:1000]
        if isinstance(output, HotspotFinding):
            log.error("hot-spot finding %s/%s not written: %s", output.cell_id,
                      output.kind, reason)
        else:
            log.error("refusing detections %s: %s", ", ".join(output.new_event_ids),
                      reason)
        self.refused.append(Refusal(output, reason))


def until_stored(attempt: Callable[[], _T], *, stop: threading.Event,
                 backoff: Backoff = STORE_BACKOFF,
                 on_error: Callable[[BaseException, float | None], None] | None = None
                 ) -> tuple[bool, _T | None]:
    """Call ``attempt`` until it does not raise one of :data:`STORE_UNAVAILABLE`, waiting
    ``backoff``'s delays in between, or until ``stop`` is set: ``(True, its result)``, or
    ``(False, None)`` when it gave up. ``on_error(error, delay)`` is told of each failure:
    the wait before the retry, or None when it gives up (``stop`` was set)."""
    delays = backoff.delays()
    while True:
        try:
            return True, attempt()
        except STORE_UNAVAILABLE as exc:
            delay = None if stop.is_set() else next(delays)
            if on_error is not None:
                on_error(exc, delay)
            if delay is None:
                return False, None
            stop.wait(delay)


def held_event_ids(store: TicketStore, *, horizon_s: float | None = None,
                   until: datetime | None = None, cell_id: str | None = None,
                   newest: int = SEED_TICKETS_PER_CELL) -> list[tuple[str, float]]:
    """``(event_id, event-time seconds)`` of the detections the store's tickets hold: what
    a restarted runtime seeds its event-id filter with, so a redelivered detection is not
    counted twice.

    - ``cell_id`` (the scale-out worker, seeding a cell as it first sees it): the ids of
      that cell's ``newest`` tickets.
    - else, over a SQL store: the ids added within ``horizon_s`` of the newest one
      (:meth:`~ticketing.store.SqlTicketStore.recent_event_ids`; ``until``, a live
      runtime's clock plus the future it accepts, leaves out what a bad clock wrote).
    - else (a memory store): every ticket's ids.
    """
    if cell_id is not None:
        flt = TicketFilter(cell_id=cell_id)
        total = store.count(flt)
        tickets = store.list(flt, limit=newest, offset=max(0, total - newest))
    elif isinstance(store, SqlTicketStore):
        if horizon_s is None:
            raise ValueError("expected horizon_s for a SQL store's recent event ids")
        return store.recent_event_ids(horizon_s=horizon_s, until=until)
    else:
        tickets = list(store.all())
    return [(event_id, t.updated_at.timestamp()) for t in tickets
            for event_id in t.event_ids]


# -- the core -------------------------------------------------------------------------------

class Pipeline:
    """Cell lookup → stream → tickets over one store: what every runtime runs.

    ``live`` (the embedded service): the live settings (:func:`live_config`), the
    idempotent desk and batched writes (:class:`TicketWriter`); else (replay) the
    configured reorder buffer and a straight desk. ``received``: see
    :class:`TicketWriter`. ``filter_event_ids=False``: the runtime drops re-sent
    detections before :meth:`stream` with its own event-id filter (the embedded
    service's intake), so the stream core does not filter them a second time.
    """

    def __init__(self, config: GridWatchConfig, grid: Grid, store: TicketStore, *,
                 received: Callable[[], datetime] | None = None,
                 live: bool = False, filter_event_ids: bool = True,
                 shared_store: bool = False) -> None:
        self.config = live_config(config) if live else config
        self.grid = grid
        self.store = store
        # the cell ids by index, and None last: what -1 (out of area) picks
        self._cell_ids: list[str | None] = [*(c.cell_id for c in grid.cells), None]
        self.processor = StreamProcessor(self.config.stream, self.config.policies,
                                         HotspotEngine(self.config.hotspot, grid),
                                         filter_event_ids=filter_event_ids)
        self.tickets = TicketWriter(self.config, grid, store, received=received,
                                    idempotent=live, shared_store=shared_store)

    @property
    def desk(self) -> TicketDesk:
        return self.tickets.desk

    def cells_for(self, detections: list[Detection]) -> list[str | None]:
        """Each detection's cell id (None: out of area), one STRtree query for all."""
        if not detections:
            return []
        n = len(detections)
        idx = self.grid.lookup(np.fromiter(map(_LON, detections), float, n),
                               np.fromiter(map(_LAT, detections), float, n))
        return list(map(self._cell_ids.__getitem__, idx.tolist()))

    def stream(self, detections: list[Detection]) -> list[StreamOutput]:
        """The stream stage only: what the detections produce (incident events, hot-spot
        findings), in order."""
        push = self.processor.push
        outputs: list[StreamOutput] = []
        for detection, cell_id in zip(detections, self.cells_for(detections), strict=True):
            outputs.extend(push(detection, cell_id))
        return outputs

    def apply(self, outputs: list[StreamOutput]) -> None:
        self.tickets.apply(outputs)

    def feed(self, detections: list[Detection]) -> None:
        self.apply(self.stream(detections))

    def finish(self) -> None:
        self.apply(self.processor.flush())
