"""The idempotent desk's merging of a batch's joins (``IdempotentDesk.merge_joins``):
which joins it merges into one event, and which outputs keep them apart."""

from __future__ import annotations

from datetime import timedelta

from gridwatch.config import load_config
from stream.types import HotspotFinding, Incident, IncidentEvent
from tests.builders import T0, make_grid
from ticketing.desk import TicketDesk
from ticketing.idempotent import IdempotentDesk
from ticketing.store import MemoryTicketStore


def desk(**kwargs: object) -> IdempotentDesk:
    config = load_config()
    inner = TicketDesk(policies=config.policies, settings=config.ticketing, grid=make_grid(),
                       store=MemoryTicketStore())
    return IdempotentDesk(inner, only_reopened=True, **kwargs)  # type: ignore[arg-type]


def incident(name: str, cell: str = "C00", kind: str = "smoke") -> Incident:
    return Incident(incident_id=name, kind=kind, cell_id=cell, opened_at=T0, last_at=T0,
                    lon=0.5, lat=0.5, max_confidence=0.9)


def join(inc: Incident, event_id: str, confidence: float = 0.9) -> IncidentEvent:
    return IncidentEvent(inc, False, (event_id,), confidence, "smoke_sensor")


def finding(cell: str, kind: str = "smoke") -> HotspotFinding:
    return HotspotFinding(kind=kind, cell_id=cell, member_cells=(cell,), window_start=T0,
                          window_end=T0 + timedelta(hours=1), observed=9, expected=1.0,
                          p_value=1e-6, lon=0.5, lat=0.5)


def test_joins_of_one_incident_are_merged_into_the_place_of_the_first() -> None:
    a, b = incident("a"), incident("b", cell="C11")
    outputs = [join(a, "a1", 0.4), join(b, "b1"), join(a, "a2", 0.8), join(a, "a3", 0.6)]
    merged = desk().merge_joins(outputs)
    assert [type(o) for o in merged] == [IncidentEvent, IncidentEvent]
    first, second = merged
    assert isinstance(first, IncidentEvent) and isinstance(second, IncidentEvent)
    assert (first.incident, first.new_event_ids, first.confidence, first.detections) == \
        (a, ("a1", "a2", "a3"), 0.8, 3)
    assert second is outputs[1]


def test_another_output_of_the_same_cell_and_kind_keeps_the_joins_apart() -> None:
    a, late = incident("a"), incident("late")  # both join the open ticket of C00/smoke
    outputs = [join(a, "a1"), join(late, "l1"), join(a, "a2"), join(a, "a3")]
    merged = desk().merge_joins(outputs)
    assert [o.new_event_ids for o in merged] == [("a1",), ("l1",), ("a2", "a3")]  # type: ignore[union-attr]
    hot = finding("C00")
    merged = desk().merge_joins([join(a, "a1"), hot, join(a, "a2")])
    assert merged == [join(a, "a1"), hot, join(a, "a2")]
    # a finding of another cell or kind does not
    other = finding("C11")
    assert len(desk().merge_joins([join(a, "a1"), other, join(a, "a2")])) == 2


def test_joins_that_are_checked_against_the_store_are_not_merged() -> None:
    a, b = incident("a"), incident("b", cell="C11")
    reopened = desk()
    reopened.reopened.add("b")
    assert len(reopened.merge_joins([join(b, "b1"), join(b, "b2")])) == 2
    replicas = desk(held_anywhere=lambda ids: set())
    assert len(replicas.merge_joins([join(a, "a1"), join(a, "a2")])) == 2
    config = load_config()
    every = IdempotentDesk(TicketDesk(policies=config.policies, settings=config.ticketing,
                                      grid=make_grid(), store=MemoryTicketStore()))
    assert len(every.merge_joins([join(a, "a1"), join(a, "a2")])) == 2
