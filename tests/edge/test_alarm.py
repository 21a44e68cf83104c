"""Alarm state machines, driven with an injected clock (plain floats)."""

from __future__ import annotations

import pytest

from edge.alarm import DoorEvent, DoorMonitor, SmokeAlarm, SmokeReading
from edge.config import AlarmSettings, InvalidCardBurst


def smoke(**kw: float | None) -> SmokeAlarm:
    settings = AlarmSettings(**{"reaffirm_s": 300, "debounce_s": 30, "stuck_after_s": 3600,
                                "silent_after_s": 7200, **kw})
    return SmokeAlarm(settings, started_at=0.0)


def reasons(signals: list) -> list[tuple[str, str]]:
    return [(s.kind, s.reason) for s in signals]


ON, OFF, TEST = SmokeReading(alarm=True), SmokeReading(alarm=False), SmokeReading(test=True)


def test_rising_edge_reports_once_then_reaffirms_every_period() -> None:
    m = smoke()
    assert reasons(m.on_reading(ON, at=10)) == [("smoke", "rising")]
    assert m.on_reading(ON, at=20) == []  # still active: no new detection
    assert m.tick(309) == []
    assert reasons(m.tick(310)) == [("smoke", "reaffirm")]
    assert m.tick(400) == []
    assert reasons(m.tick(610)) == [("smoke", "reaffirm")]


def test_reaffirm_carries_the_episode_start() -> None:
    m = smoke()
    m.on_reading(ON, at=10)
    (sig,) = m.tick(310)
    assert sig.active_since == 10


def test_flapping_within_debounce_is_one_alarm() -> None:
    m = smoke()
    assert len(m.on_reading(ON, at=0)) == 1
    for t in range(1, 20, 2):  # off/on every second
        assert m.on_reading(OFF, at=t) == []
        assert m.on_reading(ON, at=t + 1) == []
    # the re-affirm schedule of the first edge carries on
    assert reasons(m.tick(300)) == [("smoke", "reaffirm")]


def test_alarm_after_quiet_debounce_is_a_new_rising_edge() -> None:
    m = smoke()
    m.on_reading(ON, at=0)
    m.on_reading(OFF, at=10)
    assert m.tick(39) == []
    m.tick(40)  # 30 s quiet: episode over
    assert reasons(m.on_reading(ON, at=41)) == [("smoke", "rising")]


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ([(TEST, 0)], [("smoke", "self_test")]),
        ([(TEST, 0), (TEST, 5)], [("smoke", "self_test")]),  # one test, several messages
        ([(TEST, 0), (OFF, 5), (TEST, 10)], [("smoke", "self_test")]),  # within debounce
        ([(TEST, 0), (OFF, 5), (TEST, 100)], [("smoke", "self_test")] * 2),
    ],
)
def test_self_test_is_flagged_and_debounced(readings: list, expected: list) -> None:
    m = smoke()
    out = []
    for reading, at in readings:
        out += m.on_reading(reading, at=at)
    assert reasons(out) == expected
    assert all(s.test for s in out)
    assert not m.active


def test_self_test_with_smoke_key_does_not_start_a_real_alarm() -> None:
    m = smoke()
    (sig,) = m.on_reading(SmokeReading(alarm=True, test=True), at=0)
    assert sig.test and sig.reason == "self_test"
    assert m.tick(1000) == []


def test_stuck_in_alarm_reported_once() -> None:
    m = smoke(stuck_after_s=600, reaffirm_s=10_000)
    m.on_reading(ON, at=0)
    assert m.tick(599) == []
    assert reasons(m.tick(600)) == [("sensor_stuck", "stuck")]
    assert m.tick(1200) == []


def test_silent_sensor_reported_once_and_rearmed_by_a_reading() -> None:
    m = smoke(silent_after_s=100)
    assert m.tick(99) == []
    assert reasons(m.tick(100)) == [("sensor_silent", "silent")]
    assert m.tick(150) == []
    m.on_reading(OFF, at=160)
    assert m.tick(259) == []
    assert reasons(m.tick(260)) == [("sensor_silent", "silent")]


def test_battery_and_linkquality_travel_as_details() -> None:
    m = smoke()
    (sig,) = m.on_reading(SmokeReading(alarm=True, battery_low=True, linkquality=42), at=0)
    assert sig.details == {"battery_low": True, "linkquality": 42}


def door(**kw: float) -> DoorMonitor:
    args = {"held_open_limit_s": 120, "reaffirm_s": 300, "debounce_s": 10,
            "silent_after_s": None, **kw}
    return DoorMonitor(burst=InvalidCardBurst(count=3, window_s=60), started_at=0.0, **args)


def test_door_forced_reported_at_once_repeats_debounced() -> None:
    m = door()
    assert reasons(m.on_event(DoorEvent.FORCED, at=0)) == [("door_forced", "rising")]
    assert m.on_event(DoorEvent.FORCED, at=5) == []
    assert reasons(m.on_event(DoorEvent.FORCED, at=20)) == [("door_forced", "rising")]


def test_door_held_open_past_the_limit_then_reaffirmed() -> None:
    m = door()
    assert m.on_event(DoorEvent.OPENED, at=0) == []
    assert m.tick(119) == []
    assert reasons(m.tick(120)) == [("door_held_open", "rising")]
    assert m.tick(200) == []
    assert reasons(m.tick(420)) == [("door_held_open", "reaffirm")]
    m.on_event(DoorEvent.CLOSED, at=430)
    assert m.tick(10_000) == []


def test_door_closed_before_the_limit_reports_nothing() -> None:
    m = door()
    m.on_event(DoorEvent.OPENED, at=0)
    m.on_event(DoorEvent.CLOSED, at=100)
    assert m.tick(500) == []


def test_invalid_card_burst_needs_count_within_window() -> None:
    m = door()
    assert m.on_event(DoorEvent.INVALID_CARD, at=0) == []
    assert m.on_event(DoorEvent.INVALID_CARD, at=50) == []
    assert m.on_event(DoorEvent.INVALID_CARD, at=100) == []  # the one at 0 fell out
    out = m.on_event(DoorEvent.INVALID_CARD, at=105)
    assert reasons(out) == [("invalid_card_burst", "burst")]
    assert out[0].details["invalid_cards"] == 3
    assert m.on_event(DoorEvent.INVALID_CARD, at=106) == []  # counting starts over


def test_door_self_test_changes_no_state() -> None:
    m = door()
    (sig,) = m.on_event(DoorEvent.FORCED, at=0, test=True)
    assert sig.test and sig.kind == "door_forced"
    assert reasons(m.on_event(DoorEvent.FORCED, at=1)) == [("door_forced", "rising")]
