"""Decode vendor payloads into readings, and turn alarm signals into wire detections.

Adapters are pure: bytes/dicts in, :class:`~edge.alarm.SmokeReading` /
:class:`~edge.alarm.DoorEvent` out, :class:`PayloadError` for anything unusable.

>>> from_zigbee2mqtt(b'{"smoke": true, "battery_low": false, "linkquality": 87}').alarm
True
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from detectors.schema import Detection
from edge.alarm import DoorEvent, Signal, SmokeReading
from edge.config import DoorMapping, JsonMapping


class PayloadError(ValueError):
    """A sensor message that cannot be decoded (logged and counted, never fatal)."""


def _object(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"expected a JSON object, got invalid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _opt_bool(obj: dict[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    raise PayloadError(f"{key}: expected true/false, got {value!r}")


def from_zigbee2mqtt(payload: bytes | str | dict[str, Any]) -> SmokeReading:
    """A Zigbee2MQTT smoke-sensor state (``zigbee2mqtt/<device>``).

    Keys used: ``smoke``, ``test``, ``battery_low``, ``tamper`` (booleans) and
    ``linkquality`` (0-255); other keys (``battery``, ``voltage`` ...) are ignored.
    """
    obj = _object(payload)
    lq = obj.get("linkquality")
    if lq is not None and (isinstance(lq, bool) or not isinstance(lq, int)):
        raise PayloadError(f"linkquality: expected an integer, got {lq!r}")
    return SmokeReading(
        alarm=_opt_bool(obj, "smoke"),
        test=_opt_bool(obj, "test") is True,
        battery_low=_opt_bool(obj, "battery_low"),
        tamper=_opt_bool(obj, "tamper"),
        linkquality=lq,
    )


_MISSING = object()


def _get_path(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _matches(value: Any, accepted: list[Any]) -> bool:
    for candidate in accepted:
        if isinstance(value, str) and isinstance(candidate, str):
            if value.lower() == candidate.lower():
                return True
        elif type(value) is type(candidate) and value == candidate:
            return True
    return False


def from_json_mapping(payload: bytes | str | dict[str, Any], mapping: JsonMapping) -> SmokeReading:
    """Another vendor's JSON, decoded through the configured field paths and values."""
    obj = _object(payload)
    alarm_value = _get_path(obj, mapping.alarm_field)
    alarm = None if alarm_value is _MISSING else _matches(alarm_value, mapping.alarm_values)
    test = False
    if mapping.test_field is not None:
        test_value = _get_path(obj, mapping.test_field)
        test = test_value is not _MISSING and _matches(test_value, mapping.test_values)

    def flag(path: str | None) -> bool | None:
        if path is None:
            return None
        value = _get_path(obj, path)
        return None if value is _MISSING else bool(value)

    return SmokeReading(alarm=alarm, test=test, battery_low=flag(mapping.battery_low_field),
                        tamper=flag(mapping.tamper_field))


def door_event_from_json(
    payload: bytes | str | dict[str, Any], mapping: DoorMapping
) -> tuple[DoorEvent, bool]:
    """A door controller's JSON event: ``(event, is_self_test)``."""
    obj = _object(payload)
    raw = _get_path(obj, mapping.event_field)
    if raw is _MISSING:
        raise PayloadError(f"{mapping.event_field}: missing")
    if not isinstance(raw, str):
        raise PayloadError(f"{mapping.event_field}: expected a string, got {raw!r}")
    test = False
    if mapping.test_field is not None:
        test = _get_path(obj, mapping.test_field) is True
    for event, names in ((DoorEvent.FORCED, mapping.forced), (DoorEvent.OPENED, mapping.opened),
                         (DoorEvent.CLOSED, mapping.closed),
                         (DoorEvent.INVALID_CARD, mapping.invalid_card)):
        if _matches(raw, list(names)):
            return event, test
    raise PayloadError(f"{mapping.event_field}: unknown door event {raw!r}")


def detection_from_signal(
    signal: Signal,
    *,
    station_id: str,
    source_id: str,
    source_type: str,
    lon: float,
    lat: float,
) -> Detection:
    """The wire detection for one signal. The event id is derived from the signal, so the
    same reading delivered twice yields the same id and the centre drops the repeat."""
    observed_at = datetime.fromtimestamp(signal.at, UTC)
    stamp = observed_at.strftime("%Y%m%dT%H%M%S.%fZ")
    event_id = f"{station_id}:{source_id}:{signal.kind}:{signal.reason}:{stamp}"[:128]
    attributes: dict[str, Any] = {"reason": signal.reason, **signal.details}
    if signal.test:
        attributes["test"] = True
    if signal.active_since is not None:
        attributes["active_since"] = (
            datetime.fromtimestamp(signal.active_since, UTC).isoformat().replace("+00:00", "Z"))
    return Detection.new(
        event_id=event_id,
        observed_at=observed_at,
        station_id=station_id,
        source_id=source_id,
        source_type=source_type,
        kind=signal.kind,
        confidence=1.0,
        lon=lon,
        lat=lat,
        attributes=attributes,
    )
