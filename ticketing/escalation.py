"""Deadline supervision: due-soon reminders, yellow cards at the deadline, red cards
(督办) at twice the time allowed, each recorded against the unit that held the ticket.

Deadlines are data (``due_at`` on the ticket, stage in ``escalation``), not in-process
timers: any worker can pick them up after a restart. The worker is told "now", so tests
and replays are deterministic. Each step is applied through
:meth:`~ticketing.store.SqlTicketStore.modify` with the version the worker read, and
records a unique ``(ticket_id, stage)`` row in the same transaction, so with two API
replicas (or two workers) on one database each escalation happens exactly once: the
second worker's write finds a newer version (or the row) and is rolled back.

>>> from datetime import timedelta
>>> from ticketing.lifecycle import make_example_ticket
>>> t = make_example_ticket()
>>> [s.value for s in due_stages(t, now=t.due_at + timedelta(minutes=1), remind_before_s=600)]
['yellow']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ticketing.config import EscalationSettings
from ticketing.lifecycle import AuditEntry
from ticketing.models import Escalation, Ticket
from ticketing.store import AlreadyEscalated, SqlTicketStore, TicketNotFound, VersionConflict

log = logging.getLogger(__name__)

ACTOR = "system:escalator"


def due_stages(ticket: Ticket, *, now: datetime, remind_before_s: int) -> list[Escalation]:
    """The supervision steps that are due and not yet taken, in order.

    A reminder is only sent before the deadline; once past it, the yellow card (and at
    twice the allowed time the red card) is due, even if the worker was down when they
    fell due.
    """
    if not ticket.is_open:
        return []
    stages = []
    rank = ticket.escalation.rank
    if now >= ticket.red_at and rank < Escalation.RED.rank:
        if rank < Escalation.YELLOW.rank:
            stages.append(Escalation.YELLOW)
        stages.append(Escalation.RED)
    elif now >= ticket.due_at and rank < Escalation.YELLOW.rank:
        stages.append(Escalation.YELLOW)
    elif (now >= ticket.due_at - timedelta(seconds=remind_before_s)
          and rank < Escalation.DUE_SOON.rank and now < ticket.due_at):
        stages.append(Escalation.DUE_SOON)
    return stages


def escalate(ticket: Ticket, stages: list[Escalation], *, at: datetime,
             actor: str = ACTOR) -> list[AuditEntry]:
    """Apply ``stages`` to ``ticket`` in place; one audit entry per stage."""
    entries = []
    for stage in stages:
        overdue_s = max(0, int((at - ticket.due_at).total_seconds()))
        note = {Escalation.DUE_SOON: f"due soon (deadline {ticket.due_at.isoformat()})",
                Escalation.YELLOW: f"yellow card: deadline passed, overdue {overdue_s} s",
                Escalation.RED: f"red card (督办): overdue {overdue_s} s, twice the time "
                                f"allowed"}[stage]
        entries.append(AuditEntry(
            ticket_id=ticket.ticket_id, at=at, actor=actor, action="escalate",
            from_status=ticket.status.value, to_status=ticket.status.value, note=note,
            # the card is the holder's: the unit (or operator review, phase "review")
            # that had the ticket when this clock's deadline passed
            data={"stage": stage.value, "department": ticket.department,
                  "phase": ticket.phase, "clock_seq": ticket.clock_seq,
                  "level": ticket.level, "unit": ticket.unit,
                  "due_at": ticket.due_at.isoformat(), "overdue_s": overdue_s}))
        ticket.escalation = stage
    return entries


@dataclass(frozen=True, slots=True)
class EscalationRecord:
    ticket_id: str
    stage: Escalation
    department: str
    phase: str = "unit"  # "review": the card is operator review's, not the department's


class Escalator:
    """Finds tickets with a due supervision step and takes it, once.

    Args:
        store: the shared ticket store.
        settings: ``ticketing.escalation``.
        name: this worker's name in the audit log.
    """

    def __init__(self, *, store: SqlTicketStore, settings: EscalationSettings,
                 name: str = ACTOR) -> None:
        self.store = store
        self.settings = settings
        self.name = name

    def run_once(self, *, now: datetime, limit: int = 500) -> list[EscalationRecord]:
        """One pass at ``now``; returns the escalations this worker applied."""
        done: list[EscalationRecord] = []
        remind = self.settings.remind_before_s
        for candidate in self.store.escalation_candidates(now=now, remind_before_s=remind,
                                                          limit=limit):
            stages = due_stages(candidate, now=now, remind_before_s=remind)
            if not stages:
                continue
            try:
                ticket = self.store.modify(
                    candidate.ticket_id, _mutation(stages, now, self.name),
                    expected_version=candidate.version)
            except (VersionConflict, AlreadyEscalated, TicketNotFound) as exc:
                # another worker took it, or the ticket changed: the next pass re-reads
                log.debug("skipped %s: %s", candidate.ticket_id, exc)
                continue
            done.extend(EscalationRecord(ticket.ticket_id, s, ticket.department,
                                         ticket.phase) for s in stages)
        if done:
            log.info("escalated %d step(s) at %s", len(done), now.isoformat())
        return done


def _mutation(stages: list[Escalation], now: datetime, actor: str) -> Callable[
        [Ticket, Callable[[str], Ticket]], list[AuditEntry]]:
    def mutate(ticket: Ticket, _load: Callable[[str], Ticket]) -> list[AuditEntry]:
        return escalate(ticket, stages, at=now, actor=actor)

    return mutate
