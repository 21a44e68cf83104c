"""Dedup: same event id, same track, source cooldown, one rider seen by two cameras."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stream.dedup import EventIdFilter, OccurrenceDeduper, Verdict
from stream.policy import KindPolicy, Mode
from tests.builders import make_detection

HOT = KindPolicy(mode=Mode.HOTSPOT, track_ttl_s=60)


def _add(deduper, policy=HOT, cell="C00", **kw):
    d = make_detection(kind="helmetless_rider", source_type="camera", **kw)
    return deduper.add(d, cell, d.observed_at.timestamp(), policy)


def test_event_id_filter_remembers_within_the_horizon_and_forgets_after():
    f = EventIdFilter(horizon_s=100)
    assert f.seen("a", 0.0) is False
    assert f.seen("a", 50.0) is True
    assert f.seen("b", 200.0) is False  # a jump past the horizon: not believed alone
    assert f.seen("a", 200.5) is True
    assert f.seen("c", 201.0) is False  # confirmed: time advances past a's horizon
    assert f.seen("a", 202.0) is False  # forgotten: memory is bounded
    assert len(f) == 3


def test_one_far_future_timestamp_does_not_empty_the_event_id_filter():
    # issue 12: a detection dated year 8000 expired every live id, and being at the
    # front of the expiry order afterwards, stopped anything from expiring again
    f = EventIdFilter(horizon_s=100)
    for i in range(10):
        assert f.seen(f"live-{i}", float(i)) is False
    assert f.seen("year-8000", 1.9e11) is False
    assert all(f.seen(f"live-{i}", 10.0) for i in range(10))
    # the clock keeps moving with the live ids, and still expires them (the bad one is
    # not in the way)
    for t in range(11, 400):
        f.seen(f"later-{t}", float(t))
    assert f.seen("live-0", 400.0) is False
    assert len(f) < 150
    assert f.seen("year-8000", 400.0) is True  # remembered while ahead of the clock


def test_one_track_over_50_frames_is_one_occurrence():
    deduper = OccurrenceDeduper()
    verdicts = [_add(deduper, track_id="t1", at=timedelta(seconds=i * 0.2))
                for i in range(50)]
    assert verdicts[0][0] is Verdict.NEW
    assert all(v is Verdict.ABSORBED for v, _ in verdicts[1:])
    occurrence = verdicts[0][1]
    assert len(occurrence.event_ids) == 50
    assert all(o is occurrence for _, o in verdicts)


def test_track_ids_are_per_source_and_expire():
    deduper = OccurrenceDeduper()
    assert _add(deduper, track_id="t1")[0] is Verdict.NEW
    assert _add(deduper, track_id="t1", source_id="cam-2")[0] is Verdict.NEW
    # the same id reused by the tracker much later is a new object
    assert _add(deduper, track_id="t1", at=timedelta(minutes=10))[0] is Verdict.NEW


def test_detections_without_track_are_each_an_occurrence_unless_cooldown():
    deduper = OccurrenceDeduper()
    assert _add(deduper)[0] is Verdict.NEW
    assert _add(deduper, at=timedelta(seconds=1))[0] is Verdict.NEW
    cooled = KindPolicy(mode=Mode.HOTSPOT, source_cooldown_s=30)
    deduper = OccurrenceDeduper()
    assert _add(deduper, cooled)[0] is Verdict.NEW
    assert _add(deduper, cooled, at=timedelta(seconds=29))[0] is Verdict.ABSORBED
    assert _add(deduper, cooled, at=timedelta(seconds=61))[0] is Verdict.NEW


@pytest.mark.parametrize(
    ("dt_s", "dlon", "same_cell", "expected"),
    [
        (1, 0.0001, True, Verdict.ABSORBED),  # ~10 m, 1 s: the same rider
        (10, 0.0001, True, Verdict.NEW),  # too far apart in time
        (1, 0.001, True, Verdict.NEW),  # ~100 m apart: another rider
        (1, 0.0001, False, Verdict.NEW),  # other cell
    ],
)
def test_two_cameras_seeing_one_rider(dt_s, dlon, same_cell, expected):
    policy = KindPolicy(mode=Mode.HOTSPOT, merge_across_sources_s=3, merge_radius_m=25)
    deduper = OccurrenceDeduper()
    _add(deduper, policy, source_id="cam-a", track_id="a1", lon=0.5, lat=0.5)
    verdict, _ = _add(deduper, policy, cell="C00" if same_cell else "C10",
                      source_id="cam-b", track_id="b7", lon=0.5 + dlon, lat=0.5,
                      at=timedelta(seconds=dt_s))
    assert verdict is expected
