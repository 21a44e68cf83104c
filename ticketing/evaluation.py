"""Evaluation (考核): per department, how fast and how reliably work orders are handled.

Pure over tickets and audit entries; :func:`monthly_report` reads them from a store.

Per department, over the tickets opened in the month and currently assigned to it
(dismissed and merged tickets are not work and are left out):

* ``tickets``; ``accepted``; ``resolved``; ``resolved_on_time`` (``resolved_at <= due_at``)
* ``on_time_rate`` = resolved on time / (resolved + still unresolved past the deadline at
  ``as_of``); None when nothing was due yet
* ``time_to_accept_s`` / ``time_to_resolve_s``: mean, median and p90 from ``opened_at``
* ``overdue``: tickets that got a yellow card; ``red_cards``: those that got a red card
* ``returned``: times the department returned a ticket (from the audit log, in the month)
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ticketing.lifecycle import AuditEntry
from ticketing.models import Escalation, Ticket, TicketStatus, rfc3339
from ticketing.store import SqlTicketStore, TicketFilter

NOT_WORK = frozenset({TicketStatus.DISMISSED})
RESOLVED = frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED})


@dataclass(slots=True)
class DepartmentFigures:
    department: str
    tickets: int = 0
    accepted: int = 0
    resolved: int = 0
    resolved_on_time: int = 0
    due_or_resolved: int = 0
    on_time_rate: float | None = None
    time_to_accept_mean_s: float | None = None
    time_to_accept_median_s: float | None = None
    time_to_accept_p90_s: float | None = None
    time_to_resolve_mean_s: float | None = None
    time_to_resolve_median_s: float | None = None
    time_to_resolve_p90_s: float | None = None
    overdue: int = 0
    red_cards: int = 0
    returned: int = 0


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


def evaluate(tickets: Iterable[Ticket], returns: Iterable[AuditEntry], *,
             as_of: datetime) -> list[DepartmentFigures]:
    """Figures per department, sorted by department."""
    rows: dict[str, DepartmentFigures] = {}
    accept: dict[str, list[float]] = {}
    resolve: dict[str, list[float]] = {}
    for t in tickets:
        if t.status in NOT_WORK or t.merged_into is not None:
            continue
        row = rows.setdefault(t.department, DepartmentFigures(t.department))
        row.tickets += 1
        if t.accepted_at is not None:
            row.accepted += 1
            accept.setdefault(t.department, []).append(
                (t.accepted_at - t.opened_at).total_seconds())
        if t.resolved_at is not None and t.status in RESOLVED:
            row.resolved += 1
            row.due_or_resolved += 1
            row.resolved_on_time += t.resolved_at <= t.due_at
            resolve.setdefault(t.department, []).append(
                (t.resolved_at - t.opened_at).total_seconds())
        elif t.due_at <= as_of:
            row.due_or_resolved += 1
        row.overdue += t.escalation.rank >= Escalation.YELLOW.rank
        row.red_cards += t.escalation is Escalation.RED
    for entry in returns:
        department = str(entry.data.get("department", ""))
        if department:
            rows.setdefault(department, DepartmentFigures(department)).returned += 1
    for department, row in rows.items():
        if row.due_or_resolved:
            row.on_time_rate = round(row.resolved_on_time / row.due_or_resolved, 4)
        for prefix, values in (("time_to_accept", accept.get(department)),
                               ("time_to_resolve", resolve.get(department))):
            if values:
                setattr(row, f"{prefix}_mean_s", round(statistics.fmean(values), 1))
                setattr(row, f"{prefix}_median_s", round(statistics.median(values), 1))
                setattr(row, f"{prefix}_p90_s", round(_p90(values), 1))
    return [rows[d] for d in sorted(rows)]


def monthly_report(*, store: SqlTicketStore, month: str, as_of: datetime,
                   department: str | None = None) -> dict[str, Any]:
    """The month's figures as a JSON-ready dict (optionally one department's only)."""
    start, end = month_bounds(month)
    flt = TicketFilter(opened_from=start, opened_to=end, department=department)
    tickets: list[Ticket] = []
    while batch := store.list(flt, limit=1000, offset=len(tickets)):
        tickets.extend(batch)
    returns = store.audit_between(start=start, end=end, action="return")
    if department is not None:
        returns = [e for e in returns if e.data.get("department") == department]
    figures = evaluate(tickets, returns, as_of=as_of)
    return {"month": month, "from": rfc3339(start), "to": rfc3339(end),
            "as_of": rfc3339(as_of), "departments": [asdict(f) for f in figures]}


def report_csv(report: dict[str, Any]) -> str:
    """The report's department rows as CSV (header first; empty cells for None)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["month", *CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in report["departments"]:
        writer.writerow({"month": report["month"],
                         **{k: "" if v is None else v for k, v in row.items()}})
    return out.getvalue()
