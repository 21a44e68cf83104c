"""The stream stage: incidents, self-tests, out of area, event-time reordering."""

from __future__ import annotations

from datetime import timedelta

from geo.grid import Grid
from stream.hotspot import HotspotEngine, HotspotSettings
from stream.policy import KindPolicy, Mode, PolicyBook, StreamSettings
from stream.processor import StreamProcessor
from stream.types import IncidentEvent
from tests.builders import make_detection, make_grid

POLICIES = PolicyBook(kinds={
    "smoke": KindPolicy(window_s=600),
    "door_forced": KindPolicy(window_s=300, source_cooldown_s=30),
    "helmetless_rider": KindPolicy(mode=Mode.HOTSPOT),
})


def _processor(grid: Grid | None = None, lateness_s: int = 600) -> StreamProcessor:
    return StreamProcessor(StreamSettings(lateness_s=lateness_s), POLICIES,
                           HotspotEngine(HotspotSettings(), grid or make_grid()))


def _run(proc, items):
    outputs = []
    for detection, cell in items:
        outputs.extend(proc.push(detection, cell))
    outputs.extend(proc.flush())
    return [o for o in outputs if isinstance(o, IncidentEvent)]


def test_three_smoke_sensors_over_ten_minutes_are_one_incident():
    proc = _processor()
    items = [(make_detection(source_id=f"smoke-{floor}F", at=timedelta(seconds=s)), "C00")
             for floor, s in [(3, 0), (4, 120), (2, 300), (3, 420), (4, 590)]]
    events = _run(proc, items)
    assert sum(e.opened for e in events) == 1
    incident = events[0].incident
    assert incident.source_ids == ["st1/smoke-3F", "st1/smoke-4F", "st1/smoke-2F"]
    assert len(incident.event_ids) == 5
    assert proc.stats.incidents == 1


def test_fires_an_hour_apart_are_two_incidents():
    proc = _processor()
    events = _run(proc, [(make_detection(at=timedelta(0)), "C00"),
                         (make_detection(at=timedelta(hours=1)), "C00")])
    assert [e.opened for e in events] == [True, True]
    assert events[0].incident.incident_id != events[1].incident.incident_id


def test_same_time_other_cell_or_kind_is_another_incident():
    proc = _processor()
    events = _run(proc, [(make_detection(), "C00"), (make_detection(), "C10"),
                         (make_detection(kind="door_forced"), "C00")])
    assert [e.opened for e in events] == [True, True, True]


def test_self_tests_and_out_of_area_never_make_incidents():
    proc = _processor()
    events = _run(proc, [(make_detection(attributes={"test": True}), "C00"),
                         (make_detection(), None)])
    assert events == []
    assert proc.stats.self_tests == 1
    assert proc.stats.out_of_area == 1


def test_duplicate_event_ids_are_dropped():
    proc = _processor()
    d = make_detection()
    events = _run(proc, [(d, "C00"), (d, "C00"), (d, "C00")])
    assert len(events) == 1
    assert proc.stats.duplicates == 2


def test_without_its_own_filter_the_processor_trusts_the_runtime_to_drop_repeats():
    """The embedded service filters event ids at intake (the one filter it owns); its
    stream core, built with ``filter_event_ids=False``, does not filter them again."""
    proc = StreamProcessor(StreamSettings(lateness_s=600), POLICIES,
                           HotspotEngine(HotspotSettings(), make_grid()),
                           filter_event_ids=False)
    d = make_detection()
    events = _run(proc, [(d, "C00"), (d, "C00")])
    assert len(events) == 2
    assert proc.stats.duplicates == 0 and proc.stats.accepted == 2
    proc.forget(d.event_id)  # nothing to forget: not an error


def test_out_of_order_within_tolerance_is_processed_in_event_time():
    proc = _processor(lateness_s=600)
    late = make_detection(source_id="smoke-late", at=timedelta(seconds=0))
    early = make_detection(source_id="smoke-on-time", at=timedelta(seconds=240))
    events = _run(proc, [(early, "C00"), (late, "C00")])
    assert events[0].incident.event_ids[0] == late.event_id  # released first
    assert events[0].incident.opened_at == late.observed_at
    assert proc.stats.late == 0


def test_events_later_than_the_tolerance_are_still_used_and_counted():
    proc = _processor(lateness_s=60)
    items = [(make_detection(at=timedelta(minutes=m)), "C00") for m in (10, 11, 12)]
    items.append((make_detection(at=timedelta(minutes=9)), "C00"))  # 3 min late
    events = _run(proc, items)
    assert proc.stats.late == 1
    assert sum(e.opened for e in events) == 1  # it still joins the incident
    assert events[-1].incident.opened_at == items[-1][0].observed_at


def test_source_cooldown_absorbs_a_chattering_sensor():
    proc = _processor()
    items = [(make_detection(kind="door_forced", source_id="door-1",
                             at=timedelta(seconds=s)), "C00") for s in (0, 5, 12, 20)]
    events = _run(proc, items)
    assert proc.stats.absorbed == 3
    assert events[-1].incident.detection_count == 1
    assert len(events[-1].incident.event_ids) == 4


def test_hotspot_kinds_become_occurrences_not_incidents():
    proc = _processor()
    items = [(make_detection(kind="helmetless_rider", source_type="camera", track_id="t1",
                             at=timedelta(seconds=i)), "C00") for i in range(50)]
    assert _run(proc, items) == []
    assert proc.stats.occurrences == 1
    assert proc.stats.absorbed == 49


def test_live_without_a_buffer_each_detection_comes_out_at_once_in_arrival_order():
    """lateness_s=0 (the live runtimes): nothing waits; an older arrival is counted late
    and still joins its incident."""
    proc = _processor(lateness_s=0)
    outs = [proc.push(make_detection(event_id=name, at=timedelta(seconds=s)), "C00")
            for name, s in (("e10", 10), ("e5", 5), ("e20", 20), ("e20b", 20))]
    assert [[o.new_event_ids for o in out] for out in outs] == [
        [("e10",)], [("e5",)], [("e20",)], [("e20b",)]]
    assert [out[0].opened for out in outs] == [True, False, False, False]
    assert proc.stats.late == 1
    incident = outs[-1][0].incident
    assert incident.event_ids == ["e10", "e5", "e20", "e20b"]
    assert incident.opened_at == make_detection(at=timedelta(seconds=5)).observed_at
    assert proc.flush() == []
