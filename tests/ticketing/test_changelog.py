"""The change log behind resumable live updates: one row per committed change, numbered
in commit order by every writer (two replicas at once), pruned by age and size with the
newest kept (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from tests.ticketing.builders import RULES, T0, make_ticket
from ticketing.changelog import LogWindow
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.models import TicketStatus


def test_every_write_is_logged_with_its_message(store: Any) -> None:
    assert store.change_window() == LogWindow(None, None)
    assert store.change_version() == 0
    ticket = make_ticket(status=TicketStatus.DISPATCHED)
    store.save(ticket)
    store.modify(ticket.ticket_id, lambda t, _load: apply_action(
        t, ActionRequest(Action.ACCEPT), actor="fire", at=T0 + timedelta(minutes=1),
        rules=RULES),
        expected_version=1)
    logged = store.changes_since(0)
    assert [(m["seq"], m["type"], m["status"], m["version"]) for m in logged] == [
        (1, "ticket.created", "dispatched", 1), (2, "ticket.accept", "accepted", 2)]
    assert logged[1] == {
        "id": f"{ticket.ticket_id}:2:accept", "seq": 2, "type": "ticket.accept",
        "ticket_id": ticket.ticket_id, "department": "fire_rescue", "status": "accepted",
        "escalation": "none", "version": 2, "at": "2026-05-04T06:01:00Z"}
    assert store.change_version() == 2
    assert store.changes_since(1, limit=5) == logged[1:]


def test_listeners_get_the_logged_seq(store: Any) -> None:
    seen: list[int | None] = []
    store.add_listener(lambda change: seen.append(change.seq))
    store.save_many([(make_ticket(), []), (make_ticket(), [])])
    store.save(make_ticket())
    assert seen == [1, 2, 3]


def test_two_replicas_writing_at_once_number_changes_without_gaps(store_factory: Any
                                                                  ) -> None:
    stores = [store_factory(), store_factory()]
    errors: list[BaseException] = []

    def write(store: Any) -> None:
        try:
            for _ in range(15):
                store.save(make_ticket())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    logged = stores[0].changes_since(0, limit=100)
    assert [m["seq"] for m in logged] == list(range(1, 31))
    assert len({m["ticket_id"] for m in logged}) == 30


def test_prune_by_size_and_age_keeps_the_newest(store: Any) -> None:
    for minutes in range(5):  # changes at T0, +1, ..., +4 min
        store.save(make_ticket(opened_at=timedelta(minutes=minutes)))
    assert store.prune_changes(now=T0 + timedelta(minutes=4), retention_s=3600,
                               max_rows=3) == 2
    assert store.change_window() == LogWindow(3, 5)
    # older than 90 s before +4 min: the changes at +2 (and before)
    assert store.prune_changes(now=T0 + timedelta(minutes=4), retention_s=90,
                               max_rows=100) == 1
    assert store.change_window() == LogWindow(4, 5)
    # everything is old: the newest stays, so numbering goes on
    assert store.prune_changes(now=T0 + timedelta(days=9), retention_s=1, max_rows=1) == 1
    assert store.change_window() == LogWindow(5, 5)
    store.save(make_ticket())
    assert store.change_window() == LogWindow(5, 6)


@pytest.mark.parametrize(("window", "after", "expected"), [
    (LogWindow(None, None), 0, True),
    (LogWindow(None, None), 3, False),
    (LogWindow(3, 9), 2, True),  # saw 2: 3.. are all here
    (LogWindow(3, 9), 1, False),  # 2 was pruned
    (LogWindow(3, 9), 9, True),
    (LogWindow(3, 9), 10, False),  # from the future (another database)
])
def test_can_resume(window: LogWindow, after: int, expected: bool) -> None:
    assert window.can_resume(after) is expected
