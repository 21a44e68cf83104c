"""stream/incidents.py: which sources an incident lists (kept with a set alongside the
list, which must follow it through joins, late incidents and expiry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from stream.incidents import IncidentClusterer
from stream.policy import KindPolicy
from stream.types import IncidentEvent
from tests.builders import T0, make_detection

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


# -- the span is compared through timestamps: the answers must stay those of datetime
# arithmetic, to the microsecond, whatever offsets the detections were written with
_UTC8 = timezone(timedelta(hours=8))
_US = timedelta(microseconds=1)
# where timestamps cross 2**31 s their doubles change spacing: this instant and the one
# 600 s after it are 600.0000002 s apart as doubles (and 2**31 s is inside the span)
_BINADE = datetime(2038, 1, 19, 3, 9, 8, 6, tzinfo=UTC)


def _at(base: datetime, delta: timedelta, *, utc8: bool) -> str:
    at = base + delta
    return (at.astimezone(_UTC8) if utc8 else at).isoformat()


@pytest.mark.parametrize("base", [T0, _BINADE, _BINADE + timedelta(seconds=600)])
@pytest.mark.parametrize("first_utc8", [False, True])
@pytest.mark.parametrize("second_utc8", [False, True])
@pytest.mark.parametrize(("second", "joins", "current"), [
    (timedelta(seconds=600), True, True),  # exactly the window after: still in
    (timedelta(seconds=600) + _US, False, True),  # a microsecond later: a new incident
    (timedelta(seconds=-600), True, True),  # exactly the window before: still in
    (timedelta(seconds=-600) - _US, False, False),  # far older: its own, not current
    (timedelta(0), True, True),  # the same instant, spelled with another offset or not
    (_US, True, True),
    (-_US, True, True),
])
def test_the_window_boundary_is_exact_to_the_microsecond(
        base: datetime, second: timedelta, joins: bool, current: bool, first_utc8: bool,
        second_utc8: bool) -> None:
    clusterer = IncidentClusterer()
    first = clusterer.add(
        make_detection(observed_at=_at(base, timedelta(0), utc8=first_utc8)), "C00", POLICY)
    d = make_detection(observed_at=_at(base, second, utc8=second_utc8))
    event = clusterer.add(d, "C00", POLICY)
    assert event.opened is not joins
    assert (event.incident is first.incident) is joins
    if joins:
        span = [base, base + second]
        assert (event.incident.opened_at, event.incident.last_at) == (min(span), max(span))
        if second == timedelta(0):  # an equal instant leaves the span as it was
            assert event.incident.last_at is first.incident.opened_at
    # a third detection exactly the window after the current incident's last detection
    latest = max(base, base + second) if current else base
    third = clusterer.add(make_detection(observed_at=(latest + timedelta(seconds=600))
                                         .isoformat()), "C00", POLICY)
    assert not third.opened


def test_a_zone_with_daylight_saving_compares_as_datetime_arithmetic_does() -> None:
    # two datetimes sharing one ZoneInfo subtract in wall-clock time: 02:30 (summer time)
    # and 02:35 on the repeated hour (fold=1) are 5 minutes apart to datetime arithmetic,
    # 65 minutes apart in real time; the clusterer gives datetime arithmetic's answer
    berlin = ZoneInfo("Europe/Berlin")
    a = datetime(2026, 10, 25, 2, 30, tzinfo=berlin)
    b = datetime(2026, 10, 25, 2, 35, fold=1, tzinfo=berlin)
    assert (b - a).total_seconds() == 300 and b.timestamp() - a.timestamp() == 3900
    clusterer = IncidentClusterer()
    first = clusterer.add(make_detection().model_copy(update={"observed_at": a}), "C00",
                          POLICY)
    second = clusterer.add(make_detection().model_copy(update={"observed_at": b}), "C00",
                           POLICY)
    assert not second.opened and second.incident is first.incident
    assert second.incident.last_at is b


def test_expiry_uses_the_latest_detection_of_the_span() -> None:
    clusterer = IncidentClusterer()
    _add(clusterer, 0, "a")
    _add(clusterer, 500, "b")  # the span now ends at 500 s
    at = make_detection(at=timedelta(seconds=500 + 600)).observed_at.timestamp()
    clusterer.expire(before_ts=at, window_s_max=600)  # not before the span's end + window
    assert len(clusterer) == 1
    clusterer.expire(before_ts=at + 1e-6, window_s_max=600)
    assert len(clusterer) == 0
