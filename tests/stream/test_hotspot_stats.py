"""Pure hot-spot statistics, the scenario generator and the scorer."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.stats import nbinom, poisson

from stream.hotspot_stats import (
    benjamini_hochberg,
    nb_upper_tail,
    neighbour_matrix,
    scan_zones,
    winsorise,
)
from stream.types import HotspotFinding
from tests.support.hotspot_scenarios import (
    InjectedCluster,
    Scenario,
    ScenarioSpec,
    family_spec,
)
from tests.support.hotspot_scoring import (
    NaiveThresholdEngine,
    SpaceTimeScanEngine,
    oracle_alpha,
    oracle_detects,
    oracle_power,
    score,
    tickets_from_findings,
)


@pytest.mark.parametrize(("observed", "mean", "phi"), [
    (3, 1.0, 0.0), (10, 4.0, 0.3), (1, 0.2, 0.05), (50, 20.0, 0.02), (200, 180.0, 0.1),
])
def test_nb_upper_tail_matches_scipy(observed: int, mean: float, phi: float) -> None:
    got = float(nb_upper_tail(np.array([observed]), np.array([mean]), np.array([phi]))[0])
    if phi == 0:
        want = poisson.sf(observed - 1, mean)
    else:
        n = 1.0 / phi
        want = nbinom.sf(observed - 1, n, n / (n + mean))
    assert got == pytest.approx(want, rel=1e-9)


def test_nb_upper_tail_edges() -> None:
    p = nb_upper_tail(np.array([0.0, 2.0, 5.0]), np.array([3.0, 0.0, 5.0]),
                      np.array([0.1, 0.1, 0.1]))
    assert p[0] == 1.0 and p[1] == 0.0 and 0.3 < p[2] < 0.7


@pytest.mark.parametrize(("p", "q", "m", "expected"), [
    ([0.001, 0.02, 0.5], 0.05, None, [True, True, False]),
    ([0.0001, 0.02, 0.5], 0.05, 100, [True, False, False]),
    ([0.04, 0.03, 0.02], 0.05, None, [True, True, True]),  # step-up
    ([], 0.05, 10, []),
])
def test_benjamini_hochberg(p: list[float], q: float, m: int | None,
                            expected: list[bool]) -> None:
    assert benjamini_hochberg(np.array(p, dtype=float), q, m).tolist() == expected


def test_scan_finds_three_cell_zone_on_a_line() -> None:
    # cells 0-1-2-3-4-5-6 on a line; 2, 3, 4 have an excess
    nbrs = neighbour_matrix([[1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5]])
    observed = np.array([10, 11, 30, 32, 29, 9, 10], dtype=float)
    expected = np.full(7, 10.0)
    variance = expected + 0.02 * expected**2
    scan = scan_zones(observed, expected, variance, np.ones(7, dtype=bool), nbrs,
                      min_count=5, min_ratio=1.5, member_min_ratio=1.5, max_members=9)
    row = int(np.argmin(scan.p_value))
    assert int(scan.centres[row]) == 3
    assert sorted(scan.members[row, : scan.size[row]].tolist()) == [2, 3, 4]
    assert scan.observed[row] == 91 and scan.expected[row] == 30
    assert scan.p_value[row] < 1e-10


@pytest.mark.parametrize(("share", "single", "pair"), [
    (0.0, 5.0, 4 * 5.0),  # an even split: five sizes, C(4, 1) pairs
    (0.5, 2.0, 4 * 8.0),  # half for the centre alone; each larger size 0.5 / 4
    (1.0 / 5, 5.0, 4 * 5.0),  # no more than an even share: the same as 0
])
def test_scan_spends_its_share_of_the_level_on_the_centre_alone(
        share: float, single: float, pair: float) -> None:
    # cell 0 with four eligible neighbours; only cell 1 has an excess of its own
    nbrs = neighbour_matrix([[1, 2, 3, 4], [0], [0], [0], [0]])
    expected = np.full(5, 2.0)
    variance = expected.copy()  # Poisson
    args = dict(min_count=5, min_ratio=1.5, member_min_ratio=1.5, max_members=9,
                single_share=share)
    alone = scan_zones(np.array([14.0, 2, 2, 2, 2]), expected, variance,
                       np.ones(5, dtype=bool), nbrs, **args)  # type: ignore[arg-type]
    row = alone.centres.tolist().index(0)
    assert alone.size[row] == 1
    assert alone.p_value[row] == pytest.approx(single * poisson.sf(13, 2.0))
    both = scan_zones(np.array([10.0, 10, 2, 2, 2]), expected, variance,
                      np.ones(5, dtype=bool), nbrs, **args)  # type: ignore[arg-type]
    row = both.centres.tolist().index(0)
    assert both.size[row] == 2
    assert both.p_value[row] == pytest.approx(pair * poisson.sf(19, 4.0))


def test_oracle_is_the_neyman_pearson_test_of_the_known_baseline() -> None:
    # one cell at 2 a day, pure Poisson (no day-to-day noise), a 3x day: the issue's
    # example (6 vs 2 expected; P(X >= 6 | 2) = 0.017, far above a 1e-3 level)
    spec = ScenarioSpec(rows=1, cols=1, days=14, n_clusters=0, day_noise_cv=0.0,
                        city_day_noise_cv=0.0)
    base = Scenario.generate(spec)
    rates = np.full((14 * 24, 1), 2.0 / 24)
    sc = Scenario(spec=spec, grid=base.grid, start_s=base.start_s, rates=rates,
                  counts=np.zeros_like(rates, dtype=np.int64), clusters=[],
                  sources=base.sources)
    cluster = InjectedCluster("K1", spec.kind, base.grid.cells[0].cell_id,
                              (base.grid.cells[0].cell_id,), base.start_s + 10 * 86400,
                              base.start_s + 11 * 86400, 3.0, 2.0)
    alpha = oracle_alpha(cluster)
    assert alpha == pytest.approx(1e-3)  # one test per cell-day of a one-day cluster
    assert oracle_alpha(cluster, start_hours=24) == pytest.approx(1e-3 / 24)
    assert poisson.sf(5, 2.0) == pytest.approx(0.0166, abs=1e-4)
    # reject X >= 9 (P0 = 2.4e-4), and X = 8 with the probability that spends the rest
    gamma = (alpha - poisson.sf(8, 2.0)) / poisson.pmf(8, 2.0)
    expected = poisson.sf(8, 6.0) + gamma * poisson.pmf(8, 6.0)
    assert oracle_power(sc, cluster, alpha) == pytest.approx(expected)
    assert 0.2 < expected < 0.3  # unreachable for any method at this false-alarm rate
    assert oracle_power(sc, cluster, 1e-3 / 24) < expected
    # on the counts drawn: above the critical value found, at it with probability gamma
    day = slice(10 * 24, 11 * 24)
    for drawn, found in [(9, 1.0), (8, gamma), (7, 0.0)]:
        sc.counts[:] = 0
        sc.counts[day.start, 0] = drawn
        assert oracle_detects(sc, cluster, alpha) == pytest.approx(found)


def _family_oracle_power(family: str, seeds: list[int], start_hours: int) -> float:
    """The oracle's expected detection rate over a family's >= 3x, >= 1 day clusters at
    the target's budget (1 false ticket per 1,000 cell-days), as hotspot_eval reports it."""
    powers = []
    for seed in seeds:
        sc = Scenario.generate(family_spec(family, seed=seed))
        for c in sc.clusters:
            if c.strength >= 3.0 and c.hours >= 24:
                alpha = oracle_alpha(c, false_per_cell_day=1e-3, start_hours=start_hours)
                powers.append(oracle_power(sc, c, alpha))
    assert powers
    return float(np.mean(powers))


def test_the_quiet_roads_target_is_beyond_any_method_in_two_families() -> None:
    # the docs' claim (docs/hotspots.md, "What the oracle says"), checked on the harness
    # itself so it cannot drift from the families: a test that knows the true baseline,
    # the cluster's cells, its span and its start hour, held to the target's false-ticket
    # budget, finds fewer than 0.9 of quiet_busy's clusters; not knowing the start hour
    # (as no engine does), fewer than 0.9 of held_out's too. In mixed it finds them all.
    held_out = [4, 5, 6, 7, 8]
    assert _family_oracle_power("quiet_busy", held_out, start_hours=1) < 0.9
    assert _family_oracle_power("quiet_busy", [1, 2, 3], start_hours=1) < 0.9
    assert _family_oracle_power("held_out", held_out, start_hours=24) < 0.9
    assert _family_oracle_power("held_out", held_out, start_hours=1) > 0.9
    assert _family_oracle_power("quiet", held_out, start_hours=24) > 0.9
    assert _family_oracle_power("mixed", [1], start_hours=24) > 0.99


def test_scan_ignores_cells_that_are_not_eligible_and_respects_min_count() -> None:
    nbrs = neighbour_matrix([[1], [0]])
    scan = scan_zones(np.array([4.0, 40.0]), np.array([0.5, 10.0]),
                      np.array([0.6, 12.0]), np.array([True, False]), nbrs,
                      min_count=5, min_ratio=1.5, member_min_ratio=1.5, max_members=9)
    assert scan.centres.tolist() == [0]
    assert scan.p_value.tolist() == [1.0]  # 4 < min_count, and cell 1 may not join


def test_winsorise_caps_bursts_only() -> None:
    out = winsorise(np.array([3.0, 50.0]), np.array([3.0, 3.0]), 0.0, 3.0)
    assert out[0] == 3.0 and out[1] == pytest.approx(3 + 3 * np.sqrt(3) + 1)


def test_scenario_is_deterministic_and_has_the_truth() -> None:
    spec = ScenarioSpec(rows=8, cols=8, days=14, n_clusters=3, seed=9)
    a, b = Scenario.generate(spec), Scenario.generate(spec)
    assert np.array_equal(a.counts, b.counts)
    assert a.truth() == b.truth()
    assert len(a.clusters) == 3
    for c in a.clusters:
        assert c.start_s >= a.start_s + spec.cluster_earliest_day * 86400
        assert 1 <= len(c.cells) <= 5
    first = next(a.occurrences())
    assert first.event_ids and first.snapshot_url


def _finding(cell: str, end_h: int, members: tuple[str, ...] = ()) -> HotspotFinding:
    t0 = 1_710_000_000
    return HotspotFinding(
        kind="helmetless_rider", cell_id=cell, member_cells=members or (cell,),
        window_start=datetime.fromtimestamp(t0 + (end_h - 24) * 3600, UTC),
        window_end=datetime.fromtimestamp(t0 + end_h * 3600, UTC),
        observed=10, expected=2.0, p_value=1e-6, lon=0.0, lat=0.0)


def test_tickets_from_findings_split_on_quiet_gaps() -> None:
    fs = [_finding("A", 10), _finding("A", 11), _finding("A", 60), _finding("B", 10)]
    tickets = tickets_from_findings(fs, ticket_gap_s=86400)
    assert [(t.cell_id, len(t.findings)) for t in tickets] == [("A", 2), ("B", 1), ("A", 1)]


def test_score_counts_detection_false_tickets_and_delay() -> None:
    sc = Scenario.generate(ScenarioSpec(rows=6, cols=6, days=14, n_clusters=1, seed=2))
    c = sc.clusters[0]
    end_h = (c.start_s - 1_710_000_000) // 3600 + 5
    hit = _finding(c.cells[0], int(end_h))
    stray = _finding("H00000000" if "H00000000" not in c.cells else "H00050005", 400)
    s = score("x", [hit, stray], sc.clusters, n_cells=36, days=14, warmup_days=7)
    assert s.detection_rate() == 1.0
    assert s.clusters[0].hours_to_detect == pytest.approx(5.0)
    assert s.false_tickets == 1 and s.tickets == 2
    assert s.false_per_1000_cell_days == pytest.approx(1000 / (36 * 7))


def test_naive_threshold_flags_busy_cells_for_being_busy() -> None:
    rates = np.full((10 * 24, 4), 0.5)
    rates[:, 0] = 20.0
    spec = ScenarioSpec(rows=2, cols=2, days=10, n_clusters=0)
    base = Scenario.generate(spec)
    sc = Scenario(spec=spec, grid=base.grid, start_s=base.start_s, rates=rates,
                  counts=np.random.default_rng(1).poisson(rates), clusters=[],
                  sources=base.sources)
    engine = NaiveThresholdEngine(sc.grid, threshold=100, warmup_s=86400)
    found = [f for o in sc.occurrences() for f in engine.observe(o)] + engine.flush()
    assert found and {f.cell_id for f in found} == {sc.grid.cells[0].cell_id}


def _pure_poisson(rates: np.ndarray, spec: ScenarioSpec, seed: int = 1) -> Scenario:
    base = Scenario.generate(spec)
    return Scenario(spec=spec, grid=base.grid, start_s=base.start_s, rates=rates,
                    counts=np.random.default_rng(seed).poisson(rates), clusters=[],
                    sources=base.sources)


def _run(engine: SpaceTimeScanEngine, sc: Scenario) -> list[HotspotFinding]:
    return [f for o in sc.occurrences() for f in engine.observe(o)] + engine.flush()


def test_space_time_scan_finds_a_one_day_excess_and_not_a_busy_road() -> None:
    spec = ScenarioSpec(rows=4, cols=4, days=14, n_clusters=0)
    rates = np.full((14 * 24, 16), 0.25)  # 6 a day
    rates[:, 5] = 10.0  # a busy road: 240 a day, every day
    rates[11 * 24:12 * 24, 10] = 1.5  # day 12: 36 instead of 6 in one cell
    sc = _pure_poisson(rates, spec)
    found = _run(SpaceTimeScanEngine(sc.grid, warmup_s=7 * 86400, seed=3), sc)
    cells = {c for f in found for c in f.member_cells}
    assert sc.grid.cells[10].cell_id in cells
    assert sc.grid.cells[5].cell_id not in cells
    first = min(found, key=lambda f: f.window_end)
    assert first.window_end.timestamp() == sc.start_s + 12 * 86400  # that day's analysis
    assert first.observed > 3 * first.expected and first.p_value <= 0.01


def test_space_time_scan_is_quiet_on_a_null_map_and_deterministic() -> None:
    spec = ScenarioSpec(rows=4, cols=4, days=14, n_clusters=0)
    sc = _pure_poisson(np.full((14 * 24, 16), 0.5), spec, seed=4)
    runs = [_run(SpaceTimeScanEngine(sc.grid, seed=3), sc) for _ in range(2)]
    assert runs[0] == runs[1]
    assert len(runs[0]) <= 1  # 7 daily analyses at alpha 0.01


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"alpha": 0.0}, "0 < alpha < 1"),
    ({"alpha": 0.01, "replicates": 50}, "replicates >= 1/alpha - 1"),
])
def test_space_time_scan_settings_are_checked(kwargs: dict[str, float], error: str) -> None:
    grid = Scenario.generate(ScenarioSpec(rows=2, cols=2, days=1, n_clusters=0)).grid
    with pytest.raises(ValueError, match=error):
        SpaceTimeScanEngine(grid, **kwargs)  # type: ignore[arg-type]


def test_the_quiet_busy_family_has_single_cell_one_day_clusters() -> None:
    sc = Scenario.generate(family_spec("quiet_busy", rows=12, cols=12, days=21,
                                       n_clusters=5))
    assert sc.clusters and all(len(c.cells) == 1 and c.hours == 24 for c in sc.clusters)
    daily = sc.rates.sum(axis=0) / 21
    with_camera = daily[daily > 0]
    assert with_camera.min() < 10 and with_camera.max() > 60  # quiet and busy side by side


def test_the_held_out_family_is_the_issues_scenario() -> None:
    sc = Scenario.generate(family_spec("held_out", seed=4))
    assert sc.counts.shape == (35 * 24, 400)
    assert len(sc.clusters) == 10
    assert all(1 <= len(c.cells) <= 3 and c.hours in (24, 48) and c.strength >= 3
               for c in sc.clusters)
    daily = sc.rates.sum(axis=0) / 35
    with_camera = daily[daily > 0]
    assert with_camera.min() < 10 and with_camera.max() > 60
