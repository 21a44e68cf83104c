"""Replay: a detections file in, tickets out. The batch runtime and the test harness.

Deterministic: no wall clock, no services, sorted output; the same input gives
byte-identical files. Lines are validated and looked up in batches (one STRtree query per
batch), then fed one by one, in input order, through the same stream and ticketing core
as the services.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from detectors.schema import Detection, DetectionRejected, parse_detection
from geo.grid import Grid
from gridwatch.config import GridWatchConfig
from gridwatch.errors import UserError
from stream.hotspot import HotspotEngine
from stream.processor import StreamOutput, StreamProcessor, StreamStats
from ticketing.desk import TicketDesk
from ticketing.idempotent import IdempotentDesk
from ticketing.models import Ticket
from ticketing.store import MemoryTicketStore, TicketStore

BATCH_LINES = 1024  # small enough for a batch's objects to stay in cache
_LON = attrgetter("lon")
_LAT = attrgetter("lat")


@dataclass(slots=True)
class Reject:
    line: int
    code: str
    reason: str
    raw: str

    def to_json(self) -> str:
        return json.dumps({"line": self.line, "reason": self.reason, "code": self.code,
                           "raw": self.raw}, ensure_ascii=False, sort_keys=True)


@dataclass(slots=True)
class ReplaySummary:
    """What a replay read, refused and produced; the stream stage's own counters are
    :class:`~stream.processor.StreamStats`."""

    read: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    stream: StreamStats = field(default_factory=StreamStats)
    tickets: int = 0

    def as_dict(self) -> dict[str, Any]:
        counts = self.stream.as_dict()
        del counts["accepted"], counts["by_kind"]
        return {
            "read": self.read,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            **counts,
            "tickets": self.tickets,
        }

    def render(self) -> str:
        d = self.as_dict()
        reasons = ", ".join(f"{k} {v}" for k, v in d["rejected_by_reason"].items())
        rows = [
            ("read", d["read"]),
            ("rejected", f"{d['rejected']}" + (f"  ({reasons})" if reasons else "")),
            ("duplicates", d["duplicates"]),
            ("absorbed (same track/source)", d["absorbed"]),
            ("out of area", d["out_of_area"]),
            ("self-tests", d["self_tests"]),
            ("late (past tolerance)", d["late"]),
            ("incidents", d["incidents"]),
            ("occurrences (hot-spot kinds)", d["occurrences"]),
            ("hot spots", f"{d['hotspots']}  ({d['hotspot_reports']} hourly reports)"),
            ("tickets", d["tickets"]),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(["replay summary"] + [f"  {k:<{width}}  {v}" for k, v in rows])


@dataclass(slots=True)
class ReplayResult:
    tickets: list[Ticket]
    rejects: list[Reject]
    summary: ReplaySummary

    def ticket_dicts(self) -> list[dict[str, Any]]:
        return [t.to_public() for t in self.tickets]


class Pipeline:
    """Stream + desk over one store: what replay and the embedded service both run."""

    def __init__(self, config: GridWatchConfig, grid: Grid, store: TicketStore, *,
                 received: Callable[[], datetime] | None = None,
                 idempotent: bool = False) -> None:
        self.config = config
        self.grid = grid
        self.store = store
        # the cell ids by index, and None last: what -1 (out of area) picks
        self._cell_ids: list[str | None] = [*(c.cell_id for c in grid.cells), None]
        self.processor = StreamProcessor(config.stream, config.policies,
                                         HotspotEngine(config.hotspot, grid))
        # received: when the centre got the work (live: the wall clock); None (replay):
        # deadline clocks start at event time, so replay stays deterministic
        self.desk = TicketDesk(policies=config.policies, settings=config.ticketing,
                               grid=grid, store=store, received=received)
        # idempotent (live runtimes): outputs repeating what the store holds (a detection
        # re-sent after its id was forgotten) are absorbed (ticketing.idempotent)
        self.idempotent = IdempotentDesk(self.desk, only_reopened=True) if idempotent \
            else None
        self._apply_one: Callable[[StreamOutput], object] = (
            self.desk.apply if self.idempotent is None else self.idempotent.apply)

    def cells_for(self, detections: list[Detection]) -> list[str | None]:
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
        apply = self._apply_one
        for output in outputs:
            apply(output)

    def feed(self, detections: list[Detection]) -> None:
        self.apply(self.stream(detections))

    def finish(self) -> None:
        self.apply(self.processor.flush())


def _batches(lines: Iterable[bytes | str]) -> Iterator[tuple[int, list[bytes | str]]]:
    """Lists of up to ``BATCH_LINES`` lines, each with the number of its first line."""
    it = iter(lines)
    first = 1
    while batch := list(islice(it, BATCH_LINES)):
        yield first, batch
        first += len(batch)


def replay_lines(lines: Iterable[bytes | str], grid: Grid, config: GridWatchConfig,
                 *, keep_rejects: bool = True) -> ReplayResult:
    """Replay detection JSONL lines (bytes or str, one object each) into tickets."""
    # millions of small, acyclic objects: the cyclic GC would rescan them over and over
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _replay(lines, grid, config, keep_rejects=keep_rejects)
    finally:
        if gc_was_enabled:
            gc.enable()


def _replay(lines: Iterable[bytes | str], grid: Grid, config: GridWatchConfig,
            *, keep_rejects: bool) -> ReplayResult:
    summary = ReplaySummary()
    rejects: list[Reject] = []
    store = MemoryTicketStore()
    pipeline = Pipeline(config, grid, store)
    for first, batch in _batches(lines):
        valid: list[Detection] = []
        for number, line in enumerate(batch, first):
            # JSON allows the line's own newline around the object: one copy fewer per
            # line. Refused lines are parsed again stripped, for the same reasons and
            # positions as before (and to tell blank lines, which are not records).
            try:
                valid.append(parse_detection(line))
                summary.read += 1
                continue
            except DetectionRejected:
                pass
            stripped = line.strip()
            if not stripped:
                continue  # blank lines (a trailing newline) are not records
            summary.read += 1
            try:
                valid.append(parse_detection(stripped))
            except DetectionRejected as exc:
                summary.rejected[exc.code.value] += 1
                if keep_rejects:
                    raw = (stripped.decode("utf-8", errors="replace")
                           if isinstance(stripped, bytes) else stripped)
                    rejects.append(Reject(number, exc.code.value, exc.reason, raw))
        pipeline.feed(valid)
    pipeline.finish()
    summary.stream = pipeline.processor.stats
    tickets = list(store.all())
    summary.tickets = len(tickets)
    return ReplayResult(tickets=tickets, rejects=rejects, summary=summary)


def ticket_line(ticket: Ticket) -> str:
    return json.dumps(ticket.to_public(), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))


def write_atomically(path: Path, lines: Iterable[str]) -> None:
    """Write all lines or nothing: a temp file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            for line in lines:
                out.write(line)
                out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_input(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot read detections: {exc.strerror or exc}") from None


def run_replay(*, detections: Path, grid: Grid, config: GridWatchConfig,
               tickets_out: Path, rejects_out: Path | None) -> ReplayResult:
    """The ``gridwatch replay`` command's work, minus argument parsing and printing."""
    with open_input(detections) as handle:
        result = replay_lines(handle, grid, config, keep_rejects=rejects_out is not None)
    try:
        write_atomically(tickets_out, (ticket_line(t) for t in result.tickets))
        if rejects_out is not None:
            write_atomically(rejects_out, (r.to_json() for r in result.rejects))
    except OSError as exc:
        raise UserError(f"cannot write output: {exc.filename or ''}: "
                        f"{exc.strerror or exc}") from None
    return result
