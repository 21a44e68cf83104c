"""``gridwatch report hotspots``: pictures of hot spots from a detections file.

    gridwatch report hotspots DETECTIONS.jsonl --grid GRID.geojson [--config FILE.yaml]
                              [--kind KIND] [--cell CELL_ID] [--out-dir DIR]

Replays the detections (the same deterministic pipeline as ``gridwatch replay``) and
writes two PNGs: a map of the cells shaded by their excess (log2 of observed / expected
since warm-up) with hot-spot tickets outlined (centre cell thicker), and a time series of
one cell's hourly observed vs expected counts (``--cell``, default the centre of the
strongest hot spot). Needs matplotlib (``pip install 'gridwatch[report]'``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from gridwatch.errors import UserError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="pictures and summaries (hot spots)")
    sub = parser.add_subparsers(dest="report", metavar="REPORT", required=True)
    hot = sub.add_parser("hotspots", help="map of excess + a cell's observed vs expected",
                         description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    hot.add_argument("detections", type=Path, help="detections JSONL (detection v1)")
    hot.add_argument("--grid", type=Path, required=True, help="grid GeoJSON")
    hot.add_argument("--config", type=Path, help="YAML merged over configs/default.yaml")
    hot.add_argument("--kind", help="hot-spot kind to draw (default: the one with the most "
                                    "hot-spot tickets, else the most occurrences)")
    hot.add_argument("--cell", help="cell for the time series (default: the centre of the "
                                    "strongest hot spot)")
    hot.add_argument("--out-dir", type=Path, default=Path("."),
                     help="where to write the PNGs (default: current folder)")
    hot.set_defaults(func=run_hotspots)


def run_hotspots(args: argparse.Namespace) -> int:
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise UserError("matplotlib is needed for reports: pip install "
                        "'gridwatch[report]'") from None
    matplotlib.use("Agg")

    from geo.grid import Grid
    from gridwatch.config import load_config

    if not args.detections.is_file():
        raise UserError(f"{args.detections}: no such detections file")
    grid = Grid.from_file(args.grid) if args.grid.is_file() else None
    if grid is None:
        raise UserError(f"{args.grid}: no such grid file")
    config = load_config(args.config)
    if args.cell is not None and args.cell not in grid:
        raise UserError(f"--cell {args.cell!r}: not a cell of {args.grid}")

    engine, tickets = _replay(args.detections, grid, config, args.cell)
    hot = [t for t in tickets if t.hotspot is not None]
    kinds = engine.kinds()
    if not kinds:
        raise UserError(f"{args.detections}: no occurrences of a hot-spot kind "
                        f"(kinds with mode: hotspot in the config)")
    kind = args.kind or _default_kind(kinds, hot, engine)
    if kind not in kinds:
        raise UserError(f"--kind {kind!r}: no occurrences of it (seen: {', '.join(kinds)})")
    hot = [t for t in hot if t.kind == kind]
    cell = args.cell or (max(hot, key=lambda t: (_strength(t), t.ticket_id)).cell_id
                         if hot else None)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    map_path = args.out_dir / f"hotspots_map_{kind}.png"
    draw_map(grid, engine, kind, hot, map_path)
    print(f"wrote {map_path}")
    if cell is None:
        print("no hot spot found; pass --cell for a time series")
        return 0
    if args.cell is None:
        # second pass, tracing the chosen cell (replay is deterministic, so it is the same)
        engine, _ = _replay(args.detections, grid, config, cell)
    series_path = args.out_dir / f"hotspots_series_{kind}_{cell}.png"
    draw_series(engine, kind, cell, [t for t in hot if t.cell_id == cell], series_path)
    print(f"wrote {series_path}")
    return 0


def _replay(path: Path, grid: Any, config: Any, trace: str | None) -> tuple[Any, list[Any]]:
    from gridwatch.pipeline import Pipeline, read_lines
    from ticketing.store import MemoryTicketStore

    store = MemoryTicketStore()
    pipeline = Pipeline(config, grid, store)
    engine = pipeline.processor.hotspots
    if trace is not None:
        engine.trace(trace)
    with path.open("rb") as lines:
        # refused lines are counted and explained by `gridwatch replay --rejects-out`
        for batch in read_lines(lines):
            pipeline.feed(batch.valid)
    pipeline.finish()
    return engine, list(store.all())


def _strength(ticket: Any) -> float:
    h = ticket.hotspot or {}
    return float(h.get("observed", 0)) / max(float(h.get("expected", 0.0)), 1e-9)


def _default_kind(kinds: list[str], hot: list[Any], engine: Any) -> str:
    by_tickets = {k: sum(1 for t in hot if t.kind == k) for k in kinds}
    by_count = {k: float(engine.excess(k)[1].sum()) for k in kinds}
    return max(kinds, key=lambda k: (by_tickets[k], by_count[k], k))


def draw_map(grid: Any, engine: Any, kind: str, hot: list[Any], path: Path) -> None:
    """Cells shaded by log2(observed / expected) since warm-up; hot spots outlined."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import TwoSlopeNorm

    cell_ids, observed, expected = engine.excess(kind)
    known = expected > 0
    ratio = np.where(known, np.log2((observed + 0.5) / (expected + 0.5)), np.nan)
    polys = [_rings(grid.geometry(cid)) for cid in cell_ids]
    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    flat = [ring for rings in polys for ring in rings]
    values = [v for v, rings in zip(ratio.tolist(), polys, strict=True) for _ in rings]
    coll = PolyCollection(flat, array=np.ma.masked_invalid(values), cmap="RdBu_r",
                          norm=TwoSlopeNorm(vmin=-2.0, vcenter=0.0, vmax=2.0),
                          edgecolors="#cccccc", linewidths=0.2)
    coll.cmap.set_bad("#eeeeee")
    ax.add_collection(coll)
    fig.colorbar(coll, ax=ax, shrink=0.8, label="log2(observed / expected) since warm-up")
    for ticket in hot:
        members = ticket.hotspot.get("member_cells") or [ticket.cell_id]
        for cid in members:
            for ring in _rings(grid.geometry(cid)):
                xs, ys = zip(*ring, strict=True)
                ax.plot(xs, ys, color="black", linewidth=1.0)
        for ring in _rings(grid.geometry(ticket.cell_id)):
            xs, ys = zip(*ring, strict=True)
            ax.plot(xs, ys, color="#111111", linewidth=2.6)
        lon, lat = grid[ticket.cell_id].lon_lat
        ax.annotate(f"{ticket.hotspot.get('observed')}/"
                    f"{float(ticket.hotspot.get('expected', 0)):.0f}", (lon, lat),
                    fontsize=7, ha="center", va="center")
    minx, miny, maxx, maxy = _bounds(grid)
    ax.set_xlim(minx, maxx)
    ax.set_ylim(miny, maxy)
    ax.set_aspect(1.0 / max(math.cos(math.radians((miny + maxy) / 2)), 1e-6))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"{kind}: excess by cell; {len(hot)} hot-spot ticket(s) outlined "
                 f"(label: observed/expected of the last window)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_series(engine: Any, kind: str, cell: str, tickets: list[Any], path: Path) -> None:
    """Hourly observed vs expected counts of one cell, hot-spot windows shaded."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = [r for r in engine.series(cell) if r[1] == kind]
    fig, ax = plt.subplots(figsize=(12, 4), dpi=110)
    if rows:
        at = [r[0] for r in rows]
        ax.step(at, [r[2] for r in rows], where="post", color="#444444", linewidth=0.7,
                label="observed (per hour)")
        ax.plot(at, [r[3] for r in rows], color="#d62728", linewidth=1.2,
                label="expected (baseline)")
    for ticket in tickets:
        h = ticket.hotspot
        ax.axvspan(_dt(h["window_start"]), _dt(h["window_end"]), color="#ff7f0e", alpha=0.2,
                   label=f"hot spot (last window, p={h['p_value']:.2g})")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.set_ylabel("occurrences per hour")
    ax.set_title(f"{kind} in {cell}: observed vs expected (UTC dates)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _dt(value: Any) -> Any:
    from datetime import datetime

    return value if isinstance(value, datetime) else datetime.fromisoformat(
        str(value).replace("Z", "+00:00"))


def _rings(geometry: Any) -> list[list[tuple[float, float]]]:
    parts = getattr(geometry, "geoms", [geometry])
    return [list(p.exterior.coords) for p in parts]


def _bounds(grid: Any) -> tuple[float, float, float, float]:
    import shapely

    minx, miny, maxx, maxy = shapely.total_bounds(grid.geometries)
    return float(minx), float(miny), float(maxx), float(maxy)
