"""Which tickets a list asks for and in what order: :class:`TicketFilter`, :class:`Sort`,
and their SQL (``WHERE`` / ``ORDER BY``) and in-memory forms, so the SQL store and the
replay's memory store answer a filter the same way.

>>> flt = TicketFilter(status=("dispatched", "accepted"), town="TownA")
>>> where_sql(flt)[0]
' WHERE status IN (:status_0, :status_1) AND town = :town_0'
>>> order_sql(parse_sort("-due"))
'ORDER BY due_at DESC, ticket_id'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ticketing.models import OPEN_STATUSES, Ticket

Values = str | tuple[str, ...] | None
"""One value, several (any of them matches) or None (no condition)."""

# filter field -> ticket column (the same names)
FILTER_COLUMNS = ("status", "kind", "cell_id", "district", "town", "village", "department",
                  "review", "escalation", "origin", "priority")


@dataclass(frozen=True, slots=True)
class TicketFilter:
    """Conditions combined with AND; a tuple of values matches any of them (IN).

    ``open``: True keeps the open statuses (pending review, dispatched, accepted,
    returned, reopened), False the others. ``overdue``: True keeps open tickets whose
    ``due_at`` is before ``now`` (the caller's clock), False every other ticket.
    """

    status: Values = None
    kind: Values = None
    cell_id: Values = None
    district: Values = None
    town: Values = None
    village: Values = None
    department: Values = None
    review: Values = None
    opened_from: datetime | None = None
    opened_to: datetime | None = None
    escalation: Values = None
    origin: Values = None
    priority: Values = None
    open: bool | None = None
    overdue: bool | None = None
    now: datetime | None = None  # what ``overdue`` is judged at

    def __post_init__(self) -> None:
        if self.overdue is not None and self.now is None:
            raise ValueError("expected now= with overdue= (overdue is judged at a time)")


ANY_TICKET = TicketFilter()
"""No condition."""


def _values(value: Values) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


# -- sort ---------------------------------------------------------------------------------

SORT_KEYS: dict[str, str] = {"opened": "opened_at", "due": "due_at",
                             "priority": "priority", "updated": "updated_at"}
"""``sort=`` key -> column. ``priority`` ascending is P1 (most urgent) first."""

SORT_PATTERN = r"^[+-]?[a-z_]+(,[+-]?[a-z_]+)*$"
"""The shape of a ``sort=`` value (the keys are checked by :func:`parse_sort`)."""


@dataclass(frozen=True, slots=True)
class Sort:
    """Sort keys in order; ``(key, descending)``. Ties end with ``ticket_id`` ascending,
    so pages are stable."""

    keys: tuple[tuple[str, bool], ...] = (("opened", False),)


DEFAULT_SORT = Sort()


def parse_sort(text: str) -> Sort:
    """``"-due"``, ``"priority,-opened"`` -> :class:`Sort`; ``ValueError`` naming the
    allowed keys otherwise.

    >>> parse_sort("priority,-due").keys
    (('priority', False), ('due', True))
    """
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        part = part.strip()
        descending = part.startswith("-")
        name = part[1:] if descending or part.startswith("+") else part
        if name not in SORT_KEYS:
            allowed = ", ".join(f"{k}, -{k}" for k in SORT_KEYS)
            raise ValueError(f"unknown sort key {part!r}; expected one or more of "
                             f"{allowed} (comma separated)")
        if any(k == name for k, _ in keys):
            raise ValueError(f"sort key {name!r} given twice")
        keys.append((name, descending))
    return Sort(tuple(keys))


def order_sql(sort: Sort) -> str:
    columns = [f"{SORT_KEYS[k]}{' DESC' if desc else ''}" for k, desc in sort.keys]
    return "ORDER BY " + ", ".join([*columns, "ticket_id"])


def _stored_time(value: datetime) -> str:
    # the SQL store's fixed-width UTC spelling (ticketing.engine.sortable)
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def where_sql(f: TicketFilter, *, time: Callable[[datetime], str] = _stored_time
              ) -> tuple[str, dict[str, object]]:
    """`` WHERE ...`` (or ``""``) and its bound parameters."""
    clauses: list[str] = []
    params: dict[str, object] = {}
    for column in FILTER_COLUMNS:
        values = _values(getattr(f, column))
        if values is None:
            continue
        if not values:
            clauses.append("1 = 0")  # any of no values: nothing matches
            continue
        names = [f"{column}_{i}" for i in range(len(values))]
        params.update(zip(names, values, strict=True))
        clauses.append(f"{column} = :{names[0]}" if len(names) == 1
                       else f"{column} IN ({', '.join(':' + n for n in names)})")
    open_list = ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATUSES, key=lambda s: s.value))
    if f.open is not None:
        clauses.append(f"status {'' if f.open else 'NOT '}IN ({open_list})")
    if f.overdue is not None and f.now is not None:
        clauses.append(f"{'' if f.overdue else 'NOT '}"
                       f"(status IN ({open_list}) AND due_at < :now)")
        params["now"] = time(f.now)
    if f.opened_from is not None:
        clauses.append("opened_at >= :opened_from")
        params["opened_from"] = time(f.opened_from)
    if f.opened_to is not None:
        clauses.append("opened_at < :opened_to")
        params["opened_to"] = time(f.opened_to)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


# -- in memory ----------------------------------------------------------------------------

_FIELDS: dict[str, Callable[[Ticket], str | None]] = {
    "status": lambda t: t.status.value, "kind": lambda t: t.kind,
    "cell_id": lambda t: t.cell_id, "district": lambda t: t.district,
    "town": lambda t: t.town, "village": lambda t: t.village,
    "department": lambda t: t.department, "review": lambda t: t.review.value,
    "escalation": lambda t: t.escalation.value, "origin": lambda t: t.origin.value,
    "priority": lambda t: t.priority}


def matches(t: Ticket, f: TicketFilter) -> bool:
    """What :func:`where_sql` selects, for a ticket in memory."""
    for column in FILTER_COLUMNS:
        values = _values(getattr(f, column))
        if values is not None and _FIELDS[column](t) not in values:
            return False
    if f.open is not None and t.is_open is not f.open:
        return False
    if f.overdue is not None and f.now is not None and (
            t.is_open and t.due_at < f.now) is not f.overdue:
        return False
    if f.opened_from is not None and t.opened_at < f.opened_from:
        return False
    return f.opened_to is None or t.opened_at < f.opened_to


def sort_key(sort: Sort) -> Callable[[Ticket], tuple[Any, ...]]:
    """A key for ``sorted`` giving :func:`order_sql`'s order (descending keys negate the
    time / reverse the priority rank)."""

    def key(t: Ticket) -> tuple[Any, ...]:
        out: list[Any] = []
        for name, desc in sort.keys:
            if name == "priority":
                value: Any = (*(-ord(c) for c in t.priority), 1) if desc else t.priority
            else:
                when = getattr(t, SORT_KEYS[name])
                seconds = (when - _EPOCH) / timedelta(microseconds=1)
                value = -seconds if desc else seconds
            out.append(value)
        out.append(t.ticket_id)
        return tuple(out)

    return key


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
