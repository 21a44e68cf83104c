"""Lanes: image polygons with the direction traffic is allowed to move in."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

Point = tuple[float, float]


class LaneConfig(BaseModel):
    """One lane of one camera, in pixels of the camera's frame.

    Attributes:
        name: shown in detections (``attributes.lane``).
        polygon_xy: the lane's outline, three or more ``[x, y]`` pixel points.
        direction_xy: an arrow ``[[x1, y1], [x2, y2]]`` in the allowed direction of travel.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    polygon_xy: list[Point] = Field(min_length=3)
    direction_xy: tuple[Point, Point]

    @field_validator("direction_xy")
    @classmethod
    def _non_zero_arrow(cls, value: tuple[Point, Point]) -> tuple[Point, Point]:
        (x1, y1), (x2, y2) = value
        if x1 == x2 and y1 == y2:
            raise ValueError("direction arrow has zero length; give two different points")
        return value


class Lane:
    """A lane ready for geometry: point-in-polygon and the unit allowed direction."""

    def __init__(self, config: LaneConfig) -> None:
        self.name = config.name
        self.polygon = np.asarray(config.polygon_xy, dtype=np.float64)
        (x1, y1), (x2, y2) = config.direction_xy
        vector = np.array([x2 - x1, y2 - y1], dtype=np.float64)
        self.direction = vector / np.linalg.norm(vector)

    def contains(self, x: float, y: float) -> bool:
        """Whether pixel ``(x, y)`` lies inside the lane (even-odd rule)."""
        poly = self.polygon
        inside = False
        j = len(poly) - 1
        for i in range(len(poly)):
            xi, yi = poly[i]
            xj, yj = poly[j]
            if (yi > y) != (yj > y):
                x_cross = xi + (y - yi) * (xj - xi) / (yj - yi)
                if x < x_cross:
                    inside = not inside
            j = i
        return inside
