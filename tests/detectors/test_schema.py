"""Detection v1: the wire contract (DESIGN.md table), accepted and rejected inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detectors.schema import (
    SCHEMA_ID,
    Detection,
    DetectionRejected,
    RejectCode,
    detection_json_schema,
    parse_detection,
)
from tests.builders import wire


def _without(field: str) -> str:
    obj = wire()
    del obj[field]
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ('{"schema": "gridwatch.detection/1", "event_id": ', RejectCode.INVALID_JSON, None),
        (b"\xff\xfe{}", RejectCode.INVALID_JSON, None),
        ("[1, 2]", RejectCode.NOT_AN_OBJECT, None),
        ('"smoke"', RejectCode.NOT_AN_OBJECT, None),
        (json.dumps(wire(schema="gridwatch.detection/2")), RejectCode.WRONG_SCHEMA, "schema"),
        (_without("schema"), RejectCode.MISSING_FIELD, "schema"),
        (_without("event_id"), RejectCode.MISSING_FIELD, "event_id"),
        (_without("observed_at"), RejectCode.MISSING_FIELD, "observed_at"),
        (_without("lon"), RejectCode.MISSING_FIELD, "lon"),
        (json.dumps(wire(severity="high")), RejectCode.UNKNOWN_FIELD, "severity"),
        (json.dumps(wire(evidence={"snapshot": "x"})), RejectCode.UNKNOWN_FIELD,
         "evidence.snapshot"),
        (json.dumps(wire(observed_at="2026-05-04T08:00:00")), RejectCode.NAIVE_TIMESTAMP,
         "observed_at"),
        (json.dumps(wire(observed_at="yesterday")), RejectCode.WRONG_TYPE, "observed_at"),
        (json.dumps(wire(observed_at=1777777777)), RejectCode.WRONG_TYPE, "observed_at"),
        (json.dumps(wire(confidence=1.01)), RejectCode.OUT_OF_RANGE, "confidence"),
        (json.dumps(wire(confidence=-0.1)), RejectCode.OUT_OF_RANGE, "confidence"),
        (json.dumps(wire(confidence="0.9")), RejectCode.WRONG_TYPE, "confidence"),
        (json.dumps(wire(confidence=True)), RejectCode.WRONG_TYPE, "confidence"),
        (json.dumps(wire(lon=180.5)), RejectCode.OUT_OF_RANGE, "lon"),
        (json.dumps(wire(lat=-91)), RejectCode.OUT_OF_RANGE, "lat"),
        # year 1 with a positive offset has no UTC spelling: it failed deep in the pipeline
        (json.dumps(wire(observed_at="0001-01-01T00:00:30+05:01")), RejectCode.OUT_OF_RANGE,
         "observed_at"),
        (json.dumps(wire(observed_at="9999-12-31T23:59:59-05:00")), RejectCode.OUT_OF_RANGE,
         "observed_at"),
        (json.dumps(wire(lat="23.0")), RejectCode.WRONG_TYPE, "lat"),
        (json.dumps(wire(event_id="")), RejectCode.OUT_OF_RANGE, "event_id"),
        (json.dumps(wire(event_id="x" * 129)), RejectCode.OUT_OF_RANGE, "event_id"),
        (json.dumps(wire(station_id=7)), RejectCode.WRONG_TYPE, "station_id"),
        (json.dumps(wire(track_id=12)), RejectCode.WRONG_TYPE, "track_id"),
        (json.dumps(wire(attributes=[1])), RejectCode.WRONG_TYPE, "attributes"),
        (json.dumps(wire(evidence={"bbox_xyxy": [1, 2, 3]})), RejectCode.WRONG_TYPE,
         "evidence.bbox_xyxy"),
        (json.dumps(wire(evidence={"bbox_xyxy": [5, 2, 3, 4]})), RejectCode.INVALID_VALUE,
         "evidence.bbox_xyxy"),
        (json.dumps(wire(confidence=float("nan"))), RejectCode.OUT_OF_RANGE, "confidence"),
        (json.dumps(wire(lon=float("inf"))), RejectCode.OUT_OF_RANGE, "lon"),
        # poison values refused at the door (a NUL in an event_id made PostgreSQL refuse
        # the whole batch that held it)
        (json.dumps(wire(event_id="st1:cam\u0000:1")), RejectCode.INVALID_VALUE, "event_id"),
        (json.dumps(wire(station_id="st\n1")), RejectCode.INVALID_VALUE, "station_id"),
        (json.dumps(wire(source_id="cam\u007f")), RejectCode.INVALID_VALUE, "source_id"),
        (json.dumps(wire(kind="smoke\t")), RejectCode.INVALID_VALUE, "kind"),
        (json.dumps(wire(track_id="\u001b[31m")), RejectCode.INVALID_VALUE, "track_id"),
        (json.dumps(wire(evidence={"snapshot_url": "file:///a\u0000b"})),
         RejectCode.INVALID_VALUE, "evidence.snapshot_url"),
        (json.dumps(wire(evidence={"snapshot_url": "x" * 2049})), RejectCode.OUT_OF_RANGE,
         "evidence.snapshot_url"),
        (json.dumps(wire(attributes={"blob": "x" * 16_400})), RejectCode.INVALID_VALUE,
         "attributes"),
    ],
)
def test_rejects_bad_messages_with_a_reason_naming_the_field(raw, code, field):
    with pytest.raises(DetectionRejected) as info:
        parse_detection(raw)
    assert info.value.code is code
    if field is not None:
        named = [part.split(":")[0] for part in info.value.reason.split("; ")]
        assert any(name == field or name.startswith(f"{field}.") for name in named)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"observed_at": "2026-05-04T14:00:00+08:00"},
        {"observed_at": "2026-05-04T06:00:00Z"},
        {"observed_at": "2026-05-04T06:00:00.123456-03:30"},
        {"confidence": 0},
        {"confidence": 1},
        {"lon": -180, "lat": 90},
        {"kind": "illegal_parking", "source_type": "camera"},  # a plug-in's own kind
        {"track_id": "t1", "evidence": {"snapshot_url": "file:///s.jpg",
                                        "bbox_xyxy": [1, 2, 3, 4]}},
        {"attributes": {"test": True, "linkquality": 87}},
        {"event_id": "x" * 128},
    ],
)
def test_accepts_valid_messages(overrides):
    detection = parse_detection(json.dumps(wire(**overrides)))
    assert detection.schema_ == SCHEMA_ID
    assert detection.observed_at.tzinfo is not None


def test_round_trip_keeps_every_field():
    obj = wire(track_id="t9", evidence={"snapshot_url": "file:///a.jpg",
                                        "bbox_xyxy": [1.0, 2.0, 3.0, 4.0]},
               attributes={"test": False})
    detection = parse_detection(json.dumps(obj))
    again = parse_detection(detection.to_json())
    assert again == detection
    assert json.loads(detection.to_json())["evidence"]["bbox_xyxy"] == [1.0, 2.0, 3.0, 4.0]


def test_detection_is_frozen():
    detection = parse_detection(json.dumps(wire()))
    with pytest.raises(ValueError):
        detection.kind = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("attributes", "expected"),
                         [(None, False), ({}, False), ({"test": True}, True),
                          ({"test": "yes"}, False), ({"test": False}, False)])
def test_self_test_flag(attributes, expected):
    detection = parse_detection(json.dumps(wire(attributes=attributes)))
    assert detection.is_self_test is expected


def test_new_fills_schema_and_still_validates():
    fields = {k: v for k, v in wire().items() if k != "schema"}
    assert Detection.new(**fields).schema_ == SCHEMA_ID
    with pytest.raises(ValueError):
        Detection.new(**{**fields, "confidence": 2})


def test_json_schema_describes_the_contract():
    schema = detection_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"schema", "event_id", "observed_at", "station_id",
                                       "source_id", "source_type", "kind", "confidence",
                                       "lon", "lat"}
    assert schema["properties"]["confidence"]["maximum"] == 1.0


def test_cli_prints_the_schema():
    out = subprocess.run([sys.executable, "-m", "gridwatch", "schema", "detection"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["title"] == SCHEMA_ID


def test_limits_admit_what_real_producers_send():
    ok = parse_detection(json.dumps(wire(
        event_id="st-佛山-01:门禁-3:2026", source_id="cam ü/东门",
        evidence={"snapshot_url": "https://c.example/e/" + "x" * 2000},
        attributes={"note": "x" * 16_000})))
    assert ok.source_id == "cam ü/东门" and len(ok.attributes["note"]) == 16_000


def test_a_control_character_is_named_in_plain_words():
    with pytest.raises(DetectionRejected) as info:
        parse_detection(json.dumps(wire(event_id="a\u0000b")))
    assert info.value.reason == ("event_id: control characters (U+0000-U+001F, U+007F) "
                                 "are not allowed")
