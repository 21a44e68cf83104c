"""The embedded single-box pipeline: one process, an in-process queue between intake and
the stream → ticketing core, tickets in SQLite. No external services.

Intake (MQTT callbacks, HTTP handlers, the demo) calls :meth:`EmbeddedPipeline.submit_raw`
from any thread. Validation and the event-id check happen at once, so the caller can
dead-letter a bad message; valid detections go onto a bounded queue that one worker drains
in batches. ``on_committed`` callbacks run after the batch holding that detection has been
written to the store, so an MQTT ingest can acknowledge a message only when it is safe:
nothing accepted is lost if the process dies. A store that fails is retried with back-off
(the batch's stream outputs are kept, not recomputed) while intake waits.

Live mode processes detections as they come (no reorder buffer): waiting ``lateness_s``
for stragglers would delay every fire alarm by that long, and the incident clusterer joins
out-of-order detections by their span anyway.

Evidence links: a detection's ``evidence.snapshot_url`` names a file on the edge box that
took it. Tickets must link to the centre's copy instead, so every accepted detection with a
snapshot gets ``/evidence/<event_id>`` (``ticketing.evidence.evidence_path``) in its place
before the stream core sees it; the image itself comes over its own topic and is served
there (``docs/edge.md``). Replay leaves URLs as they are (it is a batch harness on files).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from detectors.schema import Detection, DetectionRejected, parse_detection
from geo.grid import Grid
from gridwatch.config import GridWatchConfig
from gridwatch.pipeline import (
    STORE_UNAVAILABLE as STORE_UNAVAILABLE,  # its home is gridwatch.pipeline; re-exported
)
from gridwatch.pipeline import (
    AlsoWrite,
    Pipeline,
    held_event_ids,
    until_stored,
)
from stream import hotspot_state
from stream.dedup import EventIdFilter
from stream.policy import Mode
from stream.retry import Backoff
from stream.types import HotspotFinding
from ticketing import checkpoints
from ticketing.evidence import evidence_path
from ticketing.models import Ticket
from ticketing.store import SqlTicketStore, TicketStore

log = logging.getLogger(__name__)

OnCommitted = Callable[[], None]
OnFailed = Callable[[], None]
# (code, reason): the detection was refused for good (dead-letter it, then acknowledge)
OnRefused = Callable[[str, str], None]
Submission = (tuple[Detection, OnCommitted | None, OnFailed | None]
              | tuple[Detection, OnCommitted | None, OnFailed | None, OnRefused | None])
_Item = tuple[Detection, OnCommitted | None, OnFailed | None, OnRefused | None]
# the name of the embedded service's hot-spot state in the ticket store (one per store)
CHECKPOINT_NAME = "embedded"


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What happened to one submitted message.

    ``accepted`` is true for a new valid detection (queued) and for a duplicate (already
    had; safe to acknowledge). ``code``/``reason`` say why a message was refused.
    """

    accepted: bool
    code: str | None = None
    reason: str | None = None
    duplicate: bool = False


_STOP = object()
# a queued first copy's repeats while it has none (a list is made for the first)
_NO_REPEATS: tuple[()] = ()

# the dead-letter code of a detection the ticket store refused for good
STORE_REFUSED = "store_refused"
# and of one whose observation time is too far from when the centre received it
CLOCK_SKEW = "clock_skew"


def _utc_now() -> datetime:
    return datetime.now(UTC)

_ACCEPTED = SubmitResult(True)
_DUPLICATE = SubmitResult(True, duplicate=True)


class _Flush:
    """A queue item asking the worker to close the hot-spot windows."""

    def __init__(self) -> None:
        self.done = threading.Event()


class EmbeddedPipeline:
    """Validate → queue → (cell, dedup, incidents, hot spots) → ticket store.

    ``batch_max`` bounds how many queued detections the worker writes in one transaction.
    A batch costs per ticket it touches (read check, row update, body encoding, commit), so
    when intake runs ahead (a backlog after an outage, a burst) bigger batches amortise
    that over more detections; when the worker keeps up, batches stay small and latency
    low. At 4,000 a full batch takes about 0.07 s on a 2-core box (it was 2,000 while a
    detection cost half as much again; ``benchmarks/pipeline_phases.py --batch 4000``).

    With a SQL store the hot-spot state is durable (``checkpoint_name``, ``None``: off):
    at every closed hour and at :meth:`close` a checkpoint
    (:mod:`stream.hotspot_state`), and between checkpoints a journal of the hot-spot
    detections of each batch, both in the batch's own transaction
    (:mod:`ticketing.checkpoints`). A new pipeline on the same store restores the
    checkpoint and re-feeds the journal, so after a clean stop or a crash it continues
    exactly where the committed tickets end.

    ``skew_clock`` (``gridwatch serve``: the wall clock; None: no check) is what a
    detection's ``observed_at`` is checked against on intake: more than
    ``stream.max_future_s`` ahead or ``stream.max_age_s`` behind it is refused as
    ``clock_skew`` (counted per source), so no bad clock reaches the stream core or a
    ticket. A batch the store refuses for good is split until only the offender is left;
    that one is refused (``store_refused``, the store's reason) and the rest committed.

    ``shared_store`` (``gridwatch serve --mqtt-share-group``: several replicas on one
    store): every new event id is also checked against the whole store before a ticket
    takes it, since another replica may have committed a re-sent detection into a ticket
    this one does not know (one query per incident event).

    Example:
        >>> pipeline = EmbeddedPipeline(config, grid, SqliteTicketStore("tickets.db"))
        >>> pipeline.submit_raw(payload, origin="mqtt:gridwatch/v1/st1/smoke-3/detection")
        >>> pipeline.drain()   # wait until everything queued is in the store
        >>> pipeline.close()
    """

    def __init__(
        self,
        config: GridWatchConfig,
        grid: Grid,
        store: TicketStore,
        *,
        queue_max: int = 50_000,
        batch_max: int = 4000,
        retry_delay_s: float = 0.5,
        retry_max_s: float = 30.0,
        link_evidence: bool = True,
        received: Callable[[], datetime] | None = _utc_now,
        checkpoint_name: str | None = CHECKPOINT_NAME,
        skew_clock: Callable[[], datetime] | None = None,
        shared_store: bool = False,
    ) -> None:
        self.config = config
        self.grid = grid
        self.store = store
        # live: no reorder buffer; the idempotent desk (a detection re-sent after its id
        # was forgotten, past the dedup horizon, is absorbed by what the store holds, as
        # the scale-out worker's is), batched writes over a SQL store. Deadline clocks
        # start when the centre receives the work (wall clock), not at the observation
        # (an edge box's backlog must not arrive overdue); None: at the event time, as
        # replay does (the demo plays its sample as if it happened live)
        # Re-sent detections: one event-id filter, owned here at intake (self._ids,
        # seeded from the store at start-up); it must be here, not in the stream core,
        # because a repeat of a detection still queued is held until that first copy
        # commits. The stream core therefore does not filter again. What the filter
        # cannot know (an id past the dedup horizon, re-sent into a ticket the store
        # holds) the idempotent desk absorbs against the store.
        self._core = Pipeline(config, grid, store, received=received, live=True,
                              filter_event_ids=False, shared_store=shared_store)
        self._tickets = self._core.tickets
        self._batching = self._tickets.batching
        self._ids = EventIdFilter(config.stream.dedup_horizon_s)
        self._ids_lock = threading.Lock()
        # event id -> callbacks of its repeats, while the first copy is queued and not yet
        # committed: a repeat is acknowledged only when the first copy is safe
        self._waiting: dict[str, list[OnCommitted] | tuple[()]] = {}
        # entries are lists of submissions; _pending (detections accepted and not yet
        # written) is what is bounded by queue_max
        self._queue: queue.Queue[Any] = queue.Queue()
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._rejected: Counter[str] = Counter()
        self._clock_skew: Counter[tuple[str, str]] = Counter()  # (station, source)
        self._refused: Counter[str] = Counter()  # refused by the store, by code
        self._skew_clock = skew_clock
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._processed = 0
        self._failed = 0
        self._store_errors = 0
        self.link_evidence = link_evidence
        self.retry_delay_s = retry_delay_s
        self.retry_max_s = retry_max_s
        self._closing = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self._checkpoint_name = checkpoint_name if self._batching is not None else None
        self._hotspot_kinds: dict[str, bool] = {}
        self._refusals: dict[str, str] = {}  # event id -> why the store refused it (batch)
        # called by the worker after each batch's callbacks (the ingest sends its
        # receipts then: one message per station per batch)
        self.batch_listeners: list[Callable[[], None]] = []
        self.restored = self._restore()
        self._seed_seen_ids()
        self._worker = threading.Thread(target=self._run, name="gridwatch-pipeline",
                                        daemon=True)
        self._worker.start()

    # -- durable hot-spot state -------------------------------------------------------------
    def _restore(self) -> dict[str, int]:
        """Load the checkpoint and re-feed the journal (see the class doc); what was
        restored, for the log and the tests."""
        name = self._checkpoint_name
        if name is None:
            return {}
        assert isinstance(self.store, SqlTicketStore)
        with self.store.connection() as conn:
            saved = checkpoints.load(conn, name=name)
        if saved.empty:
            return {}
        processor = self._core.processor
        try:
            # the journal was written from valid detections; one that no longer parses
            # (a schema change) makes the state unusable, not the service
            journal = [parse_detection(raw) for lines in saved.journal
                       for raw in lines.splitlines()]
            if saved.body is not None:
                hotspot_state.restore(processor, saved.body)
        except (hotspot_state.CheckpointError, DetectionRejected) as exc:
            log.warning("hot-spot state %r not restored, starting cold: %s", name, exc)
            return {}
        findings = sum(1 for output in self._core.stream(journal)
                       if isinstance(output, HotspotFinding))
        if findings:  # a journal never spans a closed hour, so it cannot find anything
            log.warning("re-feeding the hot-spot journal produced %d findings", findings)
        for event_id, ts in hotspot_state.held_event_ids(processor):
            self._ids.seen(event_id, ts)
        for detection in journal:
            self._ids.seen(detection.event_id, detection.observed_at.timestamp())
        restored = {"checkpoint": int(saved.body is not None), "journal": len(journal),
                    "open_hour": processor.hotspots.open_hour or 0}
        log.info("hot-spot state %r restored (checkpoint of %s, %d detections since)",
                 name, saved.saved_at, len(journal))
        return restored

    def _is_hotspot(self, kind: str) -> bool:
        known = self._hotspot_kinds.get(kind)
        if known is None:
            known = self._hotspot_kinds[kind] = \
                self.config.policies.for_kind(kind).mode is Mode.HOTSPOT
        return known

    def _checkpoint_write(self) -> AlsoWrite | None:
        """The checkpoint of the state as it is now, as a write for the batch's
        transaction."""
        name = self._checkpoint_name
        if name is None or self._core.processor.hotspots.open_hour is None:
            return None
        body = hotspot_state.dump(self._core.processor)
        saved_at = datetime.now(UTC)

        def write(conn: Connection) -> None:
            checkpoints.save_checkpoint(conn, name=name, format=hotspot_state.FORMAT,
                                        body=body, saved_at=saved_at)
        return write

    def _persist(self, detections: list[Detection], hour_before: int | None
                 ) -> AlsoWrite | None:
        """What a batch adds to the durable state: a checkpoint if it closed an hour,
        else its hot-spot detections for the journal."""
        name = self._checkpoint_name
        if name is None:
            return None
        if hour_before is not None and \
                self._core.processor.hotspots.open_hour != hour_before:
            return self._checkpoint_write()
        lines = "\n".join(d.to_json() for d in detections if self._is_hotspot(d.kind))
        if not lines:
            return None

        def write(conn: Connection) -> None:
            checkpoints.append_journal(conn, name=name, lines=lines)
        return write

    def _seed_seen_ids(self) -> None:
        # after a restart, detections redelivered by the broker must not be counted twice;
        # a SQL store reads only the last dedup horizon of ids (not every ticket). Live:
        # what a bad clock wrote (past the future it would accept now) neither counts as
        # the newest nor goes into the filter
        until = None if self._skew_clock is None else self._skew_clock() + timedelta(
            seconds=self.config.stream.max_future_s)
        seen = self._ids.seen
        for event_id, added_ts in held_event_ids(
                self.store, horizon_s=self.config.stream.dedup_horizon_s, until=until):
            seen(event_id, added_ts)

    # -- intake (any thread) --------------------------------------------------------------
    def submit_raw(self, payload: bytes | str, *, origin: str,
                   on_committed: OnCommitted | None = None,
                   on_failed: OnFailed | None = None,
                   on_refused: OnRefused | None = None) -> SubmitResult:
        """Validate one wire message and queue it; never raises on bad input."""
        try:
            detection = parse_detection(payload)
        except DetectionRejected as exc:
            with self._counts_lock:
                self._rejected[exc.code.value] += 1
            log.info("rejected message from %s: %s", origin, exc)
            return SubmitResult(False, exc.code.value, exc.reason)
        return self.submit(detection, on_committed=on_committed, on_failed=on_failed,
                           on_refused=on_refused)

    def submit(self, detection: Detection, *, on_committed: OnCommitted | None = None,
               on_failed: OnFailed | None = None,
               on_refused: OnRefused | None = None) -> SubmitResult:
        """Queue a valid detection (blocks while the queue is full: back-pressure).

        ``on_committed`` runs once the detection is in the ticket store; for a repeat of
        one still queued, once that first copy is. ``on_failed`` runs if its batch could
        not be written for a passing reason (the detection is then forgotten, so a
        re-delivery is taken). ``on_refused(code, reason)`` runs instead of
        ``on_committed`` if the store refused the detection for good (``store_refused``:
        the rest of its batch is written without it); the caller dead-letters it.

        A live pipeline (a ``skew_clock``) refuses at once, as ``clock_skew``, a
        detection observed more than ``stream.max_future_s`` after or
        ``stream.max_age_s`` before now (the result says why; nothing is queued)."""
        return self.submit_many([(detection, on_committed, on_failed, on_refused)])[0]

    def submit_many(self, items: list[Submission]) -> list[SubmitResult]:
        """:meth:`submit` for several ``(detection, on_committed, on_failed)`` or
        ``(..., on_refused)`` at once: one lock round and one queue entry for all."""
        results: list[SubmitResult] = []
        fresh: list[_Item] = []
        ack_now: list[OnCommitted | None] = []
        skewed, stamps = self._clock_check(items)
        duplicates = 0
        link_evidence = self.link_evidence
        with self._ids_lock:
            seen, waiting_for = self._ids.seen, self._waiting
            for index, submitted in enumerate(items):
                item: _Item = (submitted if len(submitted) == 4  # type: ignore[assignment]
                               else (*submitted, None))
                detection, on_committed = item[0], item[1]
                if skewed is not None and index in skewed:
                    results.append(skewed[index])
                    continue
                event_id = detection.event_id
                if seen(event_id, detection.observed_at.timestamp() if stamps is None
                        else stamps[index]):
                    duplicates += 1
                    waiting = waiting_for.get(event_id)
                    if waiting is None:
                        ack_now.append(on_committed)
                    elif on_committed is not None:
                        if waiting:
                            waiting.append(on_committed)
                        else:  # the first repeat: its list is made now
                            waiting_for[event_id] = [on_committed]
                    results.append(_DUPLICATE)
                else:
                    # no list per detection: most have no repeat (tracked by the GC too)
                    waiting_for[event_id] = _NO_REPEATS
                    if link_evidence and detection.evidence is not None:
                        item = (centre_evidence_link(detection), on_committed, item[2],
                                item[3])
                    fresh.append(item)
                    results.append(_ACCEPTED)
        if duplicates:
            with self._counts_lock:
                self._counts["duplicates"] += duplicates
            _run_each(ack_now, "acknowledgement")
        if fresh:
            with self._idle:
                while self._pending >= self._queue_max:  # back-pressure
                    self._idle.wait()
                self._pending += len(fresh)
            self._queue.put(fresh)
            with self._counts_lock:
                self._counts["accepted"] += len(fresh)
        return results

    def _clock_check(self, items: list[Submission]
                     ) -> tuple[dict[int, SubmitResult] | None, list[float] | None]:
        """Live runtimes only (a ``skew_clock``): the detections observed more than
        ``stream.max_future_s`` after or ``stream.max_age_s`` before the centre received
        them, by index, refused as ``clock_skew`` and counted per source; and each
        item's observation time as a POSIX timestamp (the event-id filter takes it too:
        one conversion a detection). ``(None, None)`` without a ``skew_clock``. A bad
        clock must not reach the stream core (it would move the hot-spot hour, the event-id filter's
        horizon and the tickets it joins); replay keeps the file's own time."""
        if self._skew_clock is None:
            return None, None
        now = self._skew_clock().timestamp()
        latest = now + self.config.stream.max_future_s
        earliest = now - self.config.stream.age_limit_s
        skewed: dict[int, SubmitResult] | None = None
        stamps = [item[0].observed_at.timestamp() for item in items]
        for index, ts in enumerate(stamps):
            if earliest <= ts <= latest:
                continue
            detection = items[index][0]
            if skewed is None:
                skewed = {}
            ahead = ts > latest
            limit, setting = ((self.config.stream.max_future_s, "stream.max_future_s")
                              if ahead else
                              (self.config.stream.age_limit_s, "stream.max_age_s"))
            reason = (f"observed_at {detection.observed_at.isoformat()} is "
                      f"{abs(ts - now):.0f} s {'ahead of' if ahead else 'behind'} the "
                      f"centre's clock; expected at most {limit} s ({setting})")
            skewed[index] = SubmitResult(False, CLOCK_SKEW, reason)
            with self._counts_lock:
                self._rejected[CLOCK_SKEW] += 1
                self._clock_skew[(detection.station_id, detection.source_id)] += 1
            log.warning("refused a detection from %s/%s: %s", detection.station_id,
                        detection.source_id, reason)
        return skewed, stamps

    # -- the worker ------------------------------------------------------------------------
    def _write(self, outputs: list[Any], size: int, also: AlsoWrite | None = None) -> bool:
        """Apply ``outputs`` through the core's :class:`~gridwatch.pipeline.TicketWriter`
        (batched, poison split), retrying a failing store (disk full, database gone) with
        back-off until it works or the pipeline closes. While it retries, the queue fills
        and intake blocks: the broker holds what is not acknowledged. Returns whether
        everything was written; the outputs the store refused for good are noted for
        :meth:`_process` to dead-letter."""
        tickets = self._tickets

        def failed(exc: BaseException, delay: float | None) -> None:
            self._store_errors += 1
            if delay is None:
                log.error("closing with a batch of %d detections not written to the "
                          "ticket store (%s); they are not acknowledged, so the broker "
                          "re-delivers them at the next start", size, exc)
            else:
                log.error("writing a batch of %d detections to the ticket store failed; "
                          "retrying in %.1f s (intake waits meanwhile)", size, delay,
                          exc_info=exc)

        tries = 0

        def attempt() -> list[Ticket]:
            nonlocal tries
            tries += 1  # a retry resumes: what the last try wrote is not written again
            return tickets.write(outputs, also, resume=tries > 1)

        try:
            written, _ = until_stored(
                attempt, stop=self._closing,
                backoff=Backoff(self.retry_delay_s, max(self.retry_delay_s,
                                                        self.retry_max_s)),
                on_error=failed)
        finally:
            self._note_refusals()
        return written

    def _note_refusals(self) -> None:
        """The store refused these outputs for good: their detections are dead-lettered
        with the store's reason (by :meth:`_process`), not acknowledged as committed."""
        for refusal in self._tickets.take_refused():
            output = refusal.output
            if isinstance(output, HotspotFinding):
                # its detections were committed (counted) already; only the finding is lost
                with self._counts_lock:
                    self._refused["hotspot_finding"] += 1
                continue
            for event_id in output.new_event_ids:
                self._refusals[event_id] = refusal.reason

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[Any] = []
            while True:
                if item is _STOP or isinstance(item, _Flush):
                    if batch:
                        self._process(batch)
                    if not isinstance(item, _Flush):
                        self._shutdown_checkpoint()
                        return
                    # close the hot-spot windows here, in the only thread that writes
                    outputs = self._core.processor.flush()
                    self._write(outputs, 0, self._checkpoint_write())
                    item.done.set()
                    break
                batch.extend(item)
                if len(batch) >= self._batch_max:
                    self._process(batch)
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    self._process(batch)
                    break

    def _shutdown_checkpoint(self) -> None:
        """The shutdown flush: everything is committed already (batch by batch); the
        checkpoint folds the journal into one snapshot so the next start is quick. The
        open hour is *not* closed: the next run continues it, as an uninterrupted one."""
        if self._closing.is_set():
            return  # the store was failing: the journal in it is as far as it got
        try:
            also = self._checkpoint_write()
            if also is not None and isinstance(self.store, SqlTicketStore):
                with self.store.transaction() as conn:
                    also(conn)
        except Exception:
            log.exception("hot-spot checkpoint at shutdown failed; the next start "
                          "re-feeds the journal instead")

    def _process(self, batch: list[_Item]) -> None:
        detections = detections_in = [item[0] for item in batch]
        self._refusals.clear()
        try:
            hour_before = self._core.processor.hotspots.open_hour
            outputs = self._core.stream(detections)
            written = self._write(outputs, len(batch),
                                  self._persist(detections, hour_before))
        except Exception:
            # a bug on this batch's data (not a store that cannot write, which _write
            # retries): nothing of it was written; forget the ids so that the broker's
            # re-delivery (on_failed makes the ingest reconnect) is taken again
            log.exception("the pipeline failed on a batch of %d; not acknowledged",
                          len(batch))
            written = False
        if written:
            refusals = self._refusals
            if refusals:
                self._dead_letter(batch, refusals)
                batch = [item for item in batch if item[0].event_id not in refusals]
                detections = [item[0] for item in batch]
            self._processed += len(batch)
            with self._ids_lock:
                repeats: list[OnCommitted | None] = [
                    cb for d in detections for cb in self._waiting.pop(d.event_id, ())]
            _run_each([item[1] for item in batch] + repeats, "acknowledgement")
        else:
            with self._ids_lock:
                for d in detections:
                    # so that the re-delivery is processed, not dropped (the one filter:
                    # the stream core has none here)
                    self._ids.forget(d.event_id)
                    self._waiting.pop(d.event_id, None)
            self._failed += len(batch)
            _run_each([item[2] for item in batch], "failure")
        _run_each(list(self.batch_listeners), "batch listener")
        with self._idle:
            self._pending -= len(detections_in)
            self._idle.notify_all()  # drain() and submitters held by back-pressure

    def _dead_letter(self, batch: list[_Item], refusals: dict[str, str]) -> None:
        """Hand the refused detections of ``batch`` (and repeats waiting on them) to their
        ``on_refused`` (the ingest dead-letters and then acknowledges); counted under
        ``refused_by_code``. They stay known by event id: a re-sent copy is a duplicate."""
        callbacks: list[Callable[[], None] | None] = []
        for detection, _, _, on_refused in batch:
            reason = refusals.get(detection.event_id)
            if reason is None:
                continue
            with self._counts_lock:
                self._refused[STORE_REFUSED] += 1
            if on_refused is not None:
                callbacks.append(functools.partial(on_refused, STORE_REFUSED, reason))
            with self._ids_lock:
                # a repeat of a refused one is acknowledged: the first copy is dead-lettered
                callbacks.extend(self._waiting.pop(detection.event_id, ()))
        _run_each(callbacks, "dead-letter")

    # -- control -----------------------------------------------------------------------
    def drain(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything submitted so far has been processed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Close open hot-spot windows (end of a demo run), after everything submitted
        before; done by the worker, so it never races a batch. Returns whether it finished
        within ``timeout``."""
        request = _Flush()
        self._queue.put(request)
        return request.done.wait(timeout)

    def stats(self) -> dict[str, Any]:
        stream = self._core.processor.stats.as_dict()
        with self._counts_lock:
            return {
                "accepted": self._counts["accepted"],
                "duplicates": self._counts["duplicates"] + int(stream["duplicates"]),  # type: ignore[call-overload]
                "rejected": sum(self._rejected.values()),
                "rejected_by_reason": dict(sorted(self._rejected.items())),
                "processed": self._processed,
                "refused_by_code": dict(sorted(self._refused.items())),
                "clock_skew_by_source": {f"{station}/{source}": n for (station, source), n
                                         in sorted(self._clock_skew.items())},
                "failed": self._failed,
                "store_errors": self._store_errors,
                "queue_depth": self._pending,
                "stream": stream,
                "tickets_opened": self._tickets.opened,
            }

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (waiting up to ``timeout`` s for a failing store), then
        stop the worker."""
        if not self.drain(timeout):
            self._closing.set()  # a store still failing: give up retrying
        self._queue.put(_STOP)
        self._worker.join(timeout=10)


def centre_evidence_link(detection: Detection) -> Detection:
    """``detection`` with its snapshot URL replaced by the centre's ``/evidence/...`` link
    (unchanged when it has no snapshot or already links there)."""
    evidence = detection.evidence
    if evidence is None or not evidence.snapshot_url:
        return detection
    link = evidence_path(detection.event_id)
    if evidence.snapshot_url == link:
        return detection
    return detection.model_copy(
        update={"evidence": evidence.model_copy(update={"snapshot_url": link})})


def _run_each(callbacks: list[Callable[[], None] | None], what: str) -> None:
    for callback in callbacks:
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("%s callback failed", what)
