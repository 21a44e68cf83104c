"""``gridwatch grid make|check``: build a square grid, or validate a grid file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gridwatch.commands._common import load_grid
from gridwatch.errors import UserError


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MINLON,MINLAT,MAXLON,MAXLAT, got {text!r}") from None
    if len(values) != 4 or values[0] >= values[2] or values[1] >= values[3]:
        raise argparse.ArgumentTypeError(
            f"expected MINLON,MINLAT,MAXLON,MAXLAT with min < max, got {text!r}")
    return values  # type: ignore[return-value]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("grid", help="make or check a grid GeoJSON")
    sub = parser.add_subparsers(dest="grid_command", required=True, metavar="ACTION")
    make = sub.add_parser("make", help="square cells over a bbox or polygon")
    area = make.add_mutually_exclusive_group(required=True)
    area.add_argument("--bbox", type=_bbox, metavar="MINLON,MINLAT,MAXLON,MAXLAT")
    area.add_argument("--polygon", type=Path, metavar="AREA.geojson",
                      help="a GeoJSON Polygon/MultiPolygon (geometry, Feature or "
                           "FeatureCollection: the union of its polygons)")
    make.add_argument("--size-m", type=float, required=True, help="cell edge in metres")
    make.add_argument("--prefix", default="G", help="cell id prefix (default G)")
    make.add_argument("--district", help="district name written on every cell")
    make.add_argument("--out", type=Path, required=True, metavar="GRID.geojson")
    make.set_defaults(func=run_make)
    check = sub.add_parser("check", help="validate a grid file and print its outline")
    check.add_argument("grid", type=Path, metavar="GRID.geojson")
    check.set_defaults(func=run_check)


def _read_area(path: Path) -> Any:
    from shapely.geometry import shape
    from shapely.ops import unary_union

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from None
    if data.get("type") == "FeatureCollection":
        geoms = [f.get("geometry") for f in data.get("features", [])]
    elif data.get("type") == "Feature":
        geoms = [data.get("geometry")]
    else:
        geoms = [data]
    try:
        shapes = [shape(g) for g in geoms if g]
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: unreadable geometry: {exc}") from None
    polys = [s for s in shapes if s.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise UserError(f"{path}: expected at least one Polygon or MultiPolygon")
    return unary_union(polys)


def run_make(args: argparse.Namespace) -> int:
    from shapely.geometry import box

    from geo.make import square_grid

    area = box(*args.bbox) if args.bbox else _read_area(args.polygon)
    try:
        collection = square_grid(area, size_m=args.size_m, prefix=args.prefix,
                                 district=args.district)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not collection["features"]:
        raise UserError("no cells: the area is smaller than anything to cover")
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{args.out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {len(collection['features'])} cells of {args.size_m:g} m to {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    grid = load_grid(args.grid)
    tree = grid.hierarchy()
    towns = sum(len(t) for t in tree.values())
    villages = sum(len(v) for t in tree.values() for v in t.values())
    print(f"{args.grid}: {len(grid)} cells, {len(tree)} districts, {towns} towns, "
          f"{villages} villages: valid")
    return 0
