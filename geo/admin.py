"""The administrative hierarchy: village (村居) < town (镇街) < district (区).

"小事村内解决、要事镇街处置、大事区级决策": each kind of work order names the level that
handles it; a grid cell (``geo.grid.Cell``) and a ticket carry their unit at each level.
This is the one definition of the levels and their order; the stream's per-kind policy,
routing, the ticket lifecycle and the API all import it from here.

>>> Level.VILLAGE.above()
<Level.TOWN: 'town'>
>>> Level.DISTRICT.above()
<Level.DISTRICT: 'district'>
>>> class Place:
...     village, town, district = None, "Guicheng", "Nanhai"
>>> unit_at(Place(), Level.VILLAGE)  # no village known: the nearest unit above
'Guicheng'
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class Level(str, Enum):
    """An administrative level, lowest first (the members' order is the hierarchy)."""

    VILLAGE = "village"
    TOWN = "town"
    DISTRICT = "district"

    def above(self) -> Level:
        """One level up (village → town → district); district stays district."""
        order = list(Level)
        return order[min(order.index(self) + 1, len(order) - 1)]

    def and_above(self) -> tuple[Level, ...]:
        """This level and every level above it, lowest first."""
        order = list(Level)
        return tuple(order[order.index(self):])


#: The level names, lowest first (``("village", "town", "district")``).
LEVEL_NAMES: tuple[str, ...] = tuple(level.value for level in Level)


class HasAdminUnits(Protocol):
    """Anything that knows its unit at each level (a grid cell, a ticket)."""

    @property
    def village(self) -> str | None: ...

    @property
    def town(self) -> str | None: ...

    @property
    def district(self) -> str | None: ...


def unit_at(place: HasAdminUnits, level: Level) -> str | None:
    """``place``'s unit at ``level``, or the nearest known unit above it (``None`` when
    no unit at or above ``level`` is known)."""
    for name in level.and_above():
        unit: str | None = getattr(place, name.value)
        if unit:
            return unit
    return None
