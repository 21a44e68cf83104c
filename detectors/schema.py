"""Detection v1: the wire contract between edge boxes and the centre.

One JSON object per MQTT message or JSONL line. The table in ``shared/DESIGN.md`` is the
authority; this module implements it exactly:

>>> raw = (
...     '{"schema": "gridwatch.detection/1", "event_id": "e1",'
...     ' "observed_at": "2026-05-01T08:00:00+08:00", "station_id": "st1",'
...     ' "source_id": "smoke-3", "source_type": "smoke_sensor", "kind": "smoke",'
...     ' "confidence": 0.97, "lon": 113.14, "lat": 23.03}'
... )
>>> parse_detection(raw).kind
'smoke'

Anything else (unknown fields, wrong types, naive timestamps, out-of-range numbers) raises
:class:`DetectionRejected` with a reason code and a message that names the field.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

SCHEMA_ID = "gridwatch.detection/1"

BUILTIN_KINDS = ("helmetless_rider", "wrong_way_ebike", "smoke", "door_forced", "door_held_open")
BUILTIN_SOURCE_TYPES = ("camera", "smoke_sensor", "access_control")

# Limits that keep a poison value out at the door (the store refused an event_id holding
# NUL and took its whole batch down): identifiers are 1-128 characters without control
# characters, a snapshot URL at most 2,048, attributes at most 16 KiB as compact JSON.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=_NO_CONTROL)]
URL_MAX_CHARS = 2048
ATTRIBUTES_MAX_BYTES = 16 * 1024
# nothing is observed before 1970 or after 9000, and a time at the edge of datetime's range
# (year 1 with a positive offset) has no UTC spelling at all
EventTime = Annotated[AwareDatetime, Field(ge=datetime(1970, 1, 1, tzinfo=UTC),
                                           le=datetime(9000, 1, 1, tzinfo=UTC))]


class RejectCode(str, Enum):
    """Why a message was refused; the summary of a replay counts by these."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    WRONG_SCHEMA = "wrong_schema"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NAIVE_TIMESTAMP = "naive_timestamp"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"


class DetectionRejected(ValueError):
    """A message that is not a valid detection v1.

    Attributes:
        code: the first problem's :class:`RejectCode`.
        reason: a one-line message naming every offending field, e.g.
            ``"confidence: Input should be less than or equal to 1"``.
    """

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(f"{code.value}: {reason}")
        self.code = code
        self.reason = reason


class Evidence(BaseModel):
    """What an operator looks at to confirm a detection."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    snapshot_url: Annotated[str, Field(min_length=1, max_length=URL_MAX_CHARS,
                                       pattern=_NO_CONTROL)] | None = None
    bbox_xyxy: tuple[float, float, float, float] | None = None

    @field_validator("bbox_xyxy")
    @classmethod
    def _ordered_box(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if value is not None and (value[2] < value[0] or value[3] < value[1]):
            raise ValueError(f"expected x1 <= x2 and y1 <= y2, got {list(value)}")
        return value


class Detection(BaseModel):
    """One detection, exactly as on the wire (``gridwatch.detection/1``)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True
    )

    schema_: Literal["gridwatch.detection/1"] = Field(alias="schema")
    event_id: Identifier
    observed_at: EventTime
    station_id: Identifier
    source_id: Identifier
    source_type: Identifier
    kind: Identifier
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    lon: Annotated[float, Field(ge=-180.0, le=180.0)]
    lat: Annotated[float, Field(ge=-90.0, le=90.0)]
    track_id: Identifier | None = None
    evidence: Evidence | None = None
    attributes: dict[str, Any] | None = None

    @field_validator("attributes")
    @classmethod
    def _bounded_attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:  # absent (the usual case) costs nothing
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                       .encode())
            if size > ATTRIBUTES_MAX_BYTES:
                raise ValueError(f"at most {ATTRIBUTES_MAX_BYTES} bytes as JSON, "
                                 f"got {size}")
        return value

    @classmethod
    def new(cls, **fields: Any) -> Detection:
        """Build a detection in process; ``schema`` is filled in, everything else checked.

        Example:
            ``Detection.new(event_id="e1", observed_at=datetime.now(UTC), ...)``
        """
        return cls.model_validate({"schema": SCHEMA_ID, **fields}, strict=False)

    @property
    def is_self_test(self) -> bool:
        """A sensor self-test (``attributes.test is true``): counted, never ticketed."""
        return bool(self.attributes) and self.attributes.get("test") is True  # type: ignore[union-attr]

    def to_json(self) -> str:
        """Compact wire JSON (optional fields left out when unset)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def to_wire(self) -> dict[str, Any]:
        """The wire object as a plain dict (what :meth:`to_json` encodes)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


_CODE_BY_ERROR_TYPE = {
    "missing": RejectCode.MISSING_FIELD,
    "extra_forbidden": RejectCode.UNKNOWN_FIELD,
    "timezone_aware": RejectCode.NAIVE_TIMESTAMP,
    "greater_than_equal": RejectCode.OUT_OF_RANGE,
    "less_than_equal": RejectCode.OUT_OF_RANGE,
    "greater_than": RejectCode.OUT_OF_RANGE,
    "less_than": RejectCode.OUT_OF_RANGE,
    "finite_number": RejectCode.OUT_OF_RANGE,
    "string_too_short": RejectCode.OUT_OF_RANGE,
    "string_too_long": RejectCode.OUT_OF_RANGE,
    "json_invalid": RejectCode.INVALID_JSON,
    "string_pattern_mismatch": RejectCode.INVALID_VALUE,
    "model_type": RejectCode.NOT_AN_OBJECT,
    "model_attributes_type": RejectCode.NOT_AN_OBJECT,
}


def _code_for(error: Any) -> RejectCode:
    loc = error.get("loc", ())
    if loc and loc[0] == "schema" and error["type"] == "literal_error":
        return RejectCode.WRONG_SCHEMA
    if error["type"] == "missing" and loc and isinstance(loc[-1], int):
        return RejectCode.WRONG_TYPE  # a too-short array, not a missing field
    code = _CODE_BY_ERROR_TYPE.get(error["type"])
    if code is not None:
        return code
    if error["type"].endswith(("_type", "_parsing")):
        return RejectCode.WRONG_TYPE
    return RejectCode.INVALID_VALUE


def rejection_from(exc: ValidationError) -> DetectionRejected:
    """Turn pydantic's errors into one :class:`DetectionRejected` naming each field."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ())) or "<message>"
        message = error["msg"]
        if error["type"] == "string_pattern_mismatch":  # the only pattern: _NO_CONTROL
            message = "control characters (U+0000-U+001F, U+007F) are not allowed"
        parts.append(f"{field}: {message}")
    return DetectionRejected(_code_for(errors[0]), "; ".join(parts))


def parse_detection(raw: str | bytes | bytearray) -> Detection:
    """Validate one wire message (JSON text) into a :class:`Detection`.

    Raises:
        DetectionRejected: with a reason naming the offending field(s).
    """
    try:
        # the core validator directly: model_validate_json adds ~1.5 µs per call
        return _validate_json(raw)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise rejection_from(exc) from None


_validate_json = Detection.__pydantic_validator__.validate_json


def detection_from_dict(obj: dict[str, Any]) -> Detection:
    """Validate an already-decoded wire object (same rules as :func:`parse_detection`)."""
    return parse_detection(json.dumps(obj))


def make_event_id(station_id: str, source_id: str, observed_at: datetime, seq: int = 0) -> str:
    """A stable event id for producers that have no id of their own.

    The same inputs give the same id, so a re-sent detection keeps it.
    """
    stamp = observed_at.strftime("%Y%m%dT%H%M%S.%f%z")
    return f"{station_id}:{source_id}:{stamp}:{seq}"[:128]


def detection_json_schema() -> dict[str, Any]:
    """JSON Schema of detection v1 (what ``gridwatch schema detection`` prints)."""
    schema = Detection.model_json_schema(by_alias=True, mode="validation")
    schema["$id"] = "https://gridwatch.example/schemas/detection-1.json"
    schema["title"] = SCHEMA_ID
    return schema
