"""The root config of a GridWatch process, loaded from YAML.

``configs/default.yaml`` is the documented default; a user's ``--config FILE`` is merged
over it (mappings merge key by key, so a file that only changes ``kinds.smoke.window_s``
keeps every other default). Unknown keys and wrong values fail at start-up with the file
and the field path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gridwatch.errors import UserError
from stream.hotspot import HotspotSettings
from stream.policy import KindPolicy, PolicyBook, StreamSettings
from ticketing.config import TicketingSettings

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


class ConfigError(UserError):
    """A config file that cannot be read or does not validate; names file and field."""


class GridWatchConfig(BaseModel):
    """Everything one process needs; passed into constructors, never read at import."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: StreamSettings = StreamSettings()
    kinds: dict[str, KindPolicy] = Field(default_factory=dict)
    default_kind: KindPolicy = KindPolicy()
    hotspot: HotspotSettings = HotspotSettings()
    ticketing: TicketingSettings = TicketingSettings()

    @property
    def policies(self) -> PolicyBook:
        return PolicyBook(kinds=self.kinds, default_kind=self.default_kind)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge recursively, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, "
                          f"got {type(data).__name__}")
    return data


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "<top level>"
        parts.append(f"{field}: {error['msg']}")
    return f"{source}: " + "; ".join(parts)


def load_config(path: str | Path | None = None) -> GridWatchConfig:
    """The default config, with ``path`` (if given) merged over it."""
    data = read_yaml_mapping(DEFAULT_CONFIG_PATH) if DEFAULT_CONFIG_PATH.exists() else {}
    source = str(DEFAULT_CONFIG_PATH)
    if path is not None:
        data = deep_merge(data, read_yaml_mapping(Path(path)))
        source = str(path)
    try:
        return GridWatchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
