"""Filters and sorts: the SQL store and the replay's memory store select and order the
same tickets (SQLite and PostgreSQL), sort keys are parsed with clear errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.ticketing.builders import T0, make_ticket
from tests.ticketing.test_api_list import _seed
from ticketing.queries import Sort, TicketFilter, parse_sort
from ticketing.store import MemoryTicketStore

FILTERS = [
    TicketFilter(),
    TicketFilter(status=("dispatched", "accepted")),
    TicketFilter(status="closed"),
    TicketFilter(status=()),  # any of no values: nothing
    TicketFilter(kind=("door_forced", "odd_kind"), open=True),
    TicketFilter(priority=("P1",), escalation=("yellow", "red")),
    TicketFilter(open=False),
    TicketFilter(overdue=True, now=T0 + timedelta(minutes=25)),
    TicketFilter(overdue=False, now=T0 + timedelta(minutes=25)),
    TicketFilter(opened_from=T0 + timedelta(minutes=2), opened_to=T0 + timedelta(minutes=5)),
    TicketFilter(town=("TownA",), village=("V0", "V1"), district="D1"),
]
SORTS = ["opened", "-opened", "due", "-due", "priority,-updated", "-priority,due"]
CASES = ([(f, "-due") for f in FILTERS] + [(TicketFilter(), s) for s in SORTS]
         + [(FILTERS[6], "priority,-updated")])


@pytest.mark.parametrize(("flt", "sort"), CASES, ids=repr)
def test_sql_and_memory_stores_agree(store: Any, flt: TicketFilter, sort: str) -> None:
    memory = MemoryTicketStore()
    for ticket in _seed(store):
        memory.save(ticket)
    order = parse_sort(sort)
    sql = [t.ticket_id for t in store.list(flt, sort=order)]
    assert sql == [t.ticket_id for t in memory.list(flt, sort=order)]
    assert store.count(flt) == memory.count(flt) == len(sql)
    page, total = store.page_public(flt, limit=3, offset=1, sort=order)
    assert [t["ticket_id"] for t in page] == sql[1:4] and total == len(sql)


def test_descending_priority_orders_longer_codes_first() -> None:
    memory = MemoryTicketStore()
    made = [make_ticket(priority=p) for p in ("P1", "P10", "P2")]
    for t in made:
        memory.save(t)
    assert [t.priority for t in memory.list(sort=parse_sort("-priority"))] == [
        "P2", "P10", "P1"]
    assert [t.priority for t in memory.list(sort=parse_sort("priority"))] == [
        "P1", "P10", "P2"]


@pytest.mark.parametrize(("text", "expected"), [
    ("due", Sort((("due", False),))),
    ("-due", Sort((("due", True),))),
    ("+updated,-priority", Sort((("updated", False), ("priority", True)))),
    ("deadline", ValueError("unknown sort key 'deadline'; expected one or more of opened, "
                            "-opened, due, -due, priority, -priority, updated, -updated (comma "
                            "separated)")),
    ("due,due", ValueError("sort key 'due' given twice")),
])
def test_parse_sort(text: str, expected: Sort | ValueError) -> None:
    if isinstance(expected, ValueError):
        with pytest.raises(ValueError) as raised:
            parse_sort(text)
        assert str(raised.value) == str(expected)
    else:
        assert parse_sort(text) == expected


def test_overdue_needs_a_time() -> None:
    with pytest.raises(ValueError, match="expected now= with overdue="):
        TicketFilter(overdue=True)
