"""Helpers shared by commands: load a grid or config and turn their errors into one line."""

from __future__ import annotations

from pathlib import Path

from geo.grid import Grid, GridError
from gridwatch.config import GridWatchConfig, load_config
from gridwatch.errors import UserError


def load_grid(path: str | Path) -> Grid:
    try:
        return Grid.from_file(path)
    except GridError as exc:
        raise UserError(str(exc)) from None


def load_gridwatch_config(path: str | Path | None) -> GridWatchConfig:
    return load_config(path)  # ConfigError is a UserError already
