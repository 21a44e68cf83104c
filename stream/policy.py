"""Per-kind policy: how detections of a kind become tickets, and who handles them.

One block per kind in ``configs/default.yaml`` (``kinds:``). A kind without a block is
handled by ``default_kind`` (operator review), so a new plug-in works before anyone edits
config.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geo.admin import Level


class Mode(str, Enum):
    INCIDENT = "incident"  # acute: cluster into incidents, one ticket per open incident chain
    HOTSPOT = "hotspot"  # chronic: count occurrences, ticket only a significant excess


Priority = Literal["P1", "P2", "P3", "P4"]
Seconds = Annotated[int, Field(ge=0, le=365 * 86400)]


class KindPolicy(BaseModel):
    """What to do with one kind. Every field has a documented default in default.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str | None = None
    mode: Mode = Mode.INCIDENT
    window_s: Seconds = 600
    source_cooldown_s: Seconds = 0
    track_ttl_s: Seconds = 120
    merge_across_sources_s: Seconds = 0
    merge_radius_m: Annotated[float, Field(ge=0)] = 30.0
    level: Level = Level.TOWN
    department: str = "command_centre"
    priority: Priority = "P3"
    sla_s: Seconds | None = None
    auto_dispatch: bool = False
    review_below_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5


class StreamSettings(BaseModel):
    """Event-time handling shared by all kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lateness_s: Seconds = 600
    dedup_horizon_s: Annotated[int, Field(ge=60)] = 2 * 86400
    # live runtimes only (replay keeps the file's own time): a detection observed more
    # than this far ahead of the centre's receive time is refused as clock_skew ...
    max_future_s: Seconds = 300
    # ... or more than this long before it (None: dedup_horizon_s, the longest a re-sent
    # detection can still be recognised by its event id)
    max_age_s: Annotated[int, Field(ge=60)] | None = None

    @property
    def age_limit_s(self) -> int:
        """``max_age_s``, or ``dedup_horizon_s`` when it is not set."""
        return self.dedup_horizon_s if self.max_age_s is None else self.max_age_s

    @model_validator(mode="after")
    def _age_within_horizon(self) -> StreamSettings:
        if self.max_age_s is not None and self.max_age_s > self.dedup_horizon_s:
            raise ValueError(
                f"expected max_age_s <= dedup_horizon_s ({self.dedup_horizon_s}), got "
                f"{self.max_age_s}: an older detection could not be recognised if re-sent")
        return self


class PolicyBook(BaseModel):
    """The ``kinds`` table plus the default for kinds nobody configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: dict[str, KindPolicy] = Field(default_factory=dict)
    default_kind: KindPolicy = KindPolicy()

    def for_kind(self, kind: str) -> KindPolicy:
        return self.kinds.get(kind, self.default_kind)

    def is_known(self, kind: str) -> bool:
        return kind in self.kinds
