"""``gridwatch grid make``: square grids over a bbox or a polygon."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from shapely.geometry import box, shape

from geo.grid import Grid
from geo.make import square_cells, square_grid


def test_square_grid_over_a_bbox_has_cells_of_the_asked_size():
    area = box(113.10, 23.00, 113.12, 23.02)
    fc = square_grid(area, size_m=500, district="Nanhai")
    grid = Grid.from_geojson(fc)  # valid under the grid contract
    first = shape(fc["features"][0]["geometry"])
    minx, miny, maxx, maxy = first.bounds
    height_m = (maxy - miny) * 111_320
    width_m = (maxx - minx) * 111_320 * math.cos(math.radians(23.01))
    assert height_m == pytest.approx(500, rel=0.01)
    assert width_m == pytest.approx(500, rel=0.01)
    assert len(grid) == 5 * 5  # 2.2 km x 2.05 km rounded up
    assert grid.cells[0].district == "Nanhai"
    # every point of the area falls in some cell
    assert all(grid.cell_at(x, y) for x in (113.1001, 113.1199) for y in (23.0001, 23.0199))


def test_square_grid_over_a_polygon_is_clipped_to_it():
    triangle = shape({"type": "Polygon",
                      "coordinates": [[[0, 0], [0.02, 0], [0, 0.02], [0, 0]]]})
    cells = square_cells(triangle, size_m=500)
    union_area = sum(p.area for *_, p in cells)
    assert union_area == pytest.approx(triangle.area, rel=1e-6)
    assert all(triangle.buffer(1e-9).contains(p) for *_, p in cells)


@pytest.mark.parametrize("size", [0, -5])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="size_m > 0"):
        square_cells(box(0, 0, 1, 1), size_m=size)


def test_cli_make_then_check(tmp_path):
    out = tmp_path / "grid.geojson"
    run = subprocess.run([sys.executable, "-m", "gridwatch", "grid", "make", "--bbox",
                          "113.10,23.00,113.12,23.02", "--size-m", "1000", "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "wrote 9 cells" in run.stdout
    assert len(json.loads(out.read_text())["features"]) == 9
    check = subprocess.run([sys.executable, "-m", "gridwatch", "grid", "check", str(out)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "9 cells" in check.stdout


def test_cli_check_reports_a_bad_grid_in_one_line(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                   '"properties": {"cell_id": "A"}, "geometry": {"type": "Point", '
                   '"coordinates": [0, 0]}}]}')
    run = subprocess.run([sys.executable, "-m", "gridwatch", "grid", "check", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "feature 0 (cell_id 'A'): geometry must be a Polygon" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
