"""Pixel → ground (lon/lat) for a fixed camera.

A camera that looks at a road plane maps image points to ground points by a homography.
:class:`GroundMapper` fits one from four or more pixel ↔ lon/lat pairs (direct linear
transform with Hartley normalisation, least squares when more than four), or, for a camera
without calibration, puts every detection at the camera's own location.

Example:
    >>> pairs = [((0, 0), (113.10, 23.01)), ((100, 0), (113.11, 23.01)),
    ...          ((100, 100), (113.11, 23.00)), ((0, 100), (113.10, 23.00))]
    >>> mapper = GroundMapper.from_pairs(pairs)
    >>> [round(v, 4) for v in mapper.to_lon_lat(50, 50)]
    [113.105, 23.005]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

PixelLonLatPair = tuple[tuple[float, float], tuple[float, float]]


def _normalising_transform(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    centre = points.mean(axis=0)
    spread = np.sqrt(((points - centre) ** 2).sum(axis=1)).mean()
    if spread <= 0:
        raise ValueError("homography points are all the same point")
    scale = np.sqrt(2) / spread
    return np.array(
        [[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1]],
        dtype=np.float64,
    )


def fit_homography(
    src: npt.ArrayLike, dst: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Fit ``H`` (3×3) with ``dst ~ H @ src`` from ``(n, 2)`` point arrays, ``n >= 4``.

    Raises:
        ValueError: fewer than four pairs, or a degenerate layout (three or more points on
            one line leaving the fit under-determined).
    """
    src_pts = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst_pts = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src_pts.shape[0] < 4 or src_pts.shape != dst_pts.shape:
        raise ValueError(
            f"a homography needs at least 4 pixel/lon-lat pairs, got {src_pts.shape[0]}"
        )
    t_src = _normalising_transform(src_pts)
    t_dst = _normalising_transform(dst_pts)
    s = (t_src @ np.c_[src_pts, np.ones(len(src_pts))].T).T
    d = (t_dst @ np.c_[dst_pts, np.ones(len(dst_pts))].T).T
    rows = []
    for (x, y, _), (u, v, _) in zip(s, d, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    a = np.asarray(rows)
    _, singular, vt = np.linalg.svd(a)
    # A well-posed fit leaves exactly one near-zero singular value.
    if singular[-2] < 1e-8 * singular[0]:
        raise ValueError("homography points are degenerate (collinear?); spread them out")
    h_norm = vt[-1].reshape(3, 3)
    h = np.linalg.inv(t_dst) @ h_norm @ t_src
    return h / h[2, 2]


class GroundMapper:
    """Maps pixel points of one camera to WGS84 lon/lat.

    Use :meth:`from_pairs` (homography) or :meth:`fixed` (camera location).
    """

    def __init__(
        self,
        homography: npt.NDArray[np.float64] | None,
        fixed_lon_lat: tuple[float, float] | None,
    ) -> None:
        if (homography is None) == (fixed_lon_lat is None):
            raise ValueError("expected exactly one of a homography or a fixed lon/lat")
        self.homography = homography
        self.fixed_lon_lat = fixed_lon_lat

    @classmethod
    def from_pairs(cls, pairs: Sequence[PixelLonLatPair]) -> GroundMapper:
        """Fit from ``[((x_px, y_px), (lon, lat)), ...]`` (4 or more pairs)."""
        src = [p[0] for p in pairs]
        dst = [p[1] for p in pairs]
        return cls(fit_homography(src, dst), None)

    @classmethod
    def fixed(cls, lon: float, lat: float) -> GroundMapper:
        """Every pixel maps to the camera's own location."""
        return cls(None, (float(lon), float(lat)))

    def to_lon_lat(self, x: float, y: float) -> tuple[float, float]:
        """Ground position of pixel ``(x, y)`` as ``(lon, lat)``."""
        if self.homography is None:
            assert self.fixed_lon_lat is not None
            return self.fixed_lon_lat
        u, v, w = self.homography @ np.array([x, y, 1.0])
        if abs(w) < 1e-12:
            raise ValueError(f"pixel ({x}, {y}) lies on the horizon of the homography")
        lon, lat = float(u / w), float(v / w)
        return min(max(lon, -180.0), 180.0), min(max(lat, -90.0), 90.0)

    def reprojection_error(self, pairs: Sequence[PixelLonLatPair]) -> float:
        """Largest lon/lat error (degrees) over the calibration pairs; 0 for fixed."""
        if self.homography is None:
            return 0.0
        errors = [
            float(np.hypot(*(np.subtract(self.to_lon_lat(*px), ll)))) for px, ll in pairs
        ]
        return max(errors, default=0.0)
