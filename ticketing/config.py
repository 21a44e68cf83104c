"""Ticketing settings: SLA deadlines, routing overrides, escalation, review, storage,
webhooks and live updates. Secrets (API tokens, the webhook HMAC key, a Redis password)
never live here: they come from environment variables (see ``ticketing.auth`` and
``ticketing.webhooks``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from geo.admin import Level
from stream.policy import Priority
from ticketing.departments import DEFAULT_DEPARTMENTS, Department, DepartmentId

DEFAULT_SLA_S: dict[Priority, int] = {"P1": 2 * 3600, "P2": 24 * 3600, "P3": 72 * 3600,
                                      "P4": 7 * 86400}
PositiveSeconds = Annotated[int, Field(gt=0, le=365 * 86400)]


class RoutingOverride(BaseModel):
    """Send a kind somewhere else in some towns/districts (per-town arrangements)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str | None = None  # None: every kind
    district: str | None = None
    town: str | None = None
    department: str | None = None
    level: Level | None = None


class EscalationSettings(BaseModel):
    """Deadline supervision: a reminder ``remind_before_s`` before ``due_at``, a yellow
    card at ``due_at``, a red card (督办) at twice the time allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    remind_before_s: Annotated[int, Field(ge=0, le=7 * 86400)] = 600
    interval_s: PositiveSeconds = 30  # how often the worker looks


class ReviewSettings(BaseModel):
    """A source whose dismissed share is above ``max_false_positive_rate`` after at least
    ``min_reviewed`` reviewed tickets stops auto-dispatching: its tickets go to review."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_false_positive_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    min_reviewed: Annotated[int, Field(ge=1)] = 5


class WebhookSettings(BaseModel):
    """The upstream work-order centre. The HMAC key comes from the environment variable
    named by ``secret_env`` (never from this file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None  # None: webhooks off (no webhook deliveries are queued)
    secret_env: str = "GRIDWATCH_WEBHOOK_SECRET"
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 10
    backoff_base_s: Annotated[float, Field(gt=0)] = 5.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 3600.0
    interval_s: Annotated[float, Field(gt=0)] = 5.0


class AuthSettings(BaseModel):
    """Console sign-in: session lifetime, the cookie's Secure flag and the failed-login
    throttle (per username and per client address)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_ttl_s: PositiveSeconds = 8 * 3600  # a session ends this long after login
    # None: Secure when the request came over https (behind a TLS proxy, run uvicorn with
    # --proxy-headers); true/false: always/never
    secure_cookie: bool | None = None
    max_failures_per_user: Annotated[int, Field(ge=1, le=1000)] = 5
    max_failures_per_address: Annotated[int, Field(ge=1, le=100000)] = 20
    failure_window_s: PositiveSeconds = 900
    lockout_s: PositiveSeconds = 900


class ChangeLogSettings(BaseModel):
    """How long ``GET /events`` can resume: committed changes are kept in the ticket
    database for ``retention_s`` (by the change's time) and at most ``max_rows`` of them;
    a client resuming from an older id gets ``event: reset`` (reload, then listen on).
    The API's workers prune every ``prune_interval_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_s: PositiveSeconds = 86400
    max_rows: Annotated[int, Field(ge=1, le=100_000_000)] = 100_000
    prune_interval_s: Annotated[float, Field(gt=0, le=86400)] = 60.0


class TicketingSettings(BaseModel):
    """The ``ticketing:`` section of the root config (documented in default.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sla_s: dict[Priority, Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: dict(DEFAULT_SLA_S))
    # operator review's own target: a ticket waiting for review is due this long after
    # the centre received it (or after a recall); the unit's clock starts at dispatch
    review_sla_s: PositiveSeconds = 1800
    # the registry of departments (id -> names, level, units served, webhook)
    departments: dict[DepartmentId, Department] = Field(
        default_factory=lambda: dict(DEFAULT_DEPARTMENTS))
    routing_overrides: list[RoutingOverride] = Field(default_factory=list)
    # sqlite:///path, postgresql://user@host/db; None: the runtime's default SQLite file.
    # A password belongs in GRIDWATCH_TICKETS_URL (environment), not here.
    storage_url: str | None = None
    escalation: EscalationSettings = EscalationSettings()
    review: ReviewSettings = ReviewSettings()
    webhook: WebhookSettings = WebhookSettings()
    # Redis for live-update fan-out between API replicas; None: in-process only.
    redis_url: str | None = None
    change_log: ChangeLogSettings = ChangeLogSettings()
    max_page_size: Annotated[int, Field(ge=1, le=10000)] = 500
    auth: AuthSettings = AuthSettings()
    # GET /tickets pages kept encoded per API process, reused until any ticket changes
    # (0: off)
    list_cache_entries: Annotated[int, Field(ge=0, le=100_000)] = 256
