"""The ticket (work order) and its states."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any


class TicketStatus(str, Enum):
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


class Review(str, Enum):
    AUTO_DISPATCHED = "auto_dispatched"
    PENDING_REVIEW = "pending_review"


def ticket_id_for(kind: str, cell_id: str, seed: str) -> str:
    """Deterministic ticket id: the same first incident (or hot-spot window) of a cell and
    kind always names the same ticket, so a replayed partition upserts, never duplicates."""
    digest = hashlib.sha256(f"{kind}\x1f{cell_id}\x1f{seed}".encode()).hexdigest()
    return f"GW-{digest[:16]}"


def rfc3339(value: datetime) -> str:
    """UTC, second precision or finer, with ``Z``: one spelling for every output."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


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

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_public(self) -> dict[str, Any]:
        """JSON-ready dict; keys and value spellings are stable (replay output)."""
        out = asdict(self)
        out["status"] = self.status.value
        out["review"] = self.review.value
        for key in ("opened_at", "due_at", "updated_at"):
            out[key] = rfc3339(out[key])
        if self.hotspot is not None:
            out["hotspot"] = {k: rfc3339(v) if isinstance(v, datetime) else v
                              for k, v in self.hotspot.items()}
        return out

    @classmethod
    def from_public(cls, data: dict[str, Any]) -> Ticket:
        values = dict(data)
        values["status"] = TicketStatus(values["status"])
        values["review"] = Review(values["review"])
        for key in ("opened_at", "due_at", "updated_at"):
            values[key] = datetime.fromisoformat(values[key])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})
