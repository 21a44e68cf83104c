"""Pure statistics for hot spots: count tail probabilities, FDR control, the spatial scan.

Everything here is a function over numpy arrays; no state, no clock, no I/O. The engine
(:mod:`stream.hotspot`) keeps the state and calls these once per closed hour.

Count model: a window count ``Y`` of a cell (or a zone of cells) is negative binomial with
mean ``mu`` and dispersion ``phi`` (``Var Y = mu + phi * mu**2``). ``phi`` carries both
the day-to-day over-dispersion of the kind and the uncertainty of the learned baseline, so
a busy road with a wobbly rate is judged against its own wobble, not against Poisson.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import betainc, comb, gammaincc

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
ArrayLike = FloatArray | IntArray | float | int

_PHI_POISSON = 1e-9  # below this the negative binomial is Poisson to double precision


def nb_upper_tail(observed: ArrayLike, mean: ArrayLike, phi: ArrayLike) -> FloatArray:
    """``P(Y >= observed)`` for ``Y ~ NegBin(mean, phi)`` (``Var = mean + phi * mean**2``).

    Vectorised over broadcastable arrays. ``phi == 0`` is Poisson. ``observed <= 0`` gives
    1; ``mean <= 0`` with ``observed >= 1`` gives 0.

    Example:
        >>> float(nb_upper_tail(np.array([3.0]), np.array([1.0]), np.array([0.0]))[0])
        0.0803013970713942
    """
    y = np.asarray(observed, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    ph = np.asarray(phi, dtype=np.float64)
    y, mu, ph = np.broadcast_arrays(y, mu, ph)
    out = np.ones(y.shape, dtype=np.float64)
    pos = y >= 1
    zero_mean = pos & (mu <= 0)
    out[zero_mean] = 0.0
    work = pos & (mu > 0)
    poisson = work & (ph <= _PHI_POISSON)
    if poisson.any():
        # P(Y >= y) = P(y, mu): the regularised lower incomplete gamma = 1 - Q(y, mu)
        out[poisson] = 1.0 - gammaincc(y[poisson], mu[poisson])
    nb = work & ~poisson
    if nb.any():
        size = 1.0 / ph[nb]
        # P(Y >= y) = I_{q}(y, size) with q = phi*mu / (1 + phi*mu), the failure probability
        q = ph[nb] * mu[nb] / (1.0 + ph[nb] * mu[nb])
        out[nb] = betainc(y[nb], size, q)
    return np.clip(out, 0.0, 1.0)



def benjamini_hochberg(p_values: FloatArray, q: float, m: int | None = None) -> BoolArray:
    """Which hypotheses the Benjamini–Hochberg step-up procedure rejects at FDR ``q``.

    Args:
        p_values: one p-value per test.
        q: the false discovery rate to control, in (0, 1).
        m: the number of tests in the family (default ``len(p_values)``); pass a larger
            ``m`` when tests that were not worth computing (p = 1) belong to the family.

    Returns:
        A boolean mask, ``True`` where the hypothesis is rejected.

    Example:
        >>> benjamini_hochberg(np.array([0.001, 0.02, 0.5]), 0.05).tolist()
        [True, True, False]
    """
    p = np.asarray(p_values, dtype=np.float64)
    n = p.shape[0]
    total = n if m is None else max(int(m), n)
    reject = np.zeros(n, dtype=bool)
    if n == 0 or total == 0:
        return reject
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    thresholds = q * np.arange(1, n + 1, dtype=np.float64) / total
    passing = np.nonzero(ranked <= thresholds)[0]
    if passing.size:
        reject[order[: passing[-1] + 1]] = True
    return reject


def neighbour_matrix(neighbours: list[list[int]]) -> IntArray:
    """Pad per-cell neighbour index lists into an ``(n_cells, max_degree)`` matrix (-1 pad),
    each row sorted so results never depend on set iteration order."""
    degree = max((len(row) for row in neighbours), default=0)
    matrix = np.full((len(neighbours), max(degree, 1)), -1, dtype=np.int64)
    for i, row in enumerate(neighbours):
        if row:
            matrix[i, : len(row)] = sorted(row)
    return matrix


@dataclass(frozen=True, slots=True)
class ZoneScan:
    """The best zone for each candidate centre (arrays aligned with ``centres``).

    ``members[i, :size[i]]`` are the zone's cell indices, the centre first.
    """

    centres: IntArray
    p_value: FloatArray  # adjusted for the number of zones tried around the centre
    p_raw: FloatArray
    size: IntArray
    members: IntArray
    observed: FloatArray
    expected: FloatArray


def scan_zones(
    observed: FloatArray,
    expected: FloatArray,
    variance: FloatArray,
    eligible: BoolArray,
    neighbours: IntArray,
    *,
    min_count: float,
    min_ratio: float,
    member_min_ratio: float,
    max_members: int,
    single_share: float = 0.0,
) -> ZoneScan:
    """Scan each eligible cell with an excess and its neighbours for the best zone.

    In the spirit of Kulldorff's space-time scan, restricted to a cell and its adjacent
    cells: for each centre, neighbours with their own excess (at least one occurrence and
    ``member_min_ratio`` times their expected count) are added in order of their standard
    score; every prefix (the centre alone, centre + best neighbour, ...) is a candidate
    zone, tested with the negative binomial tail of the zone's summed counts. Each zone's
    p-value is multiplied by the number of zones of its size the centre could have formed
    times the number of sizes (a weighted Bonferroni over all subsets of the neighbours,
    since the ordering was chosen by the data), and the centre keeps the best, so a centre
    with many neighbours is not favoured.

    A zone must reach ``min_count`` occurrences and ``min_ratio`` times its expected count,
    or its p-value is 1.

    Args:
        observed: window count per cell.
        expected: expected window count per cell (the baseline).
        variance: predictive variance of the window count per cell.
        eligible: cells that may take part (warmed up).
        neighbours: ``(n_cells, max_degree)`` neighbour indices, -1 padded.
        min_count: least occurrences in a zone.
        min_ratio: least observed/expected of a zone.
        member_min_ratio: least observed/expected of a neighbour to join a zone.
        max_members: most cells in a zone, the centre included.
        single_share: the share of a centre's level spent on the centre alone (the rest
            is split evenly over the larger sizes); at most ``1 / sizes`` (the default,
            0) every size gets an even share.

    Returns:
        A :class:`ZoneScan` over the centres that had an excess.
    """
    obs = np.asarray(observed, dtype=np.float64)
    exp = np.asarray(expected, dtype=np.float64)
    var = np.asarray(variance, dtype=np.float64)
    # a centre must itself qualify as a member (the ticket names the cell with the most
    # excess, which qualifies whenever the zone does)
    centres = np.nonzero(eligible & (obs >= 1) & (obs > exp) &
                         (obs >= member_min_ratio * exp))[0].astype(np.int64)
    n = centres.shape[0]
    if n == 0:
        empty_f = np.zeros(0, dtype=np.float64)
        empty_i = np.zeros(0, dtype=np.int64)
        return ZoneScan(centres, empty_f, empty_f, empty_i,
                        np.zeros((0, 1), dtype=np.int64), empty_f, empty_f)
    nb = neighbours[centres]
    valid = nb >= 0
    nbc = np.where(valid, nb, 0)
    n_obs, n_exp, n_var = obs[nbc], exp[nbc], var[nbc]
    ok = valid & eligible[nbc] & (n_obs >= 1) & (n_obs >= member_min_ratio * n_exp)
    score = np.where(ok, (n_obs - n_exp) / np.sqrt(np.maximum(n_var, 1e-12)), -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    nb_sorted = nbc[rows, order]
    ok_sorted = ok[rows, order]
    take = np.where(ok_sorted, 1.0, 0.0)
    cum_obs = np.cumsum(n_obs[rows, order] * take, axis=1)
    cum_exp = np.cumsum(n_exp[rows, order] * take, axis=1)
    cum_var = np.cumsum(n_var[rows, order] * take, axis=1)
    zero = np.zeros((n, 1))
    z_obs = obs[centres][:, None] + np.hstack([zero, cum_obs])
    z_exp = exp[centres][:, None] + np.hstack([zero, cum_exp])
    z_var = var[centres][:, None] + np.hstack([zero, cum_var])
    n_ok = np.minimum(ok_sorted.sum(axis=1), max(max_members - 1, 0))
    # zones a centre could have formed: its eligible neighbours, not only those with an
    # excess, so the multiplicity does not shrink with the data
    n_nb = np.minimum((valid & eligible[nbc]).sum(axis=1), max(max_members - 1, 0))
    sizes = np.arange(1, z_obs.shape[1] + 1)[None, :]
    allowed = sizes <= (n_ok[:, None] + 1)
    allowed &= (z_obs >= min_count) & (z_obs >= min_ratio * z_exp)
    # a zone less than 2 sd above expectation has an upper tail of a few percent at best
    # (counts are right-skewed), never significant after the adjustments: skip the
    # incomplete beta function for it
    allowed &= (z_obs - z_exp) >= 2.0 * np.sqrt(np.maximum(z_var, 1e-12))
    safe_exp = np.maximum(z_exp, 1e-12)
    p = np.ones(z_obs.shape)
    if allowed.any():
        e = safe_exp[allowed]
        phi = np.maximum(z_var[allowed] - e, 0.0) / (e * e)
        p[allowed] = nb_upper_tail(z_obs[allowed], e, phi)
    # weighted Bonferroni over every subset the scan stands for: the best zone of size j
    # is the best of C(n_nb, j - 1) subsets; the centre alone gets a share w1 of the
    # level (at least an even 1 / (n_nb + 1)), each larger size (1 - w1) / n_nb
    n_sizes = (n_nb + 1).astype(np.float64)
    w1 = np.maximum(1.0 / n_sizes, min(max(single_share, 0.0), 1.0))
    w_other = np.where(n_nb > 0, (1.0 - w1) / np.maximum(n_nb, 1), 0.0)
    share = np.where(sizes == 1, w1[:, None], w_other[:, None])
    subsets = comb(n_nb[:, None], sizes - 1) / np.maximum(share, 1e-300)
    p_adj_all = np.where(allowed, np.minimum(1.0, p * np.maximum(subsets, 1.0)), 1.0)
    best = np.argmin(p_adj_all, axis=1)  # ties: the smaller zone
    r = np.arange(n)
    p_raw = p[r, best]
    p_adj = p_adj_all[r, best]
    width = nb.shape[1] + 1
    members = np.full((n, width), -1, dtype=np.int64)
    members[:, 0] = centres
    members[:, 1:] = np.where(np.arange(width - 1)[None, :] < best[:, None], nb_sorted, -1)
    return ZoneScan(
        centres=centres,
        p_value=p_adj,
        p_raw=p_raw,
        size=(best + 1).astype(np.int64),
        members=members,
        observed=z_obs[r, best],
        expected=z_exp[r, best],
    )


def winsorise(counts: FloatArray, mean: FloatArray, phi: float, z: float) -> FloatArray:
    """Counts capped at ``mean + z * sd + 1`` so a burst does not teach the baseline that
    the burst is normal (the baseline still follows a lasting change, slowly)."""
    cap = mean + z * np.sqrt(mean + phi * mean * mean) + 1.0
    return np.minimum(counts, cap)
