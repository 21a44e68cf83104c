"""The ticket (work order) and its states."""

from __future__ import annotations

import copy
import functools
import hashlib
import operator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any


class TicketStatus(str, Enum):  # noqa: UP042 (CONVENTIONS 10)
    PENDING_REVIEW = "pending_review"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    RESOLVED = "resolved"
    CLOSED = "closed"
    DISMISSED = "dismissed"
    RETURNED = "returned"
    REOPENED = "reopened"


OPEN_STATUSES = frozenset({
    TicketStatus.PENDING_REVIEW, TicketStatus.DISPATCHED, TicketStatus.ACCEPTED,
    TicketStatus.RETURNED, TicketStatus.REOPENED,
})


class Review(str, Enum):  # noqa: UP042 (CONVENTIONS 10)
    AUTO_DISPATCHED = "auto_dispatched"
    PENDING_REVIEW = "pending_review"


class Escalation(str, Enum):  # noqa: UP042 (CONVENTIONS 10)
    """Supervision of a deadline, in order: a reminder before it, a yellow card at it and
    a red card (督办) at twice the allowed time."""

    NONE = "none"
    DUE_SOON = "due_soon"
    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        return _ESCALATION_ORDER.index(self)


_ESCALATION_ORDER = list(Escalation)


class Origin(str, Enum):  # noqa: UP042 (CONVENTIONS 10)
    DETECTION = "detection"  # the desk, from sensors and cameras
    OPEN311 = "open311"  # a report from another system (GeoReport v2)
    API = "api"  # created through POST /tickets


def ticket_id_for(kind: str, cell_id: str, seed: str) -> str:
    """Deterministic ticket id: the same first incident (or hot-spot window) of a cell and
    kind always names the same ticket, so a replayed partition upserts, never duplicates."""
    digest = hashlib.sha256(f"{kind}\x1f{cell_id}\x1f{seed}".encode()).hexdigest()
    return f"GW-{digest[:16]}"


def rfc3339(value: datetime) -> str:
    """UTC, second precision or finer, with ``Z``: one spelling for every output."""
    offset = value.utcoffset()
    if offset is None or type(value) is not datetime:
        # naive: read as local time, which the process may change; a subclass may
        # compare equal to a datetime yet spell itself otherwise
        return _rfc3339(value)
    # equal aware datetimes with equal offsets are the same instant: one spelling
    # (the offset is in the key because two times differing only in ``fold`` are equal)
    return _rfc3339_aware(value, offset)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=8192)  # a ticket written again spells its times again
def _rfc3339_aware(value: datetime, _offset: timedelta) -> str:
    return _rfc3339(value)


_TIME_FIELDS = ("opened_at", "due_at", "updated_at")
_OPTIONAL_TIME_FIELDS = ("accepted_at", "resolved_at", "closed_at", "received_at",
                         "dispatched_at", "clock_started_at")


class ReviewReason(str, Enum):  # noqa: UP042 (CONVENTIONS 10)
    """Why a ticket waits for an operator instead of going straight to its unit."""

    LOW_CONFIDENCE = "low_confidence"  # best detection below review_below_confidence
    UNKNOWN_KIND = "unknown_kind"  # no policy for the kind (a new plug-in): default_kind
    SOURCE_SUSPENDED = "source_suspended"  # a source with too many false positives
    AUTO_DISPATCH_OFF = "auto_dispatch_off"  # the kind's policy says auto_dispatch: false
    RECALLED = "recalled"  # an operator took it back from the unit


@dataclass(slots=True)
class Ticket:
    """A work order. Mutable inside the desk; :meth:`to_public` is what leaves it."""

    ticket_id: str
    kind: str
    cell_id: str
    district: str | None
    town: str | None
    village: str | None
    level: str
    unit: str | None  # the administrative unit at ``level`` that owns the order
    department: str
    status: TicketStatus
    review: Review
    priority: str
    opened_at: datetime
    due_at: datetime
    updated_at: datetime
    lon: float
    lat: float
    max_confidence: float
    incident_count: int = 0
    detection_count: int = 0
    event_ids: list[str] = field(default_factory=list)
    incident_ids: list[str] = field(default_factory=list)
    source_ids: list[str] = field(default_factory=list)
    snapshot_urls: list[str] = field(default_factory=list)
    hotspot: dict[str, Any] | None = None
    label: str | None = None
    version: int = 1
    # lifecycle (changed by ticketing.lifecycle / the escalator, never by the desk)
    escalation: Escalation = Escalation.NONE
    returned_count: int = 0
    accepted_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    dismiss_reason: str | None = None
    merged_into: str | None = None
    origin: Origin = Origin.DETECTION
    description: str | None = None
    # deadlines (ticketing.routing.Rules): the centre received the first report at
    # ``received_at``; a ticket waiting for review runs the review clock, a dispatched one
    # its unit's clock from ``dispatched_at``. ``clock_seq`` counts the clocks started
    # (each dispatch or recall starts one) and keys each clock's cards.
    received_at: datetime | None = None
    dispatched_at: datetime | None = None
    clock_started_at: datetime | None = None
    clock_seq: int = 1
    review_reason: ReviewReason | None = None

    @property
    def clock_start(self) -> datetime:
        """When the running deadline clock started (review or the unit's)."""
        return self.clock_started_at or self.received_at or self.opened_at

    @property
    def phase(self) -> str:
        """``review`` while an operator holds the ticket, else ``unit``."""
        return "review" if self.status is TicketStatus.PENDING_REVIEW else "unit"

    @property
    def red_at(self) -> datetime:
        """When the red card is due: twice the time allowed (``due_at - clock_start``)."""
        return self.due_at + (self.due_at - self.clock_start)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_public(self, *, event_ids: bool = True) -> dict[str, Any]:
        """JSON-ready dict; keys and value spellings are stable (replay output).

        Shallow on purpose: ``dataclasses.asdict`` deep-copies every ``event_ids`` entry
        and was most of the cost of a store write. ``event_ids=False`` leaves that key
        out (the SQL store keeps the ids in a table of their own)."""
        out = dict(zip(_FIELD_NAMES, _FIELD_VALUES(self), strict=True))
        if event_ids:
            out["event_ids"] = list(self.event_ids)
        else:
            del out["event_ids"]
        out["incident_ids"] = list(self.incident_ids)
        out["source_ids"] = list(self.source_ids)
        out["snapshot_urls"] = list(self.snapshot_urls)
        out["status"] = self.status.value
        out["review"] = self.review.value
        out["escalation"] = self.escalation.value
        out["origin"] = self.origin.value
        if self.review_reason is not None:
            out["review_reason"] = self.review_reason.value
        out["opened_at"] = rfc3339(self.opened_at)
        out["due_at"] = rfc3339(self.due_at)
        out["updated_at"] = rfc3339(self.updated_at)
        for key in _OPTIONAL_TIME_FIELDS:
            if out[key] is not None:
                out[key] = rfc3339(out[key])
        if self.hotspot is not None:
            out["hotspot"] = {k: rfc3339(v) if isinstance(v, datetime) else copy.deepcopy(v)
                              for k, v in self.hotspot.items()}
        return out

    @classmethod
    def from_public(cls, data: dict[str, Any]) -> Ticket:
        values = dict(data)
        values["status"] = TicketStatus(values["status"])
        values["review"] = Review(values["review"])
        values["escalation"] = Escalation(values.get("escalation", "none"))
        values["origin"] = Origin(values.get("origin", "detection"))
        if values.get("review_reason") is not None:
            values["review_reason"] = ReviewReason(values["review_reason"])
        for key in _TIME_FIELDS:
            values[key] = datetime.fromisoformat(values[key])
        for key in _OPTIONAL_TIME_FIELDS:
            if values.get(key) is not None:
                values[key] = datetime.fromisoformat(values[key])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    def copy(self) -> Ticket:
        """A deep copy (lists and the hot-spot dict are not shared)."""
        return copy.deepcopy(self)


_FIELD_NAMES = tuple(f.name for f in fields(Ticket))
_FIELD_VALUES = operator.attrgetter(*_FIELD_NAMES)
