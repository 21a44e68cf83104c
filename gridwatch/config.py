"""The root config of a GridWatch process, loaded from YAML.

``configs/default.yaml`` is the documented default, shipped as package data (the
``configs`` package) and read through :mod:`importlib.resources`, so an installed wheel
reads the same file as a checkout. A user's ``--config FILE`` is merged over it (mappings
merge key by key, so a file that only changes ``kinds.smoke.window_s`` keeps every other
default). Unknown keys and wrong values fail at start-up with the file and the field path.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from configs.reader import ConfigFileError, read_yaml_mapping, validate_config
from gridwatch.errors import UserError
from stream.hotspot import HotspotSettings
from stream.policy import KindPolicy, PolicyBook, StreamSettings
from ticketing.config import TicketingSettings
from ticketing.departments import config_errors
from ticketing.evidence import EvidenceSettings

DEFAULT_CONFIG_PACKAGE = "configs"
DEFAULT_CONFIG_NAME = "default.yaml"


def default_config_file() -> Traversable:
    """The packaged ``configs/default.yaml`` (it must exist: without it every kind would
    lose its policy, so its absence is an error, never an empty configuration)."""
    try:
        return resources.files(DEFAULT_CONFIG_PACKAGE) / DEFAULT_CONFIG_NAME
    except ModuleNotFoundError:
        raise ConfigFileError(
            f"the default configuration ({DEFAULT_CONFIG_PACKAGE}/{DEFAULT_CONFIG_NAME}) "
            f"is not installed: reinstall gridwatch") from None


class ConfigError(UserError, ConfigFileError):
    """A config file that cannot be read or does not validate; names file and field."""


class GridWatchConfig(BaseModel):
    """Everything one process needs; passed into constructors, never read at import."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: StreamSettings = StreamSettings()
    kinds: dict[str, KindPolicy] = Field(default_factory=dict)
    default_kind: KindPolicy = KindPolicy()
    hotspot: HotspotSettings = HotspotSettings()
    ticketing: TicketingSettings = TicketingSettings()
    evidence: EvidenceSettings = EvidenceSettings()

    @property
    def policies(self) -> PolicyBook:
        return PolicyBook(kinds=self.kinds, default_kind=self.default_kind)

    @model_validator(mode="after")
    def _departments_exist(self) -> GridWatchConfig:
        # every kind's / override's department must be in ticketing.departments: a work
        # order sent to an unknown unit is invisible to everyone who could handle it
        errors = config_errors(
            self.policies, registry=self.ticketing.departments,
            override_departments=[r.department for r in self.ticketing.routing_overrides])
        if errors:
            raise PydanticCustomError("unknown_department", "; ".join(errors))
        return self


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge recursively, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None) -> GridWatchConfig:
    """The default config, with ``path`` (if given) merged over it."""
    try:
        default = default_config_file()
        data = read_yaml_mapping(default)
        source = str(default)
        if path is not None:
            data = deep_merge(data, read_yaml_mapping(Path(path)))
            source = str(path)
        return validate_config(GridWatchConfig, data, source)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
