from __future__ import annotations

import numpy as np
import pytest

from detectors.ground import GroundMapper, fit_homography

PAIRS = [((0, 0), (113.10, 23.01)), ((100, 0), (113.11, 23.01)),
         ((100, 100), (113.11, 23.00)), ((0, 100), (113.10, 23.00))]


def test_four_pairs_map_exactly_and_interpolate() -> None:
    mapper = GroundMapper.from_pairs(PAIRS)
    for pixel, lon_lat in PAIRS:
        assert mapper.to_lon_lat(*pixel) == pytest.approx(lon_lat, abs=1e-9)
    assert mapper.to_lon_lat(25, 75) == pytest.approx((113.1025, 23.0025), abs=1e-9)
    assert mapper.reprojection_error(PAIRS) < 1e-9


def test_perspective_homography_is_recovered_from_more_pairs() -> None:
    h_true = np.array([[1e-4, 2e-6, 113.1], [1e-6, -1e-4, 23.05], [1e-4, 2e-3, 1.0]])
    pixels = [(x, y) for x in (0, 300, 640) for y in (200, 350, 480)]
    pairs = []
    for x, y in pixels:
        u, v, w = h_true @ [x, y, 1]
        pairs.append(((x, y), (u / w, v / w)))
    mapper = GroundMapper.from_pairs(pairs)
    assert mapper.reprojection_error(pairs) < 1e-9


@pytest.mark.parametrize(
    ("src", "error"),
    [
        ([(0, 0), (1, 0), (0, 1)], "at least 4"),
        ([(0, 0), (1, 1), (2, 2), (3, 3)], "degenerate"),
    ],
)
def test_bad_calibrations_are_refused(src, error) -> None:
    dst = [(113.1 + i * 0.001, 23.0 + (i % 2) * 0.001) for i in range(len(src))]
    with pytest.raises(ValueError, match=error):
        fit_homography(src, dst)


def test_fixed_location() -> None:
    assert GroundMapper.fixed(113.15, 23.04).to_lon_lat(999, 999) == (113.15, 23.04)
