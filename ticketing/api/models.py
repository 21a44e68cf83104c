"""Request and response models of the API (Create / Update / Public)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from geo.admin import Level
from stream.policy import Priority
from ticketing.lifecycle import Action
from ticketing.models import Escalation, Origin, Review, ReviewReason, Ticket, TicketStatus

Text = Field(default=None, min_length=1, max_length=2000)


def _plausible(value: datetime) -> datetime:
    # a time at the edge of datetime's range (year 1 with a positive offset) cannot even
    # be turned into UTC; nothing this system keeps is before 1970 or far in the future
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not 1970 <= year <= 9000:
        raise ValueError("expected a time between 1970 and 9000 (UTC)")
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_plausible)]
"""A time given to the API: with an offset, and within 1970..9000 UTC."""


class TicketPublic(BaseModel):
    """A ticket as the API shows it (the same fields as the replay output)."""

    ticket_id: str
    kind: str
    cell_id: str
    district: str | None
    town: str | None
    village: str | None
    level: str
    unit: str | None
    department: str
    status: TicketStatus
    review: Review
    priority: str
    opened_at: AwareDatetime
    due_at: AwareDatetime
    updated_at: AwareDatetime
    lon: float
    lat: float
    max_confidence: float
    incident_count: int
    detection_count: int
    event_ids: list[str]
    incident_ids: list[str]
    source_ids: list[str]
    snapshot_urls: list[str]
    hotspot: dict[str, Any] | None
    label: str | None
    version: int
    escalation: Escalation
    returned_count: int
    accepted_at: AwareDatetime | None
    resolved_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    dismiss_reason: str | None
    merged_into: str | None
    origin: Origin
    description: str | None
    received_at: AwareDatetime | None = Field(
        None, description="When the centre received the first report")
    dispatched_at: AwareDatetime | None = Field(
        None, description="When the current unit received the work: its clock's start "
                          "(null while in operator review)")
    clock_started_at: AwareDatetime | None = Field(
        None, description="When the running deadline clock (review or the unit's) started")
    clock_seq: int = Field(1, description="Deadline clocks started so far (each dispatch "
                                          "or recall starts one)")
    review_reason: ReviewReason | None = Field(
        None, description="Why the ticket went to operator review (null: it never did)")

    @classmethod
    def of(cls, ticket: Ticket) -> TicketPublic:
        return cls.model_validate(ticket.to_public())


class TicketList(BaseModel):
    items: list[TicketPublic]
    total: int
    limit: int
    offset: int


class TicketCreate(BaseModel):
    """A report from a person or another system; it joins the same store and is routed
    like a detection's ticket (by kind and the cell at ``lon``/``lat``)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    description: str | None = Text
    observed_at: Timestamp | None = None
    external_id: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="The caller's id; posting the same one again returns the same ticket")
    source_id: str | None = Field(default=None, min_length=1, max_length=128)
    media_url: str | None = Field(default=None, min_length=1, max_length=2000)


class TicketUpdate(BaseModel):
    """Edit fields that are not lifecycle state; ``version`` must be the current one."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    description: str | None = Text
    priority: Priority | None = None
    note: str | None = Text


class TicketAction(BaseModel):
    """A lifecycle action. ``version`` must be the ticket's current version (optimistic
    concurrency); a stale one is 409 with the current version."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    version: int = Field(ge=1)
    note: str | None = Text
    reason: str | None = Text
    department: str | None = Field(default=None, min_length=1, max_length=64)
    level: Level | None = None
    into: str | None = Field(default=None, min_length=1, max_length=64)
    kind: str | None = Field(default=None, min_length=1, max_length=64,
                             description="reclassify: the right kind (a configured one)")


class DepartmentPublic(BaseModel):
    """A department of the registry (``ticketing.departments``)."""

    id: str
    name_zh: str
    name_en: str
    level: Level
    serves: list[str]
    has_webhook: bool
    kinds: list[str] = Field(description="The configured kinds routed to it by default")


class AdminUnit(BaseModel):
    """A district, town or village of the grid, with its cell count."""

    level: Level
    name: str
    parent: str | None
    cells: int


class DepartmentRegistry(BaseModel):
    departments: list[DepartmentPublic]
    admin_units: list[AdminUnit]


class AuditEntryPublic(BaseModel):
    ticket_id: str
    at: AwareDatetime
    actor: str  # a person's username, an environment token's ROLE[/DEPARTMENT], system:...
    actor_display_name: str | None = None  # the person's name when actor is an account
    action: str
    from_status: str | None
    to_status: str
    note: str | None
    data: dict[str, Any]


class SourcePublic(BaseModel):
    source_id: str
    confirmed: int
    dismissed: int
    reviewed: int
    false_positive_rate: float | None
    auto_dispatch_suspended: bool


class ReviewItem(BaseModel):
    """A pending ticket with its evidence and what is known about its sources."""

    ticket: TicketPublic
    sources: list[SourcePublic]


class ReviewQueue(BaseModel):
    items: list[ReviewItem]
    total: int


class Health(BaseModel):
    """``status`` for anyone; the rest only for an authenticated caller."""

    status: Literal["ok"]
    storage: str | None = None
    schema_version: int | None = None
    tickets: int | None = None


class Problem(BaseModel):
    """An error body."""

    detail: str
    current_version: int | None = None


class LoginRequest(BaseModel):
    """``POST /auth/login``: a named account's username and password."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    """Who is calling: the audit log's name for them, their role and department, and, for
    a console session, the CSRF token its changes must send as ``X-CSRF-Token``."""

    username: str
    display_name: str | None
    role: str
    department: str | None
    auth: Literal["session", "token", "anonymous"]
    csrf_token: str | None = None
    expires_at: AwareDatetime | None = None
