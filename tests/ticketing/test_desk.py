"""ticketing/desk.py: false-positive gating and stale-write retries (SQL store), and the
sources a ticket lists."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stream.types import Incident, IncidentEvent
from tests.builders import make_grid
from tests.ticketing.builders import RULES, T0, make_policies
from ticketing.config import TicketingSettings
from ticketing.desk import TicketDesk, new_ticket
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.models import Origin, ReviewReason, TicketStatus, ticket_id_for
from ticketing.store import MemoryTicketStore


def _event(n: int, *, source: str, cell: str = "C00", joined: bool = False) -> IncidentEvent:
    incident = Incident(incident_id=f"inc-{n}", kind="smoke", cell_id=cell,
                        opened_at=T0 + timedelta(minutes=n), last_at=T0 + timedelta(minutes=n),
                        lon=0.5, lat=0.5, max_confidence=0.9, event_ids=[f"e{n}"],
                        source_ids=[source], detection_count=1)
    return IncidentEvent(incident=incident, opened=not joined, new_event_ids=(f"e{n}",),
                         confidence=0.9, source_type="smoke_sensor")


def _desk(store) -> TicketDesk:  # type: ignore[no-untyped-def]
    return TicketDesk(policies=make_policies(), settings=TicketingSettings(), grid=make_grid(),
                      store=store)


def test_a_noisy_source_goes_to_review_instead_of_dispatch(store) -> None:  # type: ignore[no-untyped-def]
    desk = _desk(store)
    for n in range(5):
        ticket = desk.apply(_event(n, source="st1/noisy", cell=f"C{n % 3}{n // 3}"))
        assert ticket.status is TicketStatus.DISPATCHED
        store.modify(ticket.ticket_id, lambda t, _l: apply_action(
            t, ActionRequest(Action.DISMISS, reason="dust"), actor="ops", at=T0, rules=RULES),
            expected_version=None)
    gated = desk.apply(_event(9, source="st1/noisy", cell="C22"))
    assert (gated.status, gated.review.value) == (TicketStatus.PENDING_REVIEW,
                                                  "pending_review")
    # why, and on review's clock (not the unit's): due review_sla_s after receipt
    assert (gated.review_reason.value, gated.dispatched_at) == ("source_suspended", None)  # type: ignore[union-attr]
    assert gated.due_at == gated.opened_at + timedelta(seconds=1800)
    assert desk.apply(_event(10, source="st1/fine", cell="C21")).status is \
        TicketStatus.DISPATCHED


def test_the_desk_retries_when_the_api_changed_the_ticket_meanwhile(store) -> None:  # type: ignore[no-untyped-def]
    desk = _desk(store)
    first = desk.apply(_event(1, source="st1/a"))
    real_get = store.ticket_for_incident
    raced = []

    def racing_lookup(incident_id: str):  # type: ignore[no-untyped-def]
        ticket = real_get(incident_id)
        if not raced:  # an operator accepts between the desk's read and write
            raced.append(True)
            store.modify(first.ticket_id, lambda t, _l: apply_action(
                t, ActionRequest(Action.ACCEPT), actor="fire", at=T0, rules=RULES),
                expected_version=None)
        return ticket

    store.ticket_for_incident = racing_lookup
    joined = desk.apply(_event(1, source="st1/a", joined=True))
    stored = store.get(first.ticket_id)
    assert stored.status is TicketStatus.ACCEPTED  # the operator's change survived
    assert stored.detection_count == 2 and joined.version == 3
    assert desk.stats.opened == 1 and desk.stats.updated == 1


def _growing(incident_id: str, n: int, sources: list[str], *,
             opened: bool) -> IncidentEvent:
    """An event of incident ``incident_id`` in C00, which by then lists ``sources``."""
    at = T0 + timedelta(minutes=n)
    incident = Incident(incident_id=incident_id, kind="smoke", cell_id="C00", opened_at=at,
                        last_at=at, lon=0.5, lat=0.5, max_confidence=0.9,
                        event_ids=[f"e{n}"], source_ids=list(sources), detection_count=1)
    return IncidentEvent(incident=incident, opened=opened, new_event_ids=(f"e{n}",),
                         confidence=0.9, source_type="smoke_sensor")


@pytest.mark.parametrize(("events", "expected"), [
    # (incident, its sources at that event) in order -> the ticket's sources
    ([("i1", ["a"]), ("i1", ["a", "b"]), ("i1", ["a", "b", "c"])], ["a", "b", "c"]),
    ([("i1", ["a", "b"]), ("i2", ["c", "b", "a"]), ("i2", ["c", "b", "a", "d"])],
     ["a", "b", "c", "d"]),
    ([("i1", ["b"]), ("i2", ["a", "c", "a"]), ("i1", ["b", "e"])], ["b", "a", "c", "e"]),
    ([("i1", ["a"]), ("i2", ["a"]), ("i1", ["a"])], ["a"]),
])
def test_a_ticket_lists_the_sources_of_its_incidents_once_in_first_seen_order(
        events: list[tuple[str, list[str]]], expected: list[str]) -> None:
    desk = _desk(MemoryTicketStore())
    seen: set[str] = set()
    for n, (incident_id, sources) in enumerate(events):
        ticket = desk.apply(_growing(incident_id, n, sources, opened=incident_id not in seen))
        seen.add(incident_id)
    assert ticket.source_ids == expected
    assert desk.stats.opened == 1


# -- new_ticket: the one way a ticket is made (desk and API / Open311 reports) ------------

@pytest.mark.parametrize(("kind", "confidence", "suspended", "status", "reason"), [
    ("smoke", 0.9, False, TicketStatus.DISPATCHED, None),
    ("smoke", 0.2, False, TicketStatus.PENDING_REVIEW, ReviewReason.LOW_CONFIDENCE),
    ("smoke", 0.9, True, TicketStatus.PENDING_REVIEW, ReviewReason.SOURCE_SUSPENDED),
    # the kind's own reason comes first: a suspended source does not hide it
    ("glitter", 0.9, True, TicketStatus.PENDING_REVIEW, ReviewReason.UNKNOWN_KIND),
])
def test_new_ticket_routes_and_starts_the_first_clock_at_receipt(
        kind: str, confidence: float, suspended: bool, status: TicketStatus,
        reason: ReviewReason | None) -> None:
    cell = make_grid()["C10"]
    received = T0 + timedelta(hours=2)  # an old observation received late
    ticket = new_ticket(rules=RULES, kind=kind, cell=cell, seed="s1", opened_at=T0,
                        received_at=received, lon=1.5, lat=0.5, confidence=confidence,
                        origin=Origin.API, source_suspended=suspended)
    assert ticket.ticket_id == ticket_id_for(kind, "C10", "s1")
    assert (ticket.status, ticket.review_reason, ticket.origin) == (status, reason, Origin.API)
    assert (ticket.cell_id, ticket.town, ticket.village) == ("C10", "TownA", "V1")
    assert (ticket.opened_at, ticket.received_at, ticket.clock_start) == (T0, received,
                                                                          received)
    if status is TicketStatus.DISPATCHED:  # the unit's clock: smoke is P1, 30 min
        assert (ticket.dispatched_at, ticket.due_at) == (received,
                                                         received + timedelta(minutes=30))
    else:  # review's clock (review_sla_s, 30 min by default)
        assert (ticket.dispatched_at, ticket.due_at) == (None, received + timedelta(
            seconds=TicketingSettings().review_sla_s))


def test_the_desk_and_a_report_make_the_same_ticket_for_the_same_work() -> None:
    """The desk's ticket for an incident and create_report's for a report of the same
    kind, place and times differ only in what each absorbed (ids, origin, counts)."""
    from ticketing.service import create_report
    from ticketing.store import SqliteTicketStore

    store = SqliteTicketStore(":memory:")
    desk = _desk(MemoryTicketStore())
    event = _event(0, source="st1/a", cell="C10")
    by_desk = desk.apply(event)
    by_report, created = create_report(
        store=store, grid=make_grid(), policies=make_policies(), settings=TicketingSettings(),
        kind="smoke", lon=event.incident.lon + 1, lat=event.incident.lat,
        at=event.incident.opened_at, actor="ops", origin=Origin.API, external_id="r1",
        source_id="st1/a")
    assert created
    differ = {"ticket_id", "origin", "event_ids", "incident_ids", "incident_count",
              "detection_count", "max_confidence", "lon", "lat"}
    desk_public, report_public = by_desk.to_public(), by_report.to_public()
    assert {k: v for k, v in desk_public.items() if k not in differ} == {
        k: v for k, v in report_public.items() if k not in differ}
    store.close()


def test_an_id_a_ticket_already_holds_is_not_added_twice_and_later_ids_are_kept(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two centre replicas on one store: replica B's stream has not seen e0 (replica A
    committed it; the edge re-sent it to B). B's fresh incident joins A's open ticket with
    e0 again; the ticket must hold e0 once, and the ids after it must survive a re-read
    (a duplicate made the stored id count overrun, and the next id was dropped)."""
    from ticketing.store import open_store

    store = open_store(str(tmp_path / "tickets.sqlite3"))
    replica_a, replica_b = _desk(store), _desk(store)
    replica_a.apply(_event(0, source="s1"))
    from dataclasses import replace

    first = _event(0, source="s1")
    resent = replace(first, incident=replace(first.incident, incident_id="inc-b"))
    replica_b.apply(resent)
    replica_b.apply(_event(1, source="s1"))
    (ticket,) = open_store(str(tmp_path / "tickets.sqlite3")).all()
    assert ticket.event_ids == ["e0", "e1"]


@pytest.mark.parametrize(("before", "more", "expected"), [
    ([], ["a"], ["a"]),
    (["a", "b"], ["b"], ["a", "b"]),
    (["a", "b"], ["c", "a", "c", "d"], ["a", "b", "c", "d"]),
    (["a", "a"], ["a", "b"], ["a", "a", "b"]),  # a repeat already there stays
])
def test_known_items_appends_what_is_new_in_order(before: list[str], more: list[str],
                                                 expected: list[str]) -> None:
    from ticketing.desk import KnownItems

    values = list(before)
    KnownItems().add_new(values, more)
    assert values == expected


def test_known_items_follows_a_list_changed_elsewhere_and_a_fresh_copy() -> None:
    from ticketing.desk import KnownItems

    known = KnownItems(max_items=8)
    ids = ["e0"]
    known.add_new(ids, ["e1"])
    ids.append("e2")  # appended by someone else: the kept set is not trusted
    known.add_new(ids, ["e2", "e3"])
    assert ids == ["e0", "e1", "e2", "e3"]
    copy = list(ids)  # a batching store's copy of the ticket: its own set
    known.add_new(copy, ["e3", "e4"])
    assert copy == ["e0", "e1", "e2", "e3", "e4"] and ids == ["e0", "e1", "e2", "e3"]
    assert known.items_of(ids) == {"e0", "e1", "e2", "e3"}
    other = ["x"]  # past max_items: everything is forgotten, answers stay right
    known.add_new(other, ["x", "y"])
    known.add_new(ids, ["e0", "e5"])
    assert other == ["x", "y"] and ids == ["e0", "e1", "e2", "e3", "e5"]
    known.forget()
    known.add_new(ids, ["e5", "e6"])
    assert ids == ["e0", "e1", "e2", "e3", "e5", "e6"]
