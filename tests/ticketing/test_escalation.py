"""ticketing/escalation.py: which steps are due, and two workers on one database (SQLite
and PostgreSQL) escalate each overdue ticket exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest

from tests.ticketing.builders import T0, make_ticket
from ticketing.config import EscalationSettings
from ticketing.escalation import Escalator, due_stages
from ticketing.models import Escalation, TicketStatus

E = Escalation
M = timedelta(minutes=1)  # tickets below are due at T0 + 30 min, red at T0 + 60 min


@pytest.mark.parametrize(("now", "already", "status", "expected"), [
    (T0, E.NONE, TicketStatus.DISPATCHED, []),
    (T0 + 20 * M, E.NONE, TicketStatus.DISPATCHED, [E.DUE_SOON]),
    (T0 + 20 * M, E.DUE_SOON, TicketStatus.DISPATCHED, []),
    (T0 + 30 * M, E.NONE, TicketStatus.ACCEPTED, [E.YELLOW]),
    (T0 + 30 * M, E.DUE_SOON, TicketStatus.ACCEPTED, [E.YELLOW]),
    (T0 + 59 * M, E.YELLOW, TicketStatus.ACCEPTED, []),
    (T0 + 60 * M, E.YELLOW, TicketStatus.ACCEPTED, [E.RED]),
    (T0 + 90 * M, E.NONE, TicketStatus.PENDING_REVIEW, [E.YELLOW, E.RED]),
    (T0 + 90 * M, E.RED, TicketStatus.RETURNED, []),
    (T0 + 90 * M, E.NONE, TicketStatus.RESOLVED, []),
    (T0 + 90 * M, E.NONE, TicketStatus.DISMISSED, []),
])
def test_due_stages(now, already, status, expected) -> None:  # type: ignore[no-untyped-def]
    ticket = make_ticket(status=status, escalation=already)
    assert due_stages(ticket, now=now, remind_before_s=600) == expected


def test_one_worker_walks_the_stages_and_audits_them(store) -> None:  # type: ignore[no-untyped-def]
    ticket = make_ticket()
    store.save(ticket)
    worker = Escalator(store=store, settings=EscalationSettings(remind_before_s=600))
    stages = [[r.stage for r in worker.run_once(now=T0 + m * M)] for m in (10, 21, 25, 31,
                                                                          45, 61, 120)]
    assert stages == [[], [E.DUE_SOON], [], [E.YELLOW], [], [E.RED], []]
    entries = [e for e in store.audit(ticket.ticket_id) if e.action == "escalate"]
    assert [(e.data["stage"], e.actor, e.at) for e in entries] == [
        ("due_soon", "system:escalator", T0 + 21 * M),
        ("yellow", "system:escalator", T0 + 31 * M),
        ("red", "system:escalator", T0 + 61 * M)]
    assert store.get(ticket.ticket_id).escalation is E.RED


def test_two_replicas_escalate_each_overdue_ticket_exactly_once(store_factory) -> None:  # type: ignore[no-untyped-def]
    replicas = [store_factory(webhooks=True), store_factory(webhooks=True)]
    tickets = [make_ticket(opened_at=timedelta(seconds=i)) for i in range(40)]
    for t in tickets:
        replicas[0].save(t)
    settings = EscalationSettings(remind_before_s=600)
    workers = [Escalator(store=s, settings=settings, name=f"w{i}")
               for i, s in enumerate(replicas)]
    results: list[list[tuple[str, E]]] = [[], []]
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        for now in (T0 + 25 * M, T0 + 35 * M, T0 + 65 * M):
            for _ in range(2):  # both workers poll twice at each instant
                results[i].extend((r.ticket_id, r.stage) for r in workers[i].run_once(now=now))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = Counter(results[0] + results[1])
    expected = {(t.ticket_id, s) for t in tickets for s in (E.DUE_SOON, E.YELLOW, E.RED)}
    assert set(applied) == expected
    assert max(applied.values()) == 1
    audit = Counter((e.ticket_id, e.data["stage"]) for t in tickets
                    for e in replicas[1].audit(t.ticket_id) if e.action == "escalate")
    assert len(audit) == len(expected) and max(audit.values()) == 1
    assert all(replicas[1].get(t.ticket_id).escalation is E.RED for t in tickets)


def test_resolved_tickets_are_not_escalated(store) -> None:  # type: ignore[no-untyped-def]
    store.save(make_ticket(status=TicketStatus.RESOLVED))
    worker = Escalator(store=store, settings=EscalationSettings())
    assert worker.run_once(now=T0 + 3 * 60 * M) == []
