"""Small builders for tests: a valid detection with any field overridden, a grid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.schema import SCHEMA_ID, Detection, parse_detection
from geo.grid import Grid

T0 = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
_seq = iter(range(1, 10**9))


def wire(**overrides: Any) -> dict[str, Any]:
    """A valid detection v1 wire object (smoke in cell C00 of :func:`make_grid`)."""
    obj: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "event_id": f"e{next(_seq)}",
        "observed_at": T0.isoformat(),
        "station_id": "st1",
        "source_id": "smoke-1",
        "source_type": "smoke_sensor",
        "kind": "smoke",
        "confidence": 0.95,
        "lon": 0.5,
        "lat": 0.5,
    }
    obj.update(overrides)
    if isinstance(obj["observed_at"], datetime):
        obj["observed_at"] = obj["observed_at"].isoformat()
    return obj


def make_detection(*, at: datetime | timedelta | None = None, **overrides: Any) -> Detection:
    """A parsed detection; ``at`` is a datetime or an offset from :data:`T0`."""
    if isinstance(at, timedelta):
        at = T0 + at
    if at is not None:
        overrides["observed_at"] = at
    return parse_detection(json.dumps(wire(**overrides)))


def line(**overrides: Any) -> str:
    return json.dumps(wire(**overrides))


def square(x0: float, y0: float, size: float = 1.0) -> list[list[list[float]]]:
    return [[[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size], [x0, y0]]]


def make_grid_geojson(cols: int = 3, rows: int = 3) -> dict[str, Any]:
    """``cols`` x ``rows`` unit squares from (0, 0); ids ``C<col><row>``; two towns."""
    features = []
    for c in range(cols):
        for r in range(rows):
            features.append({
                "type": "Feature",
                "properties": {"cell_id": f"C{c}{r}", "district": "D1",
                               "town": "TownA" if c < 2 else "TownB",
                               "village": f"V{c}"},
                "geometry": {"type": "Polygon", "coordinates": square(c, r)},
            })
    return {"type": "FeatureCollection", "features": features}


def make_grid(cols: int = 3, rows: int = 3) -> Grid:
    return Grid.from_geojson(make_grid_geojson(cols, rows))
