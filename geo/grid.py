"""The grid: a FeatureCollection of cells (RFC 7946, ``[lon, lat]``) and fast lookups.

>>> grid = Grid.from_geojson({"type": "FeatureCollection", "features": [{
...     "type": "Feature", "properties": {"cell_id": "C1", "town": "Guicheng"},
...     "geometry": {"type": "Polygon",
...                  "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}}]})
>>> grid.cell_at(0.5, 0.5).cell_id
'C1'
>>> grid.cell_at(5, 5) is None
True
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.strtree import STRtree

from geo.admin import LEVEL_NAMES

OPTIONAL_PROPERTIES = ("name", "district", "town", "village", "grid_worker")


class GridError(ValueError):
    """A grid file that does not meet the grid contract; the message says where."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One grid cell with its administrative units (any of which may be unknown)."""

    cell_id: str
    name: str | None = None
    district: str | None = None
    town: str | None = None
    village: str | None = None
    grid_worker: str | None = None
    lon_lat: tuple[float, float] = (0.0, 0.0)  # a point inside the cell (representative)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def admin_unit(self, level: str) -> str | None:
        """The cell's unit at ``level`` (``village``, ``town`` or ``district``; a
        :class:`geo.admin.Level` is one of these)."""
        if level not in LEVEL_NAMES:
            raise ValueError(f"expected level in {LEVEL_NAMES}, got {level!r}")
        value: str | None = getattr(self, level)
        return value


def _feature_error(index: int, cell_id: object, problem: str) -> GridError:
    ident = f" (cell_id {cell_id!r})" if cell_id is not None else ""
    return GridError(f"feature {index}{ident}: {problem}")


class Grid:
    """Cells, an STRtree over their polygons, and their adjacency.

    Build it with :meth:`from_geojson` or :meth:`from_file`; the constructor takes cells
    and geometries already checked.

    Safe to share between threads: the spatial queries run one at a time. GEOS builds a
    prepared polygon's indexes on its first use and shapely releases the GIL around
    queries, so two threads querying the same cells at once could crash the process
    (a worker's stage threads building their neighbour tables did: a segfault in GEOS).
    """

    def __init__(self, cells: list[Cell], geometries: list[Polygon | MultiPolygon]) -> None:
        if len(cells) != len(geometries):
            raise ValueError(f"expected one geometry per cell, got {len(cells)} cells "
                             f"and {len(geometries)} geometries")
        if not cells:
            raise GridError("the grid has no cells")
        self.cells = cells
        self.geometries = np.asarray(geometries, dtype=object)
        self._index = {cell.cell_id: i for i, cell in enumerate(cells)}
        shapely.prepare(self.geometries)
        self._tree = STRtree(self.geometries)
        self._geos = threading.Lock()  # see the class
        self._neighbours: dict[str, frozenset[str]] | None = None

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> Grid:
        """Load a grid GeoJSON file; errors name the file and the feature."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise GridError(f"{path}: cannot read grid file: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GridError(f"{path}: not valid JSON: {exc}") from None
        try:
            return cls.from_geojson(data)
        except GridError as exc:
            raise GridError(f"{path}: {exc}") from None

    @classmethod
    def from_geojson(cls, data: Mapping[str, Any]) -> Grid:
        """Validate a FeatureCollection per the grid contract and build the grid."""
        if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
            raise GridError("expected a GeoJSON FeatureCollection")
        features = data.get("features")
        if not isinstance(features, list):
            raise GridError("expected 'features' to be a list")
        cells: list[Cell] = []
        geometries: list[Polygon | MultiPolygon] = []
        seen: dict[str, int] = {}
        for index, feature in enumerate(features):
            cell, geometry = _parse_feature(index, feature)
            if cell.cell_id in seen:
                raise _feature_error(index, cell.cell_id,
                                     f"duplicate cell_id (first at feature {seen[cell.cell_id]})")
            seen[cell.cell_id] = index
            cells.append(cell)
            geometries.append(geometry)
        return cls(cells, geometries)

    # -- lookups ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cells)

    def __contains__(self, cell_id: object) -> bool:
        return cell_id in self._index

    def __getitem__(self, cell_id: str) -> Cell:
        return self.cells[self._index[cell_id]]

    def get(self, cell_id: str) -> Cell | None:
        i = self._index.get(cell_id)
        return None if i is None else self.cells[i]

    def geometry(self, cell_id: str) -> Polygon | MultiPolygon:
        return self.geometries[self._index[cell_id]]  # type: ignore[no-any-return]

    def lookup(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Cell index for each point (``-1`` outside every cell), one bulk STRtree query.

        A point on a shared border belongs to the cell with the lowest index, so the
        answer is deterministic. Points in a polygon's hole are outside it.
        """
        lon = np.asarray(lon, dtype=float)
        lat = np.asarray(lat, dtype=float)
        result = np.full(lon.shape[0], -1, dtype=np.int64)
        if lon.shape[0] == 0:
            return result
        points = shapely.points(lon, lat)
        with self._geos:
            point_idx, cell_idx = self._tree.query(points, predicate="intersects")
        if point_idx.size:
            # keep the lowest cell index per point: sort by (point, cell), take the first
            order = np.lexsort((cell_idx, point_idx))
            point_idx, cell_idx = point_idx[order], cell_idx[order]
            first = np.ones(point_idx.shape[0], dtype=bool)
            first[1:] = point_idx[1:] != point_idx[:-1]
            result[point_idx[first]] = cell_idx[first]
        return result

    def lookup_ids(self, lon: Iterable[float], lat: Iterable[float]) -> list[str | None]:
        """Like :meth:`lookup` but returns cell ids (``None`` outside)."""
        idx = self.lookup(np.fromiter(lon, dtype=float), np.fromiter(lat, dtype=float))
        return [self.cells[i].cell_id if i >= 0 else None for i in idx]

    def cell_at(self, lon: float, lat: float) -> Cell | None:
        """The cell containing one point, or ``None`` when it is out of area."""
        i = int(self.lookup(np.array([lon]), np.array([lat]))[0])
        return self.cells[i] if i >= 0 else None

    # -- topology -----------------------------------------------------------------------
    def neighbours(self, cell_id: str) -> frozenset[str]:
        """Cells that share a border or a corner with ``cell_id`` (not the cell itself)."""
        if self._neighbours is None:
            with self._geos:
                if self._neighbours is None:  # another thread may have built them
                    self._neighbours = self._build_neighbours()
        return self._neighbours[cell_id]

    def _build_neighbours(self) -> dict[str, frozenset[str]]:
        # under self._geos
        left, right = self._tree.query(self.geometries, predicate="touches")
        adjacency: dict[str, set[str]] = {cell.cell_id: set() for cell in self.cells}
        # overlapping cells (a sloppy grid) count as neighbours too
        o_left, o_right = self._tree.query(self.geometries, predicate="overlaps")
        for a, b in zip(np.concatenate([left, o_left]), np.concatenate([right, o_right]),
                        strict=True):
            if a != b:
                adjacency[self.cells[a].cell_id].add(self.cells[b].cell_id)
        return {k: frozenset(v) for k, v in adjacency.items()}

    # -- administrative hierarchy -------------------------------------------------------
    def cells_in(self, *, district: str | None = None, town: str | None = None,
                 village: str | None = None) -> list[Cell]:
        """Cells under the given administrative units (all given filters must match)."""
        return [c for c in self.cells
                if (district is None or c.district == district)
                and (town is None or c.town == town)
                and (village is None or c.village == village)]

    def hierarchy(self) -> dict[str, dict[str, dict[str, list[str]]]]:
        """``{district: {town: {village: [cell_id, ...]}}}`` (unknown units as ``""``)."""
        tree: dict[str, dict[str, dict[str, list[str]]]] = {}
        for c in self.cells:
            (tree.setdefault(c.district or "", {})
                 .setdefault(c.town or "", {})
                 .setdefault(c.village or "", [])
                 .append(c.cell_id))
        return tree


def _parse_feature(index: int, feature: Any) -> tuple[Cell, Polygon | MultiPolygon]:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise _feature_error(index, None, "expected a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise _feature_error(index, None, "expected 'properties' to be an object")
    cell_id = props.get("cell_id")
    if not isinstance(cell_id, str) or not cell_id:
        raise _feature_error(index, cell_id, "properties.cell_id is required "
                             "(a non-empty string)")
    for key in OPTIONAL_PROPERTIES:
        value = props.get(key)
        if value is not None and not isinstance(value, str):
            raise _feature_error(index, cell_id,
                                 f"properties.{key} must be a string, got {type(value).__name__}")
    geom_json = feature.get("geometry")
    if not isinstance(geom_json, Mapping) or geom_json.get("type") not in ("Polygon",
                                                                            "MultiPolygon"):
        got = geom_json.get("type") if isinstance(geom_json, Mapping) else geom_json
        raise _feature_error(index, cell_id, f"geometry must be a Polygon or MultiPolygon, "
                             f"got {got!r}")
    try:
        geometry = shape(geom_json)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise _feature_error(index, cell_id, f"unreadable geometry: {exc}") from None
    if geometry.is_empty:
        raise _feature_error(index, cell_id, "geometry is empty")
    if not geometry.is_valid:
        reason = shapely.is_valid_reason(geometry)
        raise _feature_error(index, cell_id, f"invalid polygon: {reason}")
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise _feature_error(index, cell_id, "coordinates outside WGS84 lon/lat ranges "
                             "(expected [lon, lat] in degrees)")
    point = geometry.representative_point()
    extra = {k: v for k, v in props.items() if k not in ("cell_id", *OPTIONAL_PROPERTIES)}
    cell = Cell(
        cell_id=cell_id,
        name=props.get("name"),
        district=props.get("district"),
        town=props.get("town"),
        village=props.get("village"),
        grid_worker=props.get("grid_worker"),
        lon_lat=(round(point.x, 7), round(point.y, 7)),
        extra=extra,
    )
    return cell, geometry
