"""Assessment (考核): per department, how fast and how reliably work orders are handled.

Pure over records; :func:`monthly_report` reads them from a store. The records are each
ticket's audit entries (every dispatch, recall and reclassify starts a deadline *clock*
for the holder, recorded in the entry's ``clock``) and the cards (escalations) recorded
against the unit that held the ticket when its deadline passed. So a unit is judged on
the time it held each ticket, never on time the ticket spent in operator review or with
another unit, and its cards stay on its record when the ticket moves on.

Per department, over the tickets opened in the month (dismissed and merged tickets are
not work and are left out), one *spell* per clock the department held:

* ``tickets`` (spells held); ``accepted``; ``resolved``; ``resolved_on_time``
  (resolved by that clock's deadline)
* ``on_time_rate`` = resolved on time / (resolved + spells past their deadline
  unresolved, at ``as_of`` or when the ticket moved on); None when nothing was due yet
* ``time_to_accept_*`` / ``time_to_resolve_*``: mean, median and p90 from the spell's
  start (when the unit received the work), in seconds and as text (``"1 h 05 min"``)
* ``returned`` (return actions) and ``return_rate`` = returned / tickets
* ``reminders``, ``overdue`` (yellow cards), ``red_cards``: from the card records

and for operator review (the ``review`` section): tickets reviewed, review time (from
receipt or recall to confirm / dismiss / merge), reviewed within ``review_sla_s``, and the
review's own cards.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ticketing.audit import of_tickets as audit_of
from ticketing.cards import Card, cards_of
from ticketing.lifecycle import AuditEntry
from ticketing.models import Escalation, Ticket, TicketStatus, rfc3339
from ticketing.store import SqlTicketStore, TicketFilter

NOT_WORK = frozenset({TicketStatus.DISMISSED})


def human_duration(seconds: float | None) -> str | None:
    """``3900`` → ``"1 h 05 min"``; under an hour ``"4 min 10 s"``; days as ``"2 d 03 h"``.

    >>> human_duration(3900), human_duration(250), human_duration(2 * 86400 + 3 * 3600)
    ('1 h 05 min', '4 min 10 s', '2 d 03 h')
    """
    if seconds is None:
        return None
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


@dataclass(slots=True)
class Spell:
    """One deadline clock: who held the ticket, from when, by when, and what happened."""

    ticket_id: str
    seq: int
    phase: str  # "review" | "unit"
    department: str
    started_at: datetime
    due_at: datetime
    accepted_at: datetime | None = None
    resolved_at: datetime | None = None
    ended_at: datetime | None = None  # the ticket moved on (another clock started)
    ended_by: str | None = None  # the action that ended it
    returned: int = 0


def spells_of(ticket: Ticket, entries: list[AuditEntry]) -> list[Spell]:
    """The ticket's clocks from its audit entries (oldest first). A ticket written
    before clocks were recorded is one spell from ``opened_at`` to ``due_at``."""
    spells: list[Spell] = []
    current: Spell | None = None
    for entry in entries:
        clock = entry.data.get("clock")
        if isinstance(clock, Mapping):
            seq = int(clock["seq"])
            if current is not None and current.seq == seq:
                current.due_at = datetime.fromisoformat(str(clock["due_at"]))
                current.department = str(clock["department"])
            else:
                if current is not None:
                    current.ended_at, current.ended_by = entry.at, entry.action
                current = Spell(ticket_id=ticket.ticket_id, seq=seq,
                                phase=str(clock["phase"]),
                                department=str(clock["department"]),
                                started_at=datetime.fromisoformat(str(clock["started_at"])),
                                due_at=datetime.fromisoformat(str(clock["due_at"])))
                spells.append(current)
            continue
        if current is None:
            continue
        if entry.action == "accept" and current.accepted_at is None:
            current.accepted_at = entry.at
        elif entry.action == "resolve":
            current.resolved_at = entry.at
        elif entry.action == "reopen":
            current.resolved_at = None
        elif entry.action == "return":
            current.returned += 1
        elif entry.action in ("dismiss", "merge") and current.phase == "review":
            current.ended_at, current.ended_by = entry.at, entry.action
    if not spells:
        spells.append(Spell(ticket_id=ticket.ticket_id, seq=ticket.clock_seq,
                            phase=ticket.phase, department=ticket.department,
                            started_at=ticket.clock_start, due_at=ticket.due_at,
                            accepted_at=ticket.accepted_at, resolved_at=ticket.resolved_at))
    elif spells[-1].seq == ticket.clock_seq:
        # the desk may move the first clock with a late delivery's earlier start
        spells[-1].due_at = ticket.due_at
        spells[-1].started_at = ticket.clock_start
    return spells


@dataclass(slots=True)
class DepartmentFigures:
    department: str
    tickets: int = 0
    accepted: int = 0
    resolved: int = 0
    resolved_on_time: int = 0
    due_or_resolved: int = 0
    on_time_rate: float | None = None
    returned: int = 0
    return_rate: float | None = None
    reminders: int = 0
    overdue: int = 0  # yellow cards
    red_cards: int = 0
    time_to_accept_mean_s: float | None = None
    time_to_accept_median_s: float | None = None
    time_to_accept_p90_s: float | None = None
    time_to_resolve_mean_s: float | None = None
    time_to_resolve_median_s: float | None = None
    time_to_resolve_p90_s: float | None = None
    time_to_accept_mean: str | None = None
    time_to_accept_median: str | None = None
    time_to_accept_p90: str | None = None
    time_to_resolve_mean: str | None = None
    time_to_resolve_median: str | None = None
    time_to_resolve_p90: str | None = None


@dataclass(slots=True)
class ReviewFigures:
    """Operator review, judged on its own target (``ticketing.review_sla_s``)."""

    review_sla_s: int
    reviewed: int = 0
    reviewed_in_time: int = 0
    waiting: int = 0  # still in review at ``as_of``
    in_time_rate: float | None = None
    reminders: int = 0
    overdue: int = 0  # yellow cards
    red_cards: int = 0
    time_to_review_mean_s: float | None = None
    time_to_review_median_s: float | None = None
    time_to_review_p90_s: float | None = None
    time_to_review_mean: str | None = None
    time_to_review_median: str | None = None
    time_to_review_p90: str | None = None
    departments_waiting: dict[str, int] = field(default_factory=dict)


CSV_COLUMNS = list(DepartmentFigures.__dataclass_fields__)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``"2024-05"`` → [2024-05-01, 2024-06-01) in UTC.

    Raises:
        ValueError: not ``YYYY-MM``.
    """
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"expected a month as YYYY-MM, got {month!r}") from None
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else \
        start.replace(month=start.month + 1)
    return start, end


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _summarise(row: Any, prefix: str, values: list[float] | None) -> None:
    if not values:
        return
    for stat, value in (("mean", statistics.fmean(values)),
                        ("median", statistics.median(values)), ("p90", _p90(values))):
        setattr(row, f"{prefix}_{stat}_s", round(value, 1))
        setattr(row, f"{prefix}_{stat}", human_duration(value))


def _count_card(row: DepartmentFigures | ReviewFigures, stage: Escalation) -> None:
    if stage is Escalation.DUE_SOON:
        row.reminders += 1
    elif stage is Escalation.YELLOW:
        row.overdue += 1
    elif stage is Escalation.RED:
        row.red_cards += 1


def assess(spells: Iterable[Spell], cards: Iterable[Card], *, as_of: datetime,
             review_sla_s: int) -> tuple[list[DepartmentFigures], ReviewFigures]:
    """Figures per department (sorted by department) and for operator review."""
    rows: dict[str, DepartmentFigures] = {}
    accept: dict[str, list[float]] = {}
    resolve: dict[str, list[float]] = {}
    review = ReviewFigures(review_sla_s=review_sla_s)
    review_times: list[float] = []
    for s in spells:
        if s.phase == "review":
            if s.ended_at is None:
                review.waiting += 1
                review.departments_waiting[s.department] = \
                    review.departments_waiting.get(s.department, 0) + 1
                continue
            review.reviewed += 1
            review.reviewed_in_time += s.ended_at <= s.due_at
            review_times.append((s.ended_at - s.started_at).total_seconds())
            continue
        row = rows.setdefault(s.department, DepartmentFigures(s.department))
        row.tickets += 1
        row.returned += s.returned
        if s.accepted_at is not None:
            row.accepted += 1
            accept.setdefault(s.department, []).append(
                (s.accepted_at - s.started_at).total_seconds())
        if s.resolved_at is not None:
            row.resolved += 1
            row.due_or_resolved += 1
            row.resolved_on_time += s.resolved_at <= s.due_at
            resolve.setdefault(s.department, []).append(
                (s.resolved_at - s.started_at).total_seconds())
        elif s.due_at <= (s.ended_at or as_of):
            row.due_or_resolved += 1  # its deadline passed while this unit held it
    for card in cards:
        if card.phase == "review":
            _count_card(review, card.stage)
        else:
            _count_card(rows.setdefault(card.department,
                                        DepartmentFigures(card.department)), card.stage)
    for department, row in rows.items():
        if row.due_or_resolved:
            row.on_time_rate = round(row.resolved_on_time / row.due_or_resolved, 4)
        if row.tickets:
            row.return_rate = round(row.returned / row.tickets, 4)
        _summarise(row, "time_to_accept", accept.get(department))
        _summarise(row, "time_to_resolve", resolve.get(department))
    if review.reviewed:
        review.in_time_rate = round(review.reviewed_in_time / review.reviewed, 4)
    _summarise(review, "time_to_review", review_times)
    return [rows[d] for d in sorted(rows)], review


def monthly_report(*, store: SqlTicketStore, month: str, as_of: datetime,
                   review_sla_s: int, department: str | None = None) -> dict[str, Any]:
    """The month's figures as a JSON-ready dict (optionally one department's row only;
    a department then sees no review section)."""
    start, end = month_bounds(month)
    flt = TicketFilter(opened_from=start, opened_to=end)
    tickets: list[Ticket] = []
    while batch := store.list(flt, limit=1000, offset=len(tickets)):
        tickets.extend(batch)
    work = [t for t in tickets if t.status not in NOT_WORK and t.merged_into is None]
    ids = [t.ticket_id for t in work]
    with store.connection() as conn:
        entries = audit_of(conn, ids)
        cards = cards_of(conn, ids)
    spells = [s for t in work for s in spells_of(t, entries[t.ticket_id])]
    figures, review = assess(spells, cards, as_of=as_of, review_sla_s=review_sla_s)
    report: dict[str, Any] = {"month": month, "from": rfc3339(start), "to": rfc3339(end),
                              "as_of": rfc3339(as_of)}
    if department is not None:
        figures = [f for f in figures if f.department == department]
    else:
        report["review"] = asdict(review)
    report["departments"] = [asdict(f) for f in figures]
    return report


def report_csv(report: dict[str, Any]) -> str:
    """The report's department rows as CSV (header first; empty cells for None);
    durations both in seconds (``*_s``) and as ``"1 h 05 min"``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["month", *CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in report["departments"]:
        writer.writerow({"month": report["month"],
                         **{k: "" if v is None else v for k, v in row.items()}})
    return out.getvalue()
