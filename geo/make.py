"""Build a square grid for users who have no grid file of their own."""

from __future__ import annotations

import math
from typing import Any

import shapely
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

METRES_PER_DEGREE_LAT = 111_320.0


def square_cells(
    area: BaseGeometry,
    *,
    size_m: float,
    prefix: str = "G",
) -> list[tuple[str, int, int, Polygon]]:
    """Square cells of ``size_m`` metres covering ``area`` (clipped to it).

    Returns ``(cell_id, row, col, polygon)``; ids are ``<prefix><row:04d><col:04d>`` with
    row 0 at the south edge. Sizes use a local equirectangular approximation at the
    area's mid latitude, good to well under 1 % for city-sized areas.
    """
    if size_m <= 0:
        raise ValueError(f"expected size_m > 0, got {size_m}")
    if area.is_empty:
        raise ValueError("expected a non-empty area")
    minx, miny, maxx, maxy = area.bounds
    mid_lat = (miny + maxy) / 2.0
    dlat = size_m / METRES_PER_DEGREE_LAT
    dlon = size_m / (METRES_PER_DEGREE_LAT * max(math.cos(math.radians(mid_lat)), 1e-6))
    rows = max(1, math.ceil((maxy - miny) / dlat - 1e-9))
    cols = max(1, math.ceil((maxx - minx) / dlon - 1e-9))
    if rows * cols > 2_000_000:
        raise ValueError(f"expected at most 2,000,000 cells, {rows} x {cols} asked for: "
                         f"use a larger size_m")
    is_box = area.equals(box(minx, miny, maxx, maxy))
    shapely.prepare(area)
    out = []
    for r in range(rows):
        for c in range(cols):
            cell = box(minx + c * dlon, miny + r * dlat,
                       minx + (c + 1) * dlon, miny + (r + 1) * dlat)
            if not is_box:
                if not area.intersects(cell):
                    continue
                clipped = area.intersection(cell)
                if clipped.is_empty or clipped.area <= 0:
                    continue
                if clipped.geom_type not in ("Polygon", "MultiPolygon"):
                    continue
                cell = clipped
            out.append((f"{prefix}{r:04d}{c:04d}", r, c, cell))
    return out


def square_grid(
    area: BaseGeometry,
    *,
    size_m: float,
    prefix: str = "G",
    district: str | None = None,
) -> dict[str, Any]:
    """A grid FeatureCollection (the grid contract) of square cells over ``area``."""
    features = []
    for cell_id, row, col, polygon in square_cells(area, size_m=size_m, prefix=prefix):
        props: dict[str, Any] = {"cell_id": cell_id, "name": f"row {row} col {col}"}
        if district:
            props["district"] = district
        geometry = mapping(shapely.set_precision(polygon, 1e-7))
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
    return {"type": "FeatureCollection", "features": features}
