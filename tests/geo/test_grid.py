"""Grid contract: loading, validation errors by feature, point lookups, neighbours."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geo.grid import Grid, GridError
from tests.builders import make_grid, make_grid_geojson, square


def _fc(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def _feature(cell_id, geometry, **props):
    return {"type": "Feature", "properties": {"cell_id": cell_id, **props},
            "geometry": geometry}


DONUT = _feature("DONUT", {"type": "Polygon", "coordinates": [
    [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]],
    [[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]],  # the hole
]})
ISLANDS = _feature("ISLANDS", {"type": "MultiPolygon", "coordinates": [
    square(10, 10), square(12, 10)]})
LAKE = _feature("LAKE", {"type": "Polygon", "coordinates": square(1.5, 1.5)})


@pytest.mark.parametrize(
    ("lon", "lat", "expected"),
    [
        (0.5, 0.5, "DONUT"),  # inside the ring
        (2.0, 2.0, "LAKE"),  # in the hole, where another cell sits
        (1.2, 1.2, None),  # in the hole, no other cell: out of area
        (10.5, 10.5, "ISLANDS"),  # first part of a multipolygon
        (12.5, 10.5, "ISLANDS"),  # second part
        (11.5, 10.5, None),  # between the parts
        (4.0, 2.0, "DONUT"),  # on the outer border
        (-5.0, -5.0, None),  # far outside
    ],
)
def test_lookup_holes_multipolygons_borders_outside(lon, lat, expected):
    grid = Grid.from_geojson(_fc(DONUT, ISLANDS, LAKE))
    cell = grid.cell_at(lon, lat)
    assert (cell.cell_id if cell else None) == expected


def test_point_on_shared_border_goes_to_the_first_cell_deterministically():
    grid = make_grid(3, 1)  # C00, C10, C20 side by side
    # x = 1.0 is the border of C00 and C10, x = 2.0 of C10 and C20
    assert grid.lookup_ids([1.0, 2.0, 1.0], [0.5, 0.5, 0.5]) == ["C00", "C10", "C00"]


def test_bulk_lookup_matches_point_lookup():
    grid = make_grid(3, 3)
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(-0.5, 3.5, 500), rng.uniform(-0.5, 3.5, 500)
    bulk = grid.lookup_ids(lon, lat)
    one_by_one = [(c.cell_id if (c := grid.cell_at(x, y)) else None)
                  for x, y in zip(lon, lat, strict=True)]
    assert bulk == one_by_one
    assert None in bulk and "C11" in bulk


def test_lookup_of_empty_batch():
    assert make_grid().lookup(np.array([]), np.array([])).shape == (0,)


def test_neighbours_share_an_edge_or_a_corner():
    grid = make_grid(3, 3)
    assert grid.neighbours("C11") == {"C00", "C01", "C02", "C10", "C12", "C20", "C21", "C22"}
    assert grid.neighbours("C00") == {"C01", "C10", "C11"}


def test_admin_hierarchy():
    grid = make_grid(3, 3)
    tree = grid.hierarchy()
    assert sorted(tree["D1"]) == ["TownA", "TownB"]
    assert tree["D1"]["TownB"]["V2"] == ["C20", "C21", "C22"]
    assert [c.cell_id for c in grid.cells_in(town="TownA", village="V1")] == \
        ["C10", "C11", "C12"]
    assert grid["C21"].admin_unit("town") == "TownB"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "Feature"}, "expected a GeoJSON FeatureCollection"),
        (_fc(), "the grid has no cells"),
        (_fc({"type": "Feature", "properties": {},
              "geometry": {"type": "Polygon", "coordinates": square(0, 0)}}),
         "feature 0: properties.cell_id is required"),
        (_fc(_feature("A", {"type": "Polygon", "coordinates": square(0, 0)}),
             _feature("A", {"type": "Polygon", "coordinates": square(1, 0)})),
         "feature 1 (cell_id 'A'): duplicate cell_id (first at feature 0)"),
        (_fc(_feature("BOW", {"type": "Polygon",
                              "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]})),
         "feature 0 (cell_id 'BOW'): invalid polygon: Self-intersection"),
        (_fc(_feature("PT", {"type": "Point", "coordinates": [0, 0]})),
         "feature 0 (cell_id 'PT'): geometry must be a Polygon or MultiPolygon"),
        (_fc(_feature("XY", {"type": "Polygon", "coordinates": square(500000, 2500000)})),
         "feature 0 (cell_id 'XY'): coordinates outside WGS84"),
        (_fc(_feature("T", {"type": "Polygon", "coordinates": square(0, 0)}, town=5)),
         "feature 0 (cell_id 'T'): properties.town must be a string"),
        (_fc(_feature("E", {"type": "Polygon", "coordinates": [[[0, 0], [1, 0]]]})),
         "feature 0 (cell_id 'E'):"),
    ],
)
def test_invalid_grids_name_the_feature(data, message):
    with pytest.raises(GridError) as info:
        Grid.from_geojson(data)
    assert message in str(info.value)


def test_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.geojson"
    with pytest.raises(GridError, match="nope.geojson: cannot read grid file"):
        Grid.from_file(missing)
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(GridError, match="broken.geojson: not valid JSON"):
        Grid.from_file(broken)
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(_fc({"type": "Feature", "properties": {"name": "x"},
                                   "geometry": None})))
    with pytest.raises(GridError, match=r"bad.geojson: feature 0: properties.cell_id"):
        Grid.from_file(bad)


def test_optional_properties_and_extras_are_kept():
    grid = Grid.from_geojson(make_grid_geojson(1, 1))
    cell = grid["C00"]
    assert (cell.district, cell.town, cell.village) == ("D1", "TownA", "V0")
    assert 0 < cell.lon_lat[0] < 1 and 0 < cell.lon_lat[1] < 1


# Threads that build the neighbour table (a worker's stage threads each build a hot-spot
# engine) and look points up at the same time, on one fresh grid, many times. Without the
# grid's lock GEOS crashed the process (SIGSEGV) within the first rounds of every run; in a child
# process so that a crash fails this test instead of ending the run.
_THREADED_QUERIES = """
import sys, threading
import numpy as np
from geo.grid import Grid
for round_ in range(15):
    grid = Grid.from_file(sys.argv[1])
    start = threading.Barrier(5)
    tables = []
    def build():
        start.wait()
        first = grid.neighbours(grid.cells[0].cell_id)
        grid._neighbours = None  # the next thread builds it again
        tables.append((first, grid.neighbours(grid.cells[-1].cell_id)))
    def look():
        start.wait()
        rng = np.random.default_rng(round_)
        grid.lookup(rng.uniform(113.0, 113.3, 2000), rng.uniform(22.9, 23.2, 2000))
    threads = [threading.Thread(target=build) for _ in range(4)]
    threads.append(threading.Thread(target=look))
    for t in threads: t.start()
    for t in threads: t.join()
    assert len(tables) == 4 and len(set(tables)) == 1, tables
print("ok")
"""


def test_threads_may_query_one_grid_at_once():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _THREADED_QUERIES,
                           str(root / "sample_data" / "grid.geojson")],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "ok"
