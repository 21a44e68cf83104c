"""ticketing/desk.py with the SQL store: false-positive gating and stale-write retries."""

from __future__ import annotations

from datetime import timedelta

from stream.types import Incident, IncidentEvent
from tests.builders import make_grid
from tests.ticketing.builders import T0, make_policies
from ticketing.config import TicketingSettings
from ticketing.desk import TicketDesk
from ticketing.lifecycle import Action, ActionRequest, apply_action
from ticketing.models import TicketStatus


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
            t, ActionRequest(Action.DISMISS, reason="dust"), actor="ops", at=T0),
            expected_version=None)
    gated = desk.apply(_event(9, source="st1/noisy", cell="C22"))
    assert (gated.status, gated.review.value) == (TicketStatus.PENDING_REVIEW,
                                                  "pending_review")
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
                t, ActionRequest(Action.ACCEPT), actor="fire", at=T0),
                expected_version=None)
        return ticket

    store.ticket_for_incident = racing_lookup
    joined = desk.apply(_event(1, source="st1/a", joined=True))
    stored = store.get(first.ticket_id)
    assert stored.status is TicketStatus.ACCEPTED  # the operator's change survived
    assert stored.detection_count == 2 and joined.version == 3
    assert desk.stats.opened == 1 and desk.stats.updated == 1
