"""Scoring hot-spot findings against injected truth, and the naive baseline to beat.

Tickets are modelled from findings the way the desk makes them: findings of one (kind,
centre cell) are one ticket while they keep coming; a ticket whose hot spot has been quiet
for ``ticket_gap_s`` is taken as closed by the operator, and a later finding opens a new
ticket (no re-alert cooldown is applied here, so every false alarm is counted).

* **detected**: an injected cluster is detected when some finding's member cells include
  one of its cells and the finding's window overlaps the cluster's time span.
* **hours to detect**: from the cluster's start to the end of the first such window.
* **false tickets**: tickets none of whose findings matches any injected cluster, per
  1,000 cell-days after warm-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from geo.grid import Grid
from stream.types import HotspotFinding, Occurrence
from tests.support.hotspot_scenarios import InjectedCluster, Scenario

HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class ModelTicket:
    """A ticket as modelled from findings: one (kind, centre cell) episode."""

    kind: str
    cell_id: str
    opened_at: float
    last_at: float
    findings: tuple[HotspotFinding, ...]


def tickets_from_findings(findings: Iterable[HotspotFinding],
                          ticket_gap_s: float = 86400.0) -> list[ModelTicket]:
    """Group findings into ticket episodes per (kind, centre cell)."""
    by_key: dict[tuple[str, str], list[HotspotFinding]] = {}
    for f in findings:
        by_key.setdefault((f.kind, f.cell_id), []).append(f)
    tickets: list[ModelTicket] = []
    for (kind, cell_id), group in sorted(by_key.items()):
        group.sort(key=lambda f: f.window_end)
        current: list[HotspotFinding] = []
        last = -np.inf
        for f in group:
            end = f.window_end.timestamp()
            if current and end - last > ticket_gap_s:
                tickets.append(ModelTicket(kind, cell_id, current[0].window_end.timestamp(),
                                           last, tuple(current)))
                current = []
            current.append(f)
            last = end
        if current:
            tickets.append(ModelTicket(kind, cell_id, current[0].window_end.timestamp(),
                                       last, tuple(current)))
    return sorted(tickets, key=lambda t: (t.opened_at, t.kind, t.cell_id))


def matches(f: HotspotFinding, c: InjectedCluster) -> bool:
    """A finding matches a cluster: shared cells and overlapping time."""
    if f.kind != c.kind or not set(f.member_cells).intersection(c.cells):
        return False
    return f.window_start.timestamp() < c.end_s and f.window_end.timestamp() > c.start_s


@dataclass(slots=True)
class ClusterOutcome:
    cluster: InjectedCluster
    detected: bool
    hours_to_detect: float | None
    members_found: int = 0


@dataclass(slots=True)
class Score:
    """Headline figures of one method on one scenario (or several, merged)."""

    method: str
    clusters: list[ClusterOutcome] = field(default_factory=list)
    tickets: int = 0
    false_tickets: int = 0
    cell_days: float = 0.0

    def detection_rate(self, *, min_strength: float = 0.0, min_hours: float = 0.0) -> float:
        """Share of clusters with ``strength >= min_strength`` and ``hours >= min_hours``
        that were detected (NaN if there are none)."""
        chosen = [o for o in self.clusters
                  if o.cluster.strength >= min_strength and o.cluster.hours >= min_hours]
        if not chosen:
            return float("nan")
        return sum(o.detected for o in chosen) / len(chosen)

    def hours_to_detect(self, *, min_strength: float = 0.0,
                        min_hours: float = 0.0) -> list[float]:
        return sorted(o.hours_to_detect for o in self.clusters
                      if o.hours_to_detect is not None and o.cluster.strength >= min_strength
                      and o.cluster.hours >= min_hours)

    @property
    def false_per_1000_cell_days(self) -> float:
        return 1000.0 * self.false_tickets / self.cell_days if self.cell_days else float("nan")

    def merge(self, other: Score) -> Score:
        return Score(self.method, self.clusters + other.clusters,
                     self.tickets + other.tickets, self.false_tickets + other.false_tickets,
                     self.cell_days + other.cell_days)

    def summary(self, *, min_strength: float = 3.0, min_hours: float = 24.0) -> dict[str, float]:
        hours = self.hours_to_detect(min_strength=min_strength, min_hours=min_hours)
        return {
            "clusters": float(len(self.clusters)),
            "detected_all": self.detection_rate(),
            "detected_target": self.detection_rate(min_strength=min_strength,
                                                   min_hours=min_hours),
            "tickets": float(self.tickets),
            "false_tickets": float(self.false_tickets),
            "false_per_1000_cell_days": self.false_per_1000_cell_days,
            "median_hours_to_detect": float(np.median(hours)) if hours else float("nan"),
            "p90_hours_to_detect": float(np.percentile(hours, 90)) if hours else float("nan"),
        }


def score(method: str, findings: Sequence[HotspotFinding],
          clusters: Sequence[InjectedCluster], *, n_cells: int, days: float,
          warmup_days: float, ticket_gap_s: float = 86400.0) -> Score:
    """Score findings against the injected clusters of one scenario."""
    outcomes: list[ClusterOutcome] = []
    for c in clusters:
        hits = [f for f in findings if matches(f, c)]
        if hits:
            first = min(f.window_end.timestamp() for f in hits)
            found = set().union(*(set(f.member_cells) for f in hits)) & set(c.cells)
            outcomes.append(ClusterOutcome(c, True, (first - c.start_s) / HOUR_S, len(found)))
        else:
            outcomes.append(ClusterOutcome(c, False, None))
    tickets = [t.findings for t in tickets_from_findings(findings, ticket_gap_s)]
    return _scored(method, outcomes, tickets, clusters, n_cells * max(days - warmup_days, 0.0))


def score_tickets(method: str, tickets: Sequence[Sequence[HotspotFinding]],
                  clusters: Sequence[InjectedCluster], *, n_cells: int, days: float,
                  warmup_days: float) -> Score:
    """Like :func:`score`, for tickets that were really made (each the findings it
    holds, e.g. from ``gridwatch replay``) instead of tickets modelled from findings."""
    findings = [f for t in tickets for f in t]
    outcomes = score("", findings, clusters, n_cells=n_cells, days=days,
                     warmup_days=warmup_days).clusters
    return _scored(method, outcomes, tickets, clusters, n_cells * max(days - warmup_days, 0.0))


def _scored(method: str, outcomes: list[ClusterOutcome],
            tickets: Sequence[Sequence[HotspotFinding]],
            clusters: Sequence[InjectedCluster], cell_days: float) -> Score:
    false = sum(1 for t in tickets if not any(matches(f, c) for f in t for c in clusters))
    return Score(method, outcomes, len(tickets), false, cell_days)


class NaiveThresholdEngine:
    """The baseline to beat: a ticket whenever a cell's count in a sliding window reaches
    a fixed number (the same for every cell), evaluated on every hour boundary.

    Same interface as :class:`stream.hotspot.HotspotEngine`.
    """

    def __init__(self, grid: Grid, *, threshold: int, window_s: int = 86400,
                 warmup_s: int = 7 * 86400, utc_offset_s: int = 8 * HOUR_S) -> None:
        self.threshold = threshold
        self.cell_ids = [c.cell_id for c in grid.cells]
        self._lon_lat = [c.lon_lat for c in grid.cells]
        self._index = {cid: i for i, cid in enumerate(self.cell_ids)}
        self._wh = window_s // HOUR_S
        self._warmup_h = warmup_s // HOUR_S
        self._offset = utc_offset_s
        self._ring = np.zeros((self._wh, len(self.cell_ids)), dtype=np.int64)
        self._current = np.zeros(len(self.cell_ids), dtype=np.int64)
        self._hour: int | None = None
        self._first: int | None = None
        self._kind = ""

    def observe(self, occurrence: Occurrence) -> list[HotspotFinding]:
        hour = int((occurrence.observed_at.timestamp() + self._offset) // HOUR_S)
        out: list[HotspotFinding] = []
        if self._hour is None:
            self._hour = self._first = hour
        elif hour > self._hour:
            out = self._advance(hour)
        self._kind = occurrence.kind
        idx = self._index.get(occurrence.cell_id)
        if idx is not None and hour >= self._hour:
            self._current[idx] += 1
        return out

    def flush(self) -> list[HotspotFinding]:
        return [] if self._hour is None else self._advance(self._hour + 1)

    def _advance(self, to_hour: int) -> list[HotspotFinding]:
        assert self._hour is not None and self._first is not None
        out: list[HotspotFinding] = []
        while self._hour < to_hour:
            h = self._hour
            self._ring[h % self._wh] = self._current
            self._current[:] = 0
            if h - self._first >= self._warmup_h:
                totals = self._ring.sum(axis=0)
                for i in np.nonzero(totals >= self.threshold)[0].tolist():
                    lon, lat = self._lon_lat[i]
                    start = (h - self._wh + 1) * HOUR_S - self._offset
                    out.append(HotspotFinding(
                        kind=self._kind, cell_id=self.cell_ids[i],
                        member_cells=(self.cell_ids[i],),
                        window_start=datetime.fromtimestamp(start, UTC),
                        window_end=datetime.fromtimestamp((h + 1) * HOUR_S - self._offset, UTC),
                        observed=int(totals[i]), expected=float(self.threshold), p_value=1.0,
                        lon=lon, lat=lat))
            self._hour += 1
        return out


class SpaceTimeScanEngine:
    """A second baseline: a prospective space-time scan run once a day, the way SaTScan's
    daily surveillance runs (Kulldorff 2001; the space-time permutation model of
    Kulldorff et al. 2005).

    At the end of every local day after the warm-up, over a study period of the last
    ``study_days`` days: cylinders are a cell plus its nearest cells (by centroid, up to
    ``max_cells``) x every window of 1 to ``max_window_days`` days ending today (the
    prospective restriction). Expected counts are the space-time permutation model's,
    ``E[c, d] = N_c * N_d / N`` (a cell's share of the study period times the day's city
    total), so neither a busy road nor a busy day is a cluster by itself. The statistic is
    the Poisson log-likelihood ratio, significance by Monte Carlo: ``replicates`` maps
    drawn from Poisson(``E``) (an approximation of SaTScan's permutations of the case
    dates); a cylinder signals when its rank p-value against the replicates' maxima is at
    most ``alpha`` (SaTScan reports this as a recurrence interval of ``1/alpha`` days).
    Secondary signals that do not overlap a better one are reported too.

    Same interface as :class:`stream.hotspot.HotspotEngine`; the scan is deterministic
    (``seed``).
    """

    def __init__(self, grid: Grid, *, warmup_s: int = 7 * 86400,
                 utc_offset_s: int = 8 * HOUR_S, study_days: int = 28,
                 max_window_days: int = 3, max_cells: int = 5, replicates: int = 199,
                 alpha: float = 0.01, seed: int = 0) -> None:
        if not 0 < alpha < 1 or replicates < 1 / alpha - 1:
            raise ValueError(f"expected 0 < alpha < 1 with replicates >= 1/alpha - 1, got "
                             f"alpha={alpha}, replicates={replicates}")
        self.cell_ids = [c.cell_id for c in grid.cells]
        self._index = {cid: i for i, cid in enumerate(self.cell_ids)}
        self._lon_lat = [c.lon_lat for c in grid.cells]
        n = len(self.cell_ids)
        xy = np.array(self._lon_lat, dtype=np.float64).reshape(n, 2)
        xy[:, 0] *= np.cos(np.radians(xy[:, 1].mean() if n else 0.0))
        k = min(max_cells, n)
        dist = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2)
        # zone z of size s around centre c: the s nearest cells (ties by index)
        self._nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
        self._k = k
        self._offset = utc_offset_s
        self._warmup_d = warmup_s // 86400
        self._study = study_days
        self._max_w = max_window_days
        self._reps = replicates
        self._alpha = alpha
        self._rng = np.random.default_rng(seed)
        self._days: list[np.ndarray] = []  # closed days' counts, oldest first
        self._current = np.zeros(n, dtype=np.int64)
        self._day: int | None = None
        self._first: int | None = None
        self._kind = ""

    def observe(self, occurrence: Occurrence) -> list[HotspotFinding]:
        day = int((occurrence.observed_at.timestamp() + self._offset) // 86400)
        out: list[HotspotFinding] = []
        if self._day is None:
            self._day = self._first = day
        elif day > self._day:
            out = self._advance(day)
        self._kind = occurrence.kind
        idx = self._index.get(occurrence.cell_id)
        if idx is not None and day >= self._day:
            self._current[idx] += 1
        return out

    def flush(self) -> list[HotspotFinding]:
        return [] if self._day is None else self._advance(self._day + 1)

    def _advance(self, to_day: int) -> list[HotspotFinding]:
        assert self._day is not None and self._first is not None
        out: list[HotspotFinding] = []
        while self._day < to_day:
            self._days.append(self._current.copy())
            self._days = self._days[-self._study:]
            self._current[:] = 0
            if self._day - self._first + 1 > self._warmup_d:
                out.extend(self._scan(self._day))
            self._day += 1
        return out

    def _zone_counts(self, counts: np.ndarray) -> np.ndarray:
        """``(..., days, cells)`` -> ``(..., windows, cells, sizes)``: each cylinder's count
        (window of the last w days, zone of the s nearest cells of a centre)."""
        recent = counts[..., ::-1, :][..., : self._max_w, :].cumsum(axis=-2)  # last w days
        by_cell = recent[..., self._nearest]  # (..., w, centres, k)
        return by_cell.cumsum(axis=-1)

    def _scan(self, day: int) -> list[HotspotFinding]:
        obs = np.vstack(self._days).astype(np.float64)  # (days, cells)
        total = obs.sum()
        if total <= 0 or obs.shape[0] <= self._max_w:
            return []
        expected = np.outer(obs.sum(axis=1), obs.sum(axis=0)) / total
        c = self._zone_counts(obs)
        e = self._zone_counts(expected)
        llr = _poisson_llr(c, e, total)
        sims = self._rng.poisson(np.broadcast_to(expected, (self._reps, *expected.shape)))
        sim_c = self._zone_counts(sims.astype(np.float64))
        sim_total = sims.sum(axis=(1, 2)).astype(np.float64)
        maxima = _poisson_llr(sim_c, e[None], sim_total[:, None, None, None]).reshape(
            self._reps, -1).max(axis=1)
        flat = llr.reshape(-1)
        p = (1.0 + (maxima[None, :] >= flat[:, None]).sum(axis=1)) / (self._reps + 1.0)
        out: list[HotspotFinding] = []
        taken: set[int] = set()
        order = np.lexsort((np.arange(flat.size), -flat))
        n_w, n_c, n_s = llr.shape
        for i in order.tolist():
            if p[i] > self._alpha or flat[i] <= 0:
                break
            w, centre, s = np.unravel_index(i, (n_w, n_c, n_s))
            members = [int(m) for m in self._nearest[centre, : s + 1]]
            if taken.intersection(members):
                continue
            taken.update(members)
            lon, lat = self._lon_lat[int(centre)]
            start = (day - int(w)) * 86400 - self._offset
            out.append(HotspotFinding(
                kind=self._kind, cell_id=self.cell_ids[int(centre)],
                member_cells=tuple(sorted(self.cell_ids[m] for m in members)),
                window_start=datetime.fromtimestamp(start, UTC),
                window_end=datetime.fromtimestamp((day + 1) * 86400 - self._offset, UTC),
                observed=int(c[w, centre, s]), expected=float(e[w, centre, s]),
                p_value=float(p[i]), lon=lon, lat=lat))
        return out


def _poisson_llr(c: np.ndarray, e: np.ndarray, total: np.ndarray | float) -> np.ndarray:
    """Kulldorff's Poisson log-likelihood ratio of a zone with ``c`` observed and ``e``
    expected out of ``total`` (0 unless the zone has more than expected)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(c > 0, c * np.log(c / e), 0.0)
        rest = total - c
        outside = np.where(rest > 0, rest * np.log(rest / (total - e)), 0.0)
        llr = inside + outside
    return np.where((c > e) & np.isfinite(llr), llr, 0.0)


# -- the oracle: what any method could reach --------------------------------------------
def oracle_alpha(cluster: InjectedCluster, *, false_per_cell_day: float = 1e-3,
                 start_hours: int = 1) -> float:
    """The false-alarm level per test of the oracle for ``cluster``'s shape.

    A method that knew the cluster's shape (its cells and its span) and the hour it
    starts would test only zones of that many cells x windows of that length, tiling the
    cell-days: ``1 / (cells x days)`` tests per cell-day, so a budget of
    ``false_per_cell_day`` allows ``false_per_cell_day x cells x days`` per test. With
    ``start_hours`` > 1 it does not know when in the day the cluster starts and tests each
    of that many start hours (Bonferroni), a level a real engine could use.
    """
    days = cluster.hours / 24.0
    return false_per_cell_day * len(cluster.cells) * days / max(start_hours, 1)


def oracle_power(scenario: Scenario, cluster: InjectedCluster, alpha: float) -> float:
    """The power of the best test of ``cluster``'s cells and span at level ``alpha`` that
    knows the true baseline: Neyman–Pearson for a count, i.e. the (randomised) upper
    tail of the count's null distribution, evaluated under the cluster's strength.

    The null is the scenario's own: expected count ``mu`` = the sum of the normal rates
    over the cluster's cells and hours, with the day-to-day gamma noise of the generator
    (per cell and day, and city-wide) as over-dispersion (negative binomial with the
    variance of that mixture). Under the alternative every rate is ``strength`` times
    higher (the noise is multiplicative, so the same relative wobble).
    """
    mu, phi, _ = _oracle_null(scenario, cluster)
    k, gamma = _critical(_count_dist(mu, phi), alpha)
    alt = _count_dist(cluster.strength * mu, phi)
    return float(alt.sf(k) + gamma * alt.pmf(k))


def oracle_detects(scenario: Scenario, cluster: InjectedCluster, alpha: float) -> float:
    """The same test applied to the counts the scenario really drew over the cluster's
    cells and span: 1 above the critical value, 0 below, the randomisation's probability
    at it. Averaged over clusters, what the oracle finds of *these* clusters (a cluster
    whose draw held no excess is missed by it too)."""
    mu, phi, observed = _oracle_null(scenario, cluster)
    k, gamma = _critical(_count_dist(mu, phi), alpha)
    return 1.0 if observed > k else gamma if observed == k else 0.0


def _oracle_null(scenario: Scenario, cluster: InjectedCluster) -> tuple[float, float, int]:
    """``(mu, phi, observed)`` of the cluster's cells and span: the normal expected count,
    the over-dispersion of the generator's day noise, and what was drawn."""
    spec = scenario.spec
    h0 = (cluster.start_s - scenario.start_s) // HOUR_S
    h1 = (cluster.end_s - scenario.start_s) // HOUR_S
    index = {c.cell_id: i for i, c in enumerate(scenario.grid.cells)}
    cols = [index[c] for c in cluster.cells]
    rates = scenario.rates[h0:h1, cols]  # (hours, cells)
    day_of = np.arange(h0, h1) // 24
    per_cell_day = np.array([rates[day_of == d].sum(axis=0) for d in np.unique(day_of)])
    mu = float(per_cell_day.sum())
    noise_var = spec.day_noise_cv ** 2 * float((per_cell_day ** 2).sum()) + \
        spec.city_day_noise_cv ** 2 * float((per_cell_day.sum(axis=1) ** 2).sum())
    phi = noise_var / (mu * mu) if mu > 0 else 0.0
    return mu, phi, int(scenario.counts[h0:h1, cols].sum())


def _count_dist(mean: float, phi: float) -> Any:
    """A frozen scipy distribution: negative binomial (``Var = mean + phi mean^2``)."""
    from scipy.stats import nbinom, poisson

    if phi <= 1e-12:
        return poisson(mean)
    size = 1.0 / phi
    return nbinom(size, size / (size + mean))


def _critical(null: Any, alpha: float) -> tuple[int, float]:
    """The Neyman–Pearson rejection region of a count at level ``alpha``: reject above
    ``k``, and at ``k`` with probability ``gamma``."""
    k = int(null.isf(alpha))
    while null.sf(k) > alpha:
        k += 1
    while k > 0 and null.sf(k - 1) <= alpha:
        k -= 1
    at_k = float(null.pmf(k))
    gamma = (alpha - float(null.sf(k))) / at_k if at_k > 0 else 0.0
    return k, min(max(gamma, 0.0), 1.0)
