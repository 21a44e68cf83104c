"""What the console's map draws: the grid's cells (with their neighbours, for merge
candidates) and the outlines of its towns and villages, as one JSON document.

Pure over a :class:`~geo.grid.Grid`; coordinates are rounded to 6 decimals (about 0.1 m)
so that 10,000 cells stay a few megabytes.

>>> from geo.grid import Grid
>>> square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
>>> grid = Grid.from_geojson({"type": "FeatureCollection", "features": [
...     {"type": "Feature", "geometry": square,
...      "properties": {"cell_id": "A", "town": "T", "village": "V"}}]})
>>> data = map_data(grid)
>>> [c["cell_id"] for c in data["cells"]], [b["name"] for b in data["towns"]]
(['A'], ['T'])
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon

from geo.grid import Grid

DECIMALS = 6


def _rings(geometry: Polygon | MultiPolygon) -> list[list[list[float]]]:
    """Every ring (exterior and holes) as ``[[lon, lat], ...]``."""
    polygons = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    rings: list[list[list[float]]] = []
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.interiors):
            rings.append([[round(x, DECIMALS), round(y, DECIMALS)] for x, y in ring.coords])
    return rings


def _outlines(grid: Grid, level: str) -> list[dict[str, Any]]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, cell in enumerate(grid.cells):
        name = cell.admin_unit(level)
        if name:
            members[name].append(i)
    out = []
    for name in sorted(members):
        merged = shapely.union_all(grid.geometries[members[name]], grid_size=1e-7)
        merged = shapely.simplify(merged, 0)  # drop the inner cells' corners on a straight edge
        parts = [g for g in getattr(merged, "geoms", [merged])
                 if isinstance(g, Polygon | MultiPolygon)]
        rings = [r for part in parts for r in _rings(part)]
        out.append({"name": name, "rings": rings, "cells": len(members[name])})
    return out


def map_data(grid: Grid) -> dict[str, Any]:
    """``{"bbox": [min_lon, min_lat, max_lon, max_lat], "cells": [...], "towns": [...],
    "villages": [...]}``; a cell is ``cell_id``, ``name``, ``district``, ``town``,
    ``village``, ``rings`` and ``neighbours`` (cell ids sharing an edge or corner)."""
    min_x, min_y, max_x, max_y = shapely.total_bounds(grid.geometries)
    cells = []
    for cell, geometry in zip(grid.cells, grid.geometries, strict=True):
        cells.append({"cell_id": cell.cell_id, "name": cell.name, "district": cell.district,
                      "town": cell.town, "village": cell.village,
                      "rings": _rings(geometry),
                      "neighbours": sorted(grid.neighbours(cell.cell_id))})
    return {"bbox": [round(float(v), DECIMALS) for v in (min_x, min_y, max_x, max_y)],
            "cells": cells, "towns": _outlines(grid, "town"),
            "villages": _outlines(grid, "village")}


__all__ = ["map_data"]
