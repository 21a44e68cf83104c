"""The administrative hierarchy: one definition of the levels and their order."""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import pytest

import geo.admin
from geo.admin import LEVEL_NAMES, Level, unit_at
from geo.grid import Cell


@dataclass
class Place:
    village: str | None = None
    town: str | None = None
    district: str | None = None


def test_the_levels_go_from_village_to_district() -> None:
    assert LEVEL_NAMES == ("village", "town", "district")
    assert [level.value for level in Level] == list(LEVEL_NAMES)


@pytest.mark.parametrize(("level", "above", "and_above"), [
    (Level.VILLAGE, Level.TOWN, (Level.VILLAGE, Level.TOWN, Level.DISTRICT)),
    (Level.TOWN, Level.DISTRICT, (Level.TOWN, Level.DISTRICT)),
    (Level.DISTRICT, Level.DISTRICT, (Level.DISTRICT,)),
])
def test_one_level_up_and_the_levels_above(level: Level, above: Level,
                                           and_above: tuple[Level, ...]) -> None:
    assert level.above() is above
    assert level.and_above() == and_above


@pytest.mark.parametrize(("place", "level", "unit"), [
    (Place("Pingzhou", "Guicheng", "Nanhai"), Level.VILLAGE, "Pingzhou"),
    (Place("Pingzhou", "Guicheng", "Nanhai"), Level.TOWN, "Guicheng"),
    (Place("Pingzhou", "Guicheng", "Nanhai"), Level.DISTRICT, "Nanhai"),
    (Place(None, "Guicheng", "Nanhai"), Level.VILLAGE, "Guicheng"),  # nearest above
    (Place("", None, "Nanhai"), Level.VILLAGE, "Nanhai"),  # an empty name is unknown
    (Place("Pingzhou", "Guicheng", None), Level.DISTRICT, None),  # never looks down
    (Place(), Level.VILLAGE, None),
])
def test_the_unit_at_a_level_or_the_nearest_above(place: Place, level: Level,
                                                  unit: str | None) -> None:
    assert unit_at(place, level) == unit


def test_a_grid_cell_is_a_place() -> None:
    cell = Cell(cell_id="C1", district="Nanhai", town="Guicheng")
    assert unit_at(cell, Level.VILLAGE) == "Guicheng"
    assert cell.admin_unit(Level.TOWN) == "Guicheng"
    with pytest.raises(ValueError, match="expected level in .*'village'.*got 'county'"):
        cell.admin_unit("county")


def test_the_module_examples_hold() -> None:
    result = doctest.testmod(geo.admin)
    assert result.attempted > 0 and result.failed == 0
