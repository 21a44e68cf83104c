"""Ticketing settings: SLA deadlines by priority and routing overrides."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from stream.policy import Level, Priority


class RoutingOverride(BaseModel):
    """Send a kind somewhere else in some towns/districts (per-town arrangements)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str | None = None  # None: every kind
    district: str | None = None
    town: str | None = None
    department: str | None = None
    level: Level | None = None


class TicketingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sla_s: dict[Priority, Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: {"P1": 2 * 3600, "P2": 24 * 3600, "P3": 72 * 3600,
                                 "P4": 7 * 86400}
    )
    routing_overrides: list[RoutingOverride] = Field(default_factory=list)
