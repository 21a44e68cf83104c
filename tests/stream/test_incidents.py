"""stream/incidents.py: which sources an incident lists (kept with a set alongside the
list, which must follow it through joins, late incidents and expiry)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stream.incidents import IncidentClusterer
from stream.policy import KindPolicy
from stream.types import IncidentEvent
from tests.builders import make_detection

POLICY = KindPolicy(window_s=600)


def _add(clusterer: IncidentClusterer, seconds: int, source: str,
         station: str = "st1") -> IncidentEvent:
    d = make_detection(at=timedelta(seconds=seconds), station_id=station, source_id=source)
    return clusterer.add(d, "C00", POLICY)


@pytest.mark.parametrize(("sources", "expected"), [
    (["a"], ["st1/a"]),
    (["a", "a", "a"], ["st1/a"]),
    (["a", "b", "a", "c", "b"], ["st1/a", "st1/b", "st1/c"]),
    (["c", "b", "a", "b", "c"], ["st1/c", "st1/b", "st1/a"]),
])
def test_an_incident_lists_each_source_once_in_first_seen_order(
        sources: list[str], expected: list[str]) -> None:
    clusterer = IncidentClusterer()
    events = [_add(clusterer, 10 * n, source) for n, source in enumerate(sources)]
    assert len({e.incident.incident_id for e in events}) == 1
    assert events[-1].incident.source_ids == expected


def test_the_same_source_name_at_another_station_is_another_source() -> None:
    clusterer = IncidentClusterer()
    _add(clusterer, 0, "a")
    event = _add(clusterer, 10, "a", station="st2")
    assert event.incident.source_ids == ["st1/a", "st2/a"]


def test_a_new_incident_of_the_cell_starts_its_sources_afresh() -> None:
    clusterer = IncidentClusterer()
    first = _add(clusterer, 0, "a")
    _add(clusterer, 10, "b")
    later = _add(clusterer, 3600, "a")  # past the window: a new incident
    assert later.opened and later.incident is not first.incident
    again = _add(clusterer, 3610, "b")
    assert again.incident.source_ids == ["st1/a", "st1/b"]
    assert first.incident.source_ids == ["st1/a", "st1/b"]


def test_a_late_incident_leaves_the_current_ones_sources_alone() -> None:
    clusterer = IncidentClusterer()
    _add(clusterer, 3600, "a")
    late = _add(clusterer, 0, "b")  # far older: an incident of its own
    assert late.opened and late.incident.source_ids == ["st1/b"]
    joined = _add(clusterer, 3610, "b")
    assert not joined.opened and joined.incident.source_ids == ["st1/a", "st1/b"]


def test_an_expired_incident_forgets_its_sources() -> None:
    clusterer = IncidentClusterer()
    _add(clusterer, 0, "a")
    clusterer.expire(before_ts=(make_detection(at=timedelta(hours=2)).observed_at
                                .timestamp()), window_s_max=600)
    assert len(clusterer) == 0
    # within the old incident's window, but it is gone: a new one, with its own sources
    event = _add(clusterer, 10, "b")
    assert event.opened and event.incident.source_ids == ["st1/b"]
