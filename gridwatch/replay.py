"""Replay: a detections file in, tickets out. The batch runtime and the test harness.

Deterministic: no wall clock, no services, sorted output; the same input gives
byte-identical files. A thin adapter over the runtime core (:mod:`gridwatch.pipeline`):
lines are validated and looked up in batches (one STRtree query per batch), then fed one
by one, in input order, through the same stream and ticketing core as the services.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from geo.grid import Grid
from gridwatch.config import GridWatchConfig
from gridwatch.errors import UserError
from gridwatch.pipeline import Pipeline as Pipeline  # its home: gridwatch.pipeline
from gridwatch.pipeline import read_lines
from stream.processor import StreamStats
from ticketing.models import Ticket
from ticketing.store import MemoryTicketStore


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
    rejected = summary.rejected
    for batch in read_lines(lines):
        summary.read += batch.read
        for number, exc, stripped in batch.refused:
            rejected[exc.code.value] += 1
            if keep_rejects:
                raw = (stripped.decode("utf-8", errors="replace")
                       if isinstance(stripped, bytes) else stripped)
                rejects.append(Reject(number, exc.code.value, exc.reason, raw))
        pipeline.feed(batch.valid)
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
