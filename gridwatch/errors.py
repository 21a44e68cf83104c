"""Errors the CLI turns into one clear line and a non-zero exit (no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: a missing file, a broken config, a bad argument.

    The message must say what is wrong and where (file, field path, line).
    """
