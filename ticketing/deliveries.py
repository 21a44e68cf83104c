"""Webhook deliveries: which receivers a committed change goes to, and the queue of
deliveries to them (the ``outbox`` table of the ticket database; not the edge's detection
outbox, :mod:`edge.outbox`).

A change goes to the upstream work-order centre (``ticketing.webhook.url``) and to the own
webhook (``webhook_url``) of each department involved: the one that holds the ticket after
the change (the ``department`` a department's token sees), and the one that held it before
when the change took it away (a re-dispatch, a reroute on confirm or recall, a reclassify
to another department's kind; also any ``department_from`` an audit entry names). Each
receiver gets its own row, written in the change's transaction, and its own
``Idempotency-Key``: ``<ticket_id>:<version>:<type>`` for the centre (as before
department webhooks) and ``<ticket_id>:<version>:<type>:<department>`` for a department,
so each row is delivered, retried and given up on by itself (a failing department
endpoint holds up no one else).

>>> targets = DeliveryTargets(centre=True, departments=frozenset({"fire_rescue"}))
>>> targets.destinations(["fire_rescue", "traffic_police"])
['centre', 'department/fire_rescue']
>>> event_key("T-1", 3, "dispatch", DEPARTMENT_PREFIX + "fire_rescue")
'T-1:3:dispatch:fire_rescue'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from ticketing.config import TicketingSettings

if TYPE_CHECKING:
    from ticketing.changelog import Change

CENTRE = "centre"
"""The ``destination`` of the upstream centre's rows (every row written before
department webhooks, migration 9)."""
DEPARTMENT_PREFIX = "department/"
"""A department's rows have ``destination = "department/<id>"`` (ids never hold a ``/``)."""


def department_destination(department: str) -> str:
    return DEPARTMENT_PREFIX + department


def event_key(ticket_id: str, version: int, change_type: str, destination: str) -> str:
    """The row's ``Idempotency-Key``: stable across retries, distinct per receiver."""
    key = f"{ticket_id}:{version}:{change_type}"
    if destination == CENTRE:
        return key
    return f"{key}:{destination.removeprefix(DEPARTMENT_PREFIX)}"


@dataclass(frozen=True, slots=True)
class DeliveryTargets:
    """The receivers a store queues webhook deliveries for.

    Args:
        centre: rows for the upstream centre (``ticketing.webhook.url``).
        departments: the ids of the departments with their own ``webhook_url``.
    """

    centre: bool = True
    departments: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: TicketingSettings) -> DeliveryTargets:
        """The receivers ``settings`` configures: the one place that decides whether a
        store queues deliveries (``serve`` and ``demo`` build their store with it)."""
        return cls(centre=settings.webhook.url is not None,
                   departments=frozenset(d for d, dep in settings.departments.items()
                                         if dep.webhook_url is not None))

    @property
    def enabled(self) -> bool:
        """Whether any receiver is configured (else no deliveries are queued)."""
        return self.centre or bool(self.departments)

    def destinations(self, departments: Iterable[str]) -> list[str]:
        """The centre (if on), then each of ``departments`` that has a webhook, sorted."""
        out = [CENTRE] if self.centre else []
        return out + [department_destination(d) for d in sorted(set(departments))
                      if d in self.departments]


def as_targets(webhooks: bool | DeliveryTargets | None) -> DeliveryTargets | None:
    """A store's ``webhooks=`` argument as targets: ``True`` is the centre alone (what it
    meant before department webhooks), ``False``/``None`` or no receiver is off."""
    if webhooks is True:
        return DeliveryTargets()
    if isinstance(webhooks, DeliveryTargets) and webhooks.enabled:
        return webhooks
    return None


def departments_involved(change: Change, *, held_before: str | None) -> set[str]:
    """The departments a change concerns: the holder after it, the holder before it, and
    any ``department_from`` of its audit entries (recall, reclassify)."""
    involved = {change.ticket.department}
    if held_before is not None:
        involved.add(held_before)
    for entry in change.entries:
        named = entry.data.get("department_from")
        if isinstance(named, str):
            involved.add(named)
    return involved


_INSERT = text(
    "INSERT INTO outbox (event_key, event_type, ticket_id, payload, created_at,"
    " next_attempt_at, destination) VALUES (:k, :type, :t, :p, :at, :at, :d)"
    " ON CONFLICT (event_key) DO NOTHING")


def write(conn: Connection, change: Change, *, targets: DeliveryTargets,
          held_before: str | None, audit: list[dict[str, Any]],
          time: Callable[[datetime], str]) -> None:
    """Insert one row per receiver of ``change`` (in the caller's transaction).

    ``audit`` is the change's entries as JSON; ``time`` spells a timestamp as the store
    stores it."""
    ticket = change.ticket
    destinations = targets.destinations(departments_involved(change,
                                                             held_before=held_before))
    if not destinations:
        return
    public = ticket.to_public()
    at = change.entries[0].at if change.entries else ticket.updated_at
    rows = []
    for destination in destinations:
        key = event_key(ticket.ticket_id, ticket.version, change.type, destination)
        payload = {"event_key": key, "type": f"ticket.{change.type}", "ticket": public,
                   "audit": audit}
        rows.append({"k": key, "type": payload["type"], "t": ticket.ticket_id,
                     "p": json.dumps(payload, sort_keys=True, ensure_ascii=False),
                     "at": time(at), "d": destination})
    conn.execute(_INSERT, rows)


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event_key: str
    event_type: str
    ticket_id: str
    payload: str
    attempts: int
    destination: str = CENTRE


def claim(conn: Connection, *, dialect: str, destination: str, now: str, until: str,
          worker: str, limit: int) -> list[Delivery]:
    """Lease the due rows of one receiver to ``worker`` until ``until`` (PostgreSQL skips
    rows another transaction holds; SQLite's writer lock serialises claims)."""
    rows = conn.execute(text(
        "SELECT id, event_key, event_type, ticket_id, payload, attempts, destination"
        " FROM outbox WHERE destination = :d AND delivered_at IS NULL"
        " AND failed_at IS NULL AND next_attempt_at <= :now"
        " AND (claimed_until IS NULL OR claimed_until <= :now)"
        " ORDER BY id LIMIT :limit" + (" FOR UPDATE SKIP LOCKED"
                                       if dialect == "postgresql" else "")),
        {"d": destination, "now": now, "limit": limit}).fetchall()
    if rows:
        conn.execute(text("UPDATE outbox SET claimed_until = :until, claimed_by = :w"
                          " WHERE id = :id"),
                     [{"until": until, "w": worker, "id": r.id} for r in rows])
    return [Delivery(int(r.id), r.event_key, r.event_type, r.ticket_id, r.payload,
                       int(r.attempts), r.destination) for r in rows]


def release(conn: Connection, item_ids: list[int], *, worker: str) -> None:
    """End ``worker``'s lease on these rows (they are due again at once)."""
    conn.execute(text("UPDATE outbox SET claimed_until = NULL, claimed_by = NULL"
                      " WHERE id = :id AND claimed_by = :w"),
                 [{"id": i, "w": worker} for i in item_ids])


def finish(conn: Connection, item_id: int, *, at: str, delivered: bool,
           error: str | None = None, retry_at: str | None = None) -> None:
    """Record one delivery attempt (times as the store spells them): delivered, to retry
    at ``retry_at``, or given up (``retry_at`` None and not delivered)."""
    conn.execute(text(
        "UPDATE outbox SET attempts = attempts + 1, claimed_until = NULL,"
        " claimed_by = NULL, last_error = :err, delivered_at = :delivered,"
        " failed_at = :failed, next_attempt_at = coalesce(:retry, next_attempt_at)"
        " WHERE id = :id"),
        {"err": error, "id": item_id,
         "delivered": at if delivered else None,
         "failed": at if not delivered and retry_at is None else None,
         "retry": retry_at})


def counts(conn: Connection, *, destination: str | None = None) -> dict[str, int]:
    """Deliveries pending, delivered and failed (of one receiver, or all)."""
    where = "" if destination is None else " WHERE destination = :d"
    row = conn.execute(text(
        "SELECT count(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL),"
        " count(*) FILTER (WHERE delivered_at IS NOT NULL),"
        " count(*) FILTER (WHERE failed_at IS NOT NULL) FROM outbox" + where),
        {"d": destination}).one()
    return {"pending": int(row[0]), "delivered": int(row[1]), "failed": int(row[2])}
