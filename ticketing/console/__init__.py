"""The command-centre console: a web page served by the ticketing API at ``/``.

Plain ES modules, CSS and SVG in ``static/`` (package data: no build step, no CDN, no
web fonts); the page talks to the same API as every other client, signed in with a
named account's session cookie. :mod:`ticketing.console.mapdata` turns the grid into
what the map draws.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def static_dir() -> Path:
    """The folder of the console's assets (inside the installed package)."""
    return Path(str(files("ticketing.console") / "static"))
