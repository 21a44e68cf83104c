"""Payload adapters and the signal → wire detection step."""

from __future__ import annotations

import pytest

from detectors.schema import parse_detection
from edge.adapters import (
    PayloadError,
    detection_from_signal,
    door_event_from_json,
    from_json_mapping,
    from_zigbee2mqtt,
)
from edge.alarm import DoorEvent, Signal, SmokeReading
from edge.config import DoorMapping, JsonMapping


@pytest.mark.parametrize(
    ("payload", "expected", "error"),
    [
        (b'{"smoke": true, "battery_low": false, "tamper": false, "linkquality": 87,'
         b' "battery": 100, "voltage": 3000}',
         SmokeReading(alarm=True, test=False, battery_low=False, tamper=False, linkquality=87),
         None),
        (b'{"smoke": false, "test": true}', SmokeReading(alarm=False, test=True), None),
        (b'{"battery": 90}', SmokeReading(), None),  # smoke not reported: not "false"
        (b'not json', None, "invalid JSON"),
        (b'[1, 2]', None, "got list"),
        (b'{"smoke": "yes"}', None, "smoke: expected true/false"),
        (b'{"linkquality": "high"}', None, "linkquality"),
    ],
)
def test_from_zigbee2mqtt(payload: bytes, expected: SmokeReading | None,
                          error: str | None) -> None:
    if error:
        with pytest.raises(PayloadError, match=error):
            from_zigbee2mqtt(payload)
    else:
        assert from_zigbee2mqtt(payload) == expected


VENDOR = JsonMapping(alarm_field="state.fire", alarm_values=["ALARM"], test_field="mode",
                     test_values=["selftest"], battery_low_field="power.low")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"state": {"fire": "alarm"}, "power": {"low": 1}},
         SmokeReading(alarm=True, battery_low=True)),
        ({"state": {"fire": "normal"}}, SmokeReading(alarm=False)),
        ({"mode": "selftest"}, SmokeReading(test=True)),
        ({}, SmokeReading()),
    ],
)
def test_json_mapping(payload: dict, expected: SmokeReading) -> None:
    assert from_json_mapping(payload, VENDOR) == expected


@pytest.mark.parametrize(
    ("payload", "expected", "error"),
    [
        ({"event": "forced"}, (DoorEvent.FORCED, False), None),
        ({"event": "OPEN"}, (DoorEvent.OPENED, False), None),
        ({"event": "door_closed"}, (DoorEvent.CLOSED, False), None),
        ({"event": "card_denied", "test": True}, (DoorEvent.INVALID_CARD, True), None),
        ({"event": "exploded"}, None, "unknown door event"),
        ({"state": "open"}, None, "event: missing"),
        ({"event": 3}, None, "expected a string"),
    ],
)
def test_door_events(payload: dict, expected: tuple | None, error: str | None) -> None:
    if error:
        with pytest.raises(PayloadError, match=error):
            door_event_from_json(payload, DoorMapping())
    else:
        assert door_event_from_json(payload, DoorMapping()) == expected


def test_detection_from_signal_is_wire_valid_and_stable() -> None:
    sig = Signal("smoke", "self_test", 1_777_777_777.25, test=True, active_since=None,
                 details={"battery_low": True})
    a = detection_from_signal(sig, station_id="st1", source_id="smoke-1",
                              source_type="smoke_sensor", lon=113.1, lat=23.0)
    b = detection_from_signal(sig, station_id="st1", source_id="smoke-1",
                              source_type="smoke_sensor", lon=113.1, lat=23.0)
    assert a.event_id == b.event_id  # same reading twice: same id, dropped at the centre
    assert a.is_self_test
    assert parse_detection(a.to_json()) == a
    assert a.attributes == {"reason": "self_test", "battery_low": True, "test": True}
