"""Reading YAML config files into pydantic models, with errors that name the file and the
field path.

Every process's root config (the centre's ``gridwatch.config``, the edge box's
``edge.config``, a camera's ``detectors.camera``) is read through these three functions::

    data = read_yaml_mapping(Path("station.yaml"))        # ConfigFileError names the line
    config = validate_config(StationConfig, data, "station.yaml")  # ... or the field path

It lives in ``configs``, beside the shipped config files, because every package may import
``configs`` and ``configs`` imports nothing of ours."""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not validate; the message says which
    file, and the line or field path."""


def read_yaml_mapping(path: Path | Traversable) -> dict[str, Any]:
    """A YAML file (or package resource) whose top level is a mapping (an empty file is
    ``{}``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping at the top level, "
                              f"got {type(data).__name__}")
    return data


def format_validation_error(source: str, exc: ValidationError) -> str:
    """``source: a.b.c: message; d: message`` for every error pydantic found."""
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"])
        # a check across fields (a model validator) names its own paths in the message
        parts.append(f"{field}: {error['msg']}" if field else error["msg"])
    return f"{source}: " + "; ".join(parts)


def validate_config(model: type[M], data: dict[str, Any], source: str) -> M:
    """``model.model_validate(data)``, failing with :class:`ConfigFileError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(format_validation_error(source, exc)) from None
