"""Hot spots: a significant, baseline-aware excess of a chronic kind in a cell or a small
cluster of adjacent cells.

How it works (event time only; the same input always gives the same findings):

* Occurrences (one per rider, after dedup) are counted per (kind, cell, local hour).
* When event time crosses an hour boundary, the hour is closed for **every** cell at once
  (numpy over all cells, so a quiet cell's zero counts teach its baseline too, without
  touching cells per occurrence).
* The expected count of a cell in an hour comes from its own hour-of-week profile (168
  slots, exponentially weighted), shrunk toward a prior = the cell's level x the hour-of-
  week profile of its town (or district) where its own history is thin. The level itself
  is shrunk toward the town's rate (gamma-Poisson), so a new cell starts at its town's rate
  and a busy road learns that it is busy.
* Every closed hour, sliding windows (``windows_s``, e.g. 6 h, 24 h, 72 h) ending at that
  hour are scanned: each warmed-up cell with an excess is a candidate centre; the centre
  plus its most excessive neighbours form zones (a Kulldorff-style scan restricted to a
  cell and its neighbours); each zone's count is tested against a negative binomial whose
  dispersion is learned online (day-to-day wobble) plus the baseline's own uncertainty.
  Best-zone p-values are Bonferroni-adjusted over zones (half the level for the centre
  alone) and windows; a new hot spot needs p <= ``cell_alarm_rate_per_day`` / 24, a
  false-alarm rate per cell and day, however many cells there are (or, with
  ``new_hotspot_rule: fdr``, Benjamini–Hochberg over the kind's cells as well); zones
  also need ``min_count`` occurrences and ``min_ratio`` x expected.
* Significant zones that do not overlap become findings. A zone that overlaps a hot spot
  still active (seen within ``hold_s``) keeps that hot spot's centre cell, so a persisting
  hot spot updates its one ticket instead of opening new ones as it wobbles.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geo.grid import Grid
from stream.hotspot_stats import (
    BoolArray,
    FloatArray,
    ZoneScan,
    benjamini_hochberg,
    neighbour_matrix,
    scan_zones,
    winsorise,
)
from stream.types import HotspotFinding, Occurrence

HOUR_S = 3600
WEEK_H = 168
_EMPTY: list[HotspotFinding] = []
# an occurrence more than this many hours ahead of the open hour moves the clock only once
# an occurrence from another source confirms the jump (one bad clock cannot drag it)
JUMP_CONFIRM_H = 24
# a long empty gap in the hour clock is skipped in at most this many steps
_SKIP_STEPS = 64


class HotspotSettings(BaseModel):
    """Hot-spot statistics for ``mode: hotspot`` kinds (``hotspot:`` in the config).

    Every field is documented in ``configs/default.yaml``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows_s: tuple[int, ...] = (6 * HOUR_S, 24 * HOUR_S, 72 * HOUR_S)
    utc_offset_s: int = Field(default=8 * HOUR_S, ge=-14 * HOUR_S, le=14 * HOUR_S)
    warmup_s: int = Field(default=7 * 86400, ge=0)
    baseline_half_life_s: int = Field(default=21 * 86400, ge=86400)
    profile_prior_weeks: float = Field(default=0.25, ge=0)
    profile_prior_count: float = Field(default=10.0, gt=0)
    level_prior_count: float = Field(default=10.0, gt=0)
    group_level: Literal["town", "district", "none"] = "town"
    min_group_cells: int = Field(default=5, ge=1)
    dispersion_init: float = Field(default=0.1, ge=0)
    dispersion_floor: float = Field(default=0.02, ge=0)
    dispersion_half_life_s: int = Field(default=3 * 86400, ge=3600)
    fdr_q: float = Field(default=0.01, gt=0, lt=1)
    cell_alarm_rate_per_day: float = Field(default=0.005, ge=0, lt=1)
    new_hotspot_rule: Literal["cell_rate", "fdr"] = "cell_rate"
    single_cell_share: float = Field(default=0.5, ge=0, le=1)
    min_count: int = Field(default=5, ge=1)
    min_ratio: float = Field(default=1.5, ge=1)
    member_min_ratio: float = Field(default=1.5, ge=1)
    max_members: int = Field(default=9, ge=1)
    winsor_z: float = Field(default=3.0, gt=0)
    hold_s: int = Field(default=86400, ge=HOUR_S)
    realert_cooldown_s: int = Field(default=7 * 86400, ge=0)
    max_sample_events: int = Field(default=10, ge=0)
    max_snapshots: int = Field(default=5, ge=0)
    max_top_sources: int = Field(default=5, ge=1)

    @field_validator("windows_s")
    @classmethod
    def _whole_hours(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("expected at least one window")
        for w in value:
            if w < HOUR_S or w % HOUR_S or w > 14 * 86400:
                raise ValueError(f"expected windows in whole hours between 3600 and "
                                 f"1209600 seconds, got {w}")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _warmup_covers_window(self) -> HotspotSettings:
        if self.warmup_s < max(self.windows_s):
            raise ValueError(f"expected warmup_s >= the longest window "
                             f"({max(self.windows_s)}), got {self.warmup_s}")
        return self

    @property
    def window_hours(self) -> tuple[int, ...]:
        return tuple(w // HOUR_S for w in self.windows_s)


@dataclass(slots=True)
class _Active:
    """A hot spot that was significant recently; its centre names its ticket."""

    centre: int
    members: frozenset[int]
    first_hour: int
    last_hour: int
    reported_hour: int  # evidence up to this hour is on the ticket already


# what is kept of one occurrence for the evidence of a ticket: (local hour,
# "station/source", its event ids (the list dedup keeps growing for a longer track), and
# for the first occurrence of a cell's hour its snapshot URL or "", else None). Small on
# purpose: it is held for the longest window.
_Seen = tuple[int, str, list[str], str | None]


class _Trail:
    """A cell's evidence of the longest window, one column per field of :data:`_Seen`
    (aligned deques, oldest first).

    Columns, not one tuple per occurrence: the only per-occurrence object kept that the
    cyclic garbage collector tracks is the event-id list itself (it must be the same list,
    dedup may still grow it). A tuple per occurrence doubled the tracked objects that
    every full collection walks; with millions held for 72 h at 10,000 cells those walks
    are a large share of the engine's time and what grows faster than linearly in cells
    (``docs/hotspots.md``, Cost).
    """

    __slots__ = ("hours", "sources", "ids", "snaps", "ordered")

    def __init__(self) -> None:
        self.hours: deque[int] = deque()
        self.sources: deque[str] = deque()
        self.ids: deque[list[str]] = deque()
        self.snaps: deque[str | None] = deque()
        self.ordered = True  # hours never decrease (nothing arrived late since emptied)

    def drop_until(self, oldest: int) -> None:
        """Forget the occurrences of hours up to ``oldest`` at the front."""
        hours = self.hours
        while hours and hours[0] <= oldest:
            hours.popleft()
            self.sources.popleft()
            self.ids.popleft()
            self.snaps.popleft()
        if not hours:
            self.ordered = True

    def append(self, hour: int, source: str, ids: list[str], snap: str | None) -> None:
        if self.ordered and self.hours and hour < self.hours[-1]:
            self.ordered = False
        self.hours.append(hour)
        self.sources.append(source)
        self.ids.append(ids)
        self.snaps.append(snap)

    def between(self, first: int, last: int) -> list[_Seen]:
        """The occurrences of hours ``first`` to ``last``, in arrival order."""
        hours = self.hours
        if not self.ordered:
            return [e for e in zip(hours, self.sources, self.ids, self.snaps, strict=True)
                    if first <= e[0] <= last]
        # in hour order: only the tail from the first hour of the window is read (a
        # ticket's window is often a few hours of a busy cell's 72)
        start = bisect_left(hours, first)
        sources, ids, snaps = self.sources, self.ids, self.snaps
        return [(h, sources[i], ids[i], snaps[i])
                for i in range(start, len(hours)) if (h := hours[i]) <= last]


class _KindState:
    """All the numbers kept for one kind: O(cells x 168) floats plus two short rings."""

    def __init__(self, n_cells: int, n_groups: int, ring_h: int, n_windows: int,
                 phi0: float) -> None:
        self.slot_sum = np.zeros((WEEK_H, n_cells))  # EW counts per hour-of-week slot
        self.slot_weight = np.zeros((WEEK_H, n_cells))  # EW number of weeks per slot
        self.level_count = np.zeros(n_cells)  # EW counts (all hours)
        self.level_exposure = np.zeros(n_cells)  # EW counts expected at the group's rate
        self.group_sum = np.zeros((WEEK_H, n_groups))
        self.group_weight = np.zeros((WEEK_H, n_groups))
        self.first_hour = np.full(n_cells, -1, dtype=np.int64)
        self.active = np.zeros(n_cells, dtype=bool)
        self.current = np.zeros(n_cells, dtype=np.int64)  # the open hour's counts
        self.observed_ring = np.zeros((ring_h, n_cells), dtype=np.int64)
        self.expected_ring = np.zeros((ring_h, n_cells))
        self.expected_var_ring = np.zeros((ring_h, n_cells))  # uncertainty of the baseline
        self.phi = np.full(n_windows, phi0)
        self.phi_num = np.full(n_windows, phi0)
        self.phi_den = np.ones(n_windows)
        self.evidence: dict[int, _Trail] = {}
        # since each cell's warm-up ended: for maps of excess (observed vs expected)
        self.total_observed = np.zeros(n_cells)
        self.total_expected = np.zeros(n_cells)
        self.hotspots: dict[int, _Active] = {}


class HotspotEngine:
    """Feed occurrences in event-time order; get findings as hours close.

    Example:
        >>> engine = HotspotEngine(HotspotSettings(), grid)
        >>> findings = engine.observe(occurrence)  # usually [] until an hour closes
        >>> findings += engine.flush()  # end of input: close the last hour
    """

    def __init__(self, settings: HotspotSettings, grid: Grid) -> None:
        self.settings = settings
        self.grid = grid
        self.cell_ids = [c.cell_id for c in grid.cells]
        self._index = {cell_id: i for i, cell_id in enumerate(self.cell_ids)}
        self._lon_lat = [c.lon_lat for c in grid.cells]
        self._neighbours = neighbour_matrix(
            [[self._index[n] for n in grid.neighbours(cid)] for cid in self.cell_ids])
        self._group, self._n_groups = _groups(grid, settings)
        self._window_h = settings.window_hours
        self._ring_h = max(self._window_h)
        self._offset_s = settings.utc_offset_s
        self._warmup_h = math.ceil(settings.warmup_s / HOUR_S)
        self._hold_h = math.ceil(settings.hold_s / HOUR_S)
        half_life_h = settings.baseline_half_life_s / HOUR_S
        self._decay_hour = 0.5 ** (1.0 / half_life_h)
        self._decay_week = 0.5 ** (WEEK_H / half_life_h)
        self._decay_phi = 0.5 ** (HOUR_S / settings.dispersion_half_life_s)
        self._kinds: dict[str, _KindState] = {}
        self._hour: int | None = None  # the open (local) hour
        self.late_dropped = 0
        self.unknown_cells = 0
        # occurrences far ahead of the open hour, waiting for a second source to confirm
        # the jump: (hour, source key, occurrence, ts); see observe()
        self._ahead: list[tuple[int, tuple[str, str], Occurrence, float]] = []
        self.ahead_dropped = 0  # far-ahead occurrences no other source confirmed
        # hours closed one by one on each side of a long empty gap (the middle is skipped
        # in one step, _skip): enough to drain every window and hot spot, then to refill
        # the windows that end at the new hour
        self._drain_h = self._ring_h + self._hold_h + 1
        self._traced: dict[int, list[tuple[datetime, str, int, float]]] = {}
        self._source_keys: dict[tuple[str, str], str] = {}

    def trace(self, cell_id: str) -> None:
        """Record the hourly observed and expected counts of ``cell_id`` from now on
        (:meth:`series` returns them); for reports, not needed for detection."""
        if cell_id not in self._index:
            raise ValueError(f"expected a cell id of the grid, got {cell_id!r}")
        self._traced.setdefault(self._index[cell_id], [])

    def series(self, cell_id: str) -> list[tuple[datetime, str, int, float]]:
        """``(hour_start, kind, observed, expected)`` per closed hour of a traced cell."""
        return list(self._traced.get(self._index[cell_id], []))

    def excess(self, kind: str) -> tuple[list[str], FloatArray, FloatArray]:
        """Cell ids with their observed and expected totals of ``kind`` since each cell
        warmed up (zeros for a kind never seen)."""
        state = self._kinds.get(kind)
        if state is None:
            zero = np.zeros(len(self.cell_ids))
            return list(self.cell_ids), zero, zero.copy()
        return list(self.cell_ids), state.total_observed.copy(), state.total_expected.copy()

    # -- input ----------------------------------------------------------------------
    def observe(self, occurrence: Occurrence, *, ts: float | None = None
                ) -> list[HotspotFinding]:
        """Count one occurrence; returns the findings of any hours its time closed.

        ``ts`` is ``occurrence.observed_at.timestamp()`` where the caller has it already.
        """
        if ts is None:
            ts = occurrence.observed_at.timestamp()
        hour = int((ts + self._offset_s) // HOUR_S)
        findings = _EMPTY
        if self._hour is None:
            self._hour = hour
        elif hour > self._hour:
            if hour - self._hour > JUMP_CONFIRM_H:
                return self._jump(occurrence, hour, ts)
            findings = self._advance(hour)
        idx = self._index.get(occurrence.cell_id)
        if idx is None:
            self.unknown_cells += 1
            return findings
        state = self._kinds.get(occurrence.kind)
        if state is None:
            state = self._kinds[occurrence.kind] = _KindState(
                len(self.cell_ids), self._n_groups, self._ring_h, len(self._window_h),
                self.settings.dispersion_init)
        trail = state.evidence.get(idx)
        if trail is None:
            trail = state.evidence[idx] = _Trail()
        key = (occurrence.station_id, occurrence.source_id)
        source = self._source_keys.get(key)
        if source is None:
            source = self._source_keys[key] = f"{key[0]}/{key[1]}"
        if hour >= self._hour:
            state.current[idx] += 1
            if not state.active[idx]:
                state.active[idx] = True
                state.first_hour[idx] = hour
            hours = trail.hours
            first = not hours or hours[-1] != hour
            trail.drop_until(hour - self._ring_h)
        else:
            if self._hour - hour >= self._ring_h or not state.active[idx] or \
                    hour < state.first_hour[idx]:
                self.late_dropped += 1
                return findings
            # late beyond the stream's tolerance: counts in its windows, not in baselines
            state.observed_ring[hour % self._ring_h, idx] += 1
            first = False
        trail.append(hour, source, occurrence.event_ids,
                     (occurrence.snapshot_url or "") if first else None)
        return findings

    def _jump(self, occurrence: Occurrence, hour: int, ts: float) -> list[HotspotFinding]:
        """An occurrence more than ``JUMP_CONFIRM_H`` ahead of the open hour: held until
        one from another source lands within ``JUMP_CONFIRM_H`` of it (then the clock
        moves to the earlier of the two and every held occurrence is counted), so one
        source's bad clock cannot move the hour for everyone."""
        key = (occurrence.station_id, occurrence.source_id)
        confirmed = [a for a in self._ahead
                     if a[1] != key and abs(a[0] - hour) <= JUMP_CONFIRM_H]
        if not confirmed:
            if len(self._ahead) >= 1000:  # bounded: the oldest unconfirmed is dropped
                self._ahead.pop(0)
                self.ahead_dropped += 1
            self._ahead.append((hour, key, occurrence, ts))
            return _EMPTY
        held = sorted([*confirmed, (hour, key, occurrence, ts)], key=lambda a: a[3])
        self.ahead_dropped += len(self._ahead) - len(confirmed)
        self._ahead = []
        findings = self._advance(held[0][0])
        for _, _, ahead, ahead_ts in held:
            findings = [*findings, *self.observe(ahead, ts=ahead_ts)]
        return findings

    def flush(self) -> list[HotspotFinding]:
        """End of input: close the open hour (scored with what it has)."""
        if self._hour is None:
            return []
        self.ahead_dropped += len(self._ahead)
        self._ahead = []
        return self._advance(self._hour + 1)

    # -- the hour clock ---------------------------------------------------------------
    def _advance(self, to_hour: int) -> list[HotspotFinding]:
        """Close the hours up to ``to_hour``. A gap longer than twice ``_drain_h`` costs
        the same as one of that length: its first ``_drain_h`` hours are closed one by
        one (every window and hot spot with counts in it ends), the middle is skipped in
        one step (:meth:`_skip`), and the last ``_drain_h`` are closed one by one again
        (the windows ending at ``to_hour`` hold their expected counts)."""
        assert self._hour is not None
        findings: list[HotspotFinding] = []
        kinds = sorted(self._kinds)
        skip_at = self._hour + self._drain_h
        skip_to = to_hour - self._drain_h
        while self._hour < to_hour:
            if self._hour == skip_at and skip_to > skip_at:
                for kind in kinds:
                    self._skip(self._kinds[kind], self._hour, skip_to)
                self._hour = skip_to
                continue
            for kind in kinds:
                findings.extend(self._close_hour(kind, self._kinds[kind], self._hour))
            self._hour += 1
        return findings

    def _skip(self, state: _KindState, first: int, end: int) -> None:
        """Close the empty hours ``first`` to ``end - 1`` in at most ``_SKIP_STEPS``
        steps, however many they are: the baselines decay and learn zeros as hour by hour
        would (per hour-of-week slot, in closed form); the cells' exposure grows at the
        group rate of each step's first hour (hour by hour it would follow each hour's
        rate: the one approximation). The rings, windows, dispersion and the excess
        totals are left as they are (every window is empty by now)."""
        step = max(24, -(-(end - first) // _SKIP_STEPS))
        for start in range(first, end, step):
            self._skip_step(state, start, min(start + step, end))

    def _skip_step(self, state: _KindState, first: int, end: int) -> None:
        n = end - first
        slots = (np.arange(first, first + min(n, WEEK_H)) + 72) % WEEK_H
        k = np.zeros(WEEK_H)
        k[slots] = n // WEEK_H + (np.arange(min(n, WEEK_H)) < n % WEEK_H)
        learn = (state.active & (state.first_hour < first)).astype(np.float64)
        dw, dh = self._decay_week, self._decay_hour
        keep = dw ** k  # (WEEK_H,): each slot decays once per time it recurs
        added = (1.0 - keep) / (1.0 - dw)  # sum of dw**j over those times
        _, _, cell_group_rate = self._predict(state, int(slots[0]))
        state.slot_sum *= keep[:, None]
        state.slot_weight = keep[:, None] * state.slot_weight + added[:, None] * learn
        state.group_sum *= keep[:, None]
        state.group_weight = keep[:, None] * state.group_weight + added[:, None] * \
            np.bincount(self._group, weights=learn, minlength=self._n_groups)
        state.level_count *= dh ** n
        state.level_exposure = dh ** n * state.level_exposure + \
            (1.0 - dh ** n) / (1.0 - dh) * learn * cell_group_rate
        state.current[:] = 0
        state.hotspots.clear()

    def _predict(self, state: _KindState, slot: int
                 ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Expected count per cell for an hour-of-week slot, its variance (the baseline's
        own uncertainty), and the group rate per cell.

        Every step is a gamma-Poisson shrinkage whose prior weight is a number of
        *occurrences* (``profile_prior_count``), not of weeks: one week of a slot holds
        ~60 occurrences on a busy road (its own history soon wins) but less than one on a
        quiet one, where a single empty or lucky hour must not become the slot's normal.
        The prior of a slot is multiplicative, hour of day x day of week, each pooled so
        it rests on many occurrences: for the group, its hour of day (over the 7 days,
        shrunk toward its overall rate) x its weekday/weekend ratio (over all the hours of
        the 5 or 2 days: one unlucky Friday must not lower every Friday); for the cell,
        its level x the group's slot x the cell's own weekday/weekend ratio x its own hour
        of day (each a ratio of the cell's counts to what that prior expected, shrunk
        toward 1).
        """
        s = self.settings
        a = s.profile_prior_count
        g_sum, g_weight = state.group_sum, state.group_weight
        n_groups = g_sum.shape[1]
        overall = g_sum.sum(axis=0) / np.maximum(g_weight.sum(axis=0), 1e-9)
        g_sum7 = g_sum.reshape(7, 24, n_groups)
        g_weight7 = g_weight.reshape(7, 24, n_groups)
        hod_rate = _shrink(g_sum7.sum(axis=0), g_weight7.sum(axis=0), overall, a)
        day_ratio = _day_type_ratio(g_sum7, g_weight7 * hod_rate, a)
        group_rate = _shrink(g_sum, g_weight,
                             (day_ratio[:, None, :] * hod_rate[None]).reshape(WEEK_H, -1), a)
        level = (state.level_count + s.level_prior_count) / \
                (state.level_exposure + s.level_prior_count)
        n = level.shape[0]
        base = (level * group_rate[:, self._group]).reshape(7, 24, n)
        own_sum = state.slot_sum.reshape(7, 24, n)
        own_weight = state.slot_weight.reshape(7, 24, n)
        cell_day = _day_type_ratio(own_sum, own_weight * base, a)
        # the cell's own hour-of-day ratio, for this slot's hour (the only one used):
        # (7, n) slices, the same products and sums as over the whole (7, 24, n) array
        day, hod = divmod(slot, 24)
        base_hod = base[:, hod, :] * cell_day
        cell_hod = (own_sum[:, hod, :].sum(axis=0) + a) / \
            ((own_weight[:, hod, :] * base_hod).sum(axis=0) + a)
        prior = np.maximum(base_hod[day] * cell_hod, 1e-6)
        # prior weight in weeks: profile_prior_weeks plus profile_prior_count occurrences
        k = s.profile_prior_weeks + a / prior
        weeks = state.slot_weight[slot] + k
        mu = np.maximum((state.slot_sum[slot] + k * prior) / weeks, 1e-6)
        # gamma posterior variance of the slot's rate (prior shape k * prior, rate k)
        return mu, mu / weeks, group_rate[slot][self._group]

    def _close_hour(self, kind: str, state: _KindState, hour: int) -> list[HotspotFinding]:
        s = self.settings
        slot = (hour + 72) % WEEK_H  # local hour-of-week, Monday 00:00 = 0 (1970-01-01: Thu)
        learn = state.active & (state.first_hour < hour)
        mu, mu_var, cell_group_rate = self._predict(state, slot)
        counts = state.current.copy()
        state.current[:] = 0
        pos = hour % self._ring_h
        state.observed_ring[pos] = np.where(learn, counts, 0)
        state.expected_ring[pos] = np.where(learn, mu, 0.0)
        state.expected_var_ring[pos] = np.where(learn, mu_var, 0.0)
        warm = learn & (hour - state.first_hour >= self._warmup_h)
        state.total_observed += np.where(warm, counts, 0)
        state.total_expected += np.where(warm, mu, 0.0)
        if self._traced:
            at = datetime.fromtimestamp(hour * HOUR_S - self._offset_s, UTC)
            for idx, rows in self._traced.items():
                if learn[idx]:
                    rows.append((at, kind, int(counts[idx]), float(mu[idx])))
        findings = self._evaluate(kind, state, hour) if learn.any() else []
        # learn from this hour: once warmed up, counts are capped so a burst does not
        # become the new normal (during warm-up the baseline is still finding its level)
        raw = counts.astype(np.float64)
        capped = winsorise(raw, mu, float(state.phi[0]), s.winsor_z)
        y = np.where(learn, np.where(warm, capped, raw), 0.0)
        w = learn.astype(np.float64)
        dw, dh = self._decay_week, self._decay_hour
        state.slot_sum[slot] = dw * state.slot_sum[slot] + y
        state.slot_weight[slot] = dw * state.slot_weight[slot] + w
        state.level_count = dh * state.level_count + y
        state.level_exposure = dh * state.level_exposure + w * cell_group_rate
        n_groups = self._n_groups
        state.group_sum[slot] = dw * state.group_sum[slot] + np.bincount(
            self._group, weights=y, minlength=n_groups)
        state.group_weight[slot] = dw * state.group_weight[slot] + np.bincount(
            self._group, weights=w, minlength=n_groups)
        return findings

    # -- significance -----------------------------------------------------------------
    def _evaluate(self, kind: str, state: _KindState, hour: int) -> list[HotspotFinding]:
        s = self.settings
        age = hour - state.first_hour
        active = state.active
        eligible = active & (age >= self._warmup_h)
        n_cells = len(self.cell_ids)
        n_windows = len(self._window_h)
        best_p = np.ones(n_cells)
        best_w = np.full(n_cells, -1, dtype=np.int64)
        scans: list[ZoneScan | None] = []
        window_counts: list[tuple[FloatArray, FloatArray]] = []
        level_var = 1.0 / (state.level_count + s.level_prior_count)
        in_hotspot = np.zeros(n_cells, dtype=bool)
        for spot in state.hotspots.values():
            in_hotspot[list(spot.members)] = True
        for wi, wh in enumerate(self._window_h):
            rows = [(hour - j) % self._ring_h for j in range(wh)]
            observed = state.observed_ring[rows].sum(axis=0).astype(np.float64)
            expected = state.expected_ring[rows].sum(axis=0)
            phi = float(state.phi[wi])
            baseline_var = level_var * expected * expected + \
                state.expected_var_ring[rows].sum(axis=0)
            variance = expected + phi * expected * expected + baseline_var
            window_counts.append((observed, expected))
            self._update_dispersion(state, wi, observed, expected, variance, baseline_var,
                                    active & (age >= wh) & ~in_hotspot)
            if not eligible.any():
                scans.append(None)
                continue
            scan = scan_zones(observed, expected, variance, eligible, self._neighbours,
                              min_count=s.min_count, min_ratio=s.min_ratio,
                              member_min_ratio=s.member_min_ratio,
                              max_members=s.max_members,
                              single_share=s.single_cell_share)
            scans.append(scan)
            p = np.minimum(1.0, scan.p_value * n_windows)
            better = p < best_p[scan.centres]
            best_p[scan.centres[better]] = p[better]
            best_w[scan.centres[better]] = wi
        m = int(eligible.sum())
        candidates = np.nonzero(best_w >= 0)[0]
        if m == 0 or candidates.size == 0:
            self._expire(state, hour)
            return []
        # A hot spot already on a ticket is followed with a single test at level fdr_q
        # (hysteresis); new ones face the bar for new ones below (cells already in a hot
        # spot are not in BH's family), so persisting hot spots do not loosen it.
        following = in_hotspot[candidates]
        keep_on = candidates[following][best_p[candidates[following]] <= s.fdr_q]
        fresh = candidates[~following]
        m_fresh = max(m - int((eligible & in_hotspot).sum()), 1)
        # New hot spots. "cell_rate": each cell is its own family, held to
        # cell_alarm_rate_per_day false alarms per day (p <= that / 24 per hourly test;
        # nominally, as the hourly tests overlap the real rate is lower), however many
        # cells there are: the target is false tickets per cell-day, and BH's first bar
        # (fdr_q / m) would ask a cell of a 450-camera city for ten times the evidence
        # asked of one of 45. "fdr": Benjamini-Hochberg across the kind's cells, with the
        # per-cell rate as a cap (binding where few cells share the family).
        cap = s.cell_alarm_rate_per_day / 24.0
        if s.new_hotspot_rule == "cell_rate" and cap > 0:
            new = fresh
            new_level = cap
        else:
            new = fresh[benjamini_hochberg(best_p[fresh], s.fdr_q, m_fresh)]
            new_level = s.fdr_q * max(new.size, 1) / m_fresh
        if cap > 0:
            new = new[best_p[new] <= cap]
            new_level = min(new_level, cap)
        chosen = np.concatenate([keep_on, new])
        order = np.lexsort((chosen, best_p[chosen]))
        taken: set[int] = set()
        findings: list[HotspotFinding] = []
        emitted: set[int] = set()
        for centre in chosen[order].tolist():
            wi = int(best_w[centre])
            picked = scans[wi]
            assert picked is not None
            row = int(np.searchsorted(picked.centres, centre))
            size = int(picked.size[row])
            members = [int(x) for x in picked.members[row, :size]]
            if taken.intersection(members):
                continue  # Kulldorff's secondary clusters: no overlap with a better one
            taken.update(members)
            # the ticket's cell: the member with the most extra occurrences (not the scan's
            # centre, which may be a neighbour that happened to gather the zone)
            w_obs, w_exp = window_counts[wi]
            excess = w_obs[members] - w_exp[members]
            top = max(range(len(members)),
                      key=lambda j: (float(excess[j]), -members[j]))
            spot = self._track(state, members[top], members, hour)
            if spot.centre in emitted:
                continue
            emitted.add(spot.centre)
            findings.append(self._finding(
                kind, state, hour, spot, members, wi, float(best_p[centre]),
                float(picked.observed[row]), float(picked.expected[row]),
                m_fresh if centre in new else 1,
                new_level if centre in new else s.fdr_q))
        self._expire(state, hour)
        return findings

    def _update_dispersion(self, state: _KindState, wi: int, observed: FloatArray,
                           expected: FloatArray, variance: FloatArray,
                           baseline_var: FloatArray, usable: BoolArray) -> None:
        """Method-of-moments over-dispersion ``E[(O-mu)^2 - O - b] = phi mu^2``, where
        ``b`` is the baseline's own variance (added to the test's variance separately, so
        it must not be counted twice), exponentially weighted in event time; outliers
        (|z| > 5, mostly real hot spots) are left out."""
        if not usable.any():
            return
        o, e, v = observed[usable], expected[usable], variance[usable]
        resid = o - e
        keep = np.abs(resid) <= 5.0 * np.sqrt(v)
        num = float(np.sum(resid[keep] ** 2 - o[keep] - baseline_var[usable][keep]))
        den = float(np.sum(e[keep] ** 2))
        d = self._decay_phi
        state.phi_num[wi] = d * state.phi_num[wi] + num
        state.phi_den[wi] = d * state.phi_den[wi] + den
        est = state.phi_num[wi] / max(state.phi_den[wi], 1e-12)
        state.phi[wi] = min(max(est, self.settings.dispersion_floor), 10.0)

    # -- hot-spot tracking --------------------------------------------------------------
    def _track(self, state: _KindState, centre: int, members: list[int],
               hour: int) -> _Active:
        """The centre cell that names this zone's ticket: an active hot spot it overlaps
        keeps its centre; otherwise the zone's own centre starts a new hot spot."""
        zone = frozenset(members)
        overlapping = [spot for spot in state.hotspots.values()
                       if spot.members & zone or spot.centre in zone]
        if overlapping:
            spot = min(overlapping, key=lambda a: (a.first_hour, a.centre))
            spot.members = zone | {spot.centre}
            spot.last_hour = hour
            return spot
        spot = state.hotspots[centre] = _Active(centre, zone, hour, hour, -1)
        return spot

    def _expire(self, state: _KindState, hour: int) -> None:
        stale = [c for c, spot in state.hotspots.items() if hour - spot.last_hour > self._hold_h]
        for c in stale:
            del state.hotspots[c]

    # -- evidence ---------------------------------------------------------------------
    def _finding(self, kind: str, state: _KindState, hour: int, spot: _Active,
                 members: list[int], wi: int, p_value: float, observed: float,
                 expected: float, tests: int, level: float) -> HotspotFinding:
        s = self.settings
        centre = spot.centre
        wh = self._window_h[wi]
        first_h = hour - wh + 1
        start_s = first_h * HOUR_S - self._offset_s
        end_s = (hour + 1) * HOUR_S - self._offset_s
        member_ids = sorted(members, key=lambda i: self.cell_ids[i])
        seen: list[_Seen] = []
        for idx in member_ids:
            trail = state.evidence.get(idx)
            if trail is not None:
                seen.extend(trail.between(first_h, hour))
        seen.sort(key=itemgetter(0))  # stable: cell order, then arrival, within an hour
        sources = Counter(e[1] for e in seen)
        event_ids: list[str] = []
        # each detection id reaches the ticket once: only hours not reported before (the
        # last reported hour again, for ids a track added to its occurrence since)
        new_from = max(first_h, spot.reported_hour)
        for e in seen:
            if e[0] >= new_from:
                event_ids.extend(e[2])
        spot.reported_hour = hour
        top = sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))[: s.max_top_sources]
        firsts = [e for e in seen if e[3] is not None and e[2]]
        samples = [e[2][0] for e in _spread(firsts, s.max_sample_events)]
        snapshots: list[str] = []
        for e in _spread([e for e in firsts if e[3]], s.max_snapshots):
            if e[3] and e[3] not in snapshots:
                snapshots.append(e[3])
        rows = [(hour - j) % self._ring_h for j in range(wh)]
        hours_local = [hour - j for j in range(wh)]
        obs_rows = state.observed_ring[np.ix_(rows, members)].sum(axis=1)
        exp_rows = state.expected_ring[np.ix_(rows, members)].sum(axis=1)
        by_hour_obs = [0] * 24
        by_hour_exp = [0.0] * 24
        for h, o, e in zip(hours_local, obs_rows.tolist(), exp_rows.tolist(), strict=True):
            by_hour_obs[h % 24] += int(o)
            by_hour_exp[h % 24] += float(e)
        profile = tuple((h, by_hour_obs[h], by_hour_exp[h]) for h in range(24))
        cell_obs = state.observed_ring[rows][:, member_ids].sum(axis=0).tolist()
        cell_exp = state.expected_ring[rows][:, member_ids].sum(axis=0).tolist()
        lon, lat = self._lon_lat[centre]
        return HotspotFinding(
            kind=kind,
            cell_id=self.cell_ids[centre],
            member_cells=tuple(self.cell_ids[i] for i in member_ids),
            window_start=datetime.fromtimestamp(start_s, UTC),
            window_end=datetime.fromtimestamp(end_s, UTC),
            observed=int(round(observed)),
            expected=expected,
            p_value=p_value,
            lon=lon,
            lat=lat,
            event_ids=tuple(event_ids),
            top_sources=tuple(top),
            sample_event_ids=tuple(samples),
            snapshot_urls=tuple(snapshots),
            hourly_profile=profile,
            extra={
                "window_s": wh * HOUR_S,
                "ratio": round(observed / max(expected, 1e-9), 3),
                "scan_centre": self.cell_ids[members[0]],
                "cluster_since": datetime.fromtimestamp(
                    (spot.first_hour + 1) * HOUR_S - self._offset_s, UTC),
                "members": [
                    {"cell_id": self.cell_ids[i], "observed": int(o),
                     "expected": round(float(e), 4)}
                    for i, o, e in zip(member_ids, cell_obs, cell_exp, strict=True)
                ],
                "dispersion": round(float(state.phi[wi]), 5),
                "tests": tests,
                "level": level,
                "fdr_q": s.fdr_q,
                "hourly_profile_tz_offset_s": self._offset_s,
            },
            realert_cooldown_s=s.realert_cooldown_s,
        )

    # -- introspection (reports, tests) ---------------------------------------------------
    def expected_now(self, kind: str, cell_id: str) -> float:
        """Expected count of ``kind`` in ``cell_id`` for the open hour (0 if unseen)."""
        state = self._kinds.get(kind)
        if state is None or self._hour is None:
            return 0.0
        mu, _, _ = self._predict(state, (self._hour + 72) % WEEK_H)
        return float(mu[self._index[cell_id]])

    def kinds(self) -> list[str]:
        """Kinds seen so far, sorted."""
        return sorted(self._kinds)

    @property
    def open_hour(self) -> int | None:
        """The open hour (local hours since the epoch; ``None`` before any input): it
        moves when an hour closes, which is when a runtime checkpoints the state."""
        return self._hour


def _day_type_ratio(total: FloatArray, expected: FloatArray, prior_count: float
                    ) -> FloatArray:
    """Per day of week (rows of ``(7, 24, n)`` arrays), observed / expected of its day
    type (Monday-Friday or Saturday-Sunday), pooled over the type's days and hours and
    shrunk toward 1 with ``prior_count`` occurrences: a ``(7, n)`` array."""
    day_total = total.sum(axis=1)
    day_expected = expected.sum(axis=1)
    weekday = (day_total[:5].sum(axis=0) + prior_count) / \
        (day_expected[:5].sum(axis=0) + prior_count)
    weekend = (day_total[5:].sum(axis=0) + prior_count) / \
        (day_expected[5:].sum(axis=0) + prior_count)
    return np.vstack([np.broadcast_to(weekday, (5, weekday.shape[0])),
                      np.broadcast_to(weekend, (2, weekend.shape[0]))])


def _shrink(total: FloatArray, weight: FloatArray, prior: FloatArray,
            prior_count: float) -> FloatArray:
    """Gamma-Poisson posterior mean of a rate: ``total`` occurrences over ``weight`` units
    of exposure, with a prior of mean ``prior`` worth ``prior_count`` occurrences."""
    prior = np.maximum(prior, 1e-9)
    return (total + prior_count) / (weight + prior_count / prior)


def _spread(items: list[_Seen], k: int) -> list[_Seen]:
    """Up to ``k`` items evenly spread over the list (first and last included)."""
    n = len(items)
    if k <= 0 or n == 0:
        return []
    if n <= k:
        return list(items)
    picks = sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return [items[i] for i in picks]


def _groups(grid: Grid, settings: HotspotSettings) -> tuple[np.ndarray, int]:
    """The baseline group of each cell: its town (or district) when that unit has at least
    ``min_group_cells`` cells, else its district, else the whole grid."""
    towns: Counter[tuple[str, str]] = Counter()
    districts: Counter[str] = Counter()
    for c in grid.cells:
        if c.town:
            towns[(c.district or "", c.town)] += 1
        if c.district:
            districts[c.district] += 1
    keys: list[str] = []
    for c in grid.cells:
        key = "*"
        if settings.group_level == "town" and c.town and \
                towns[(c.district or "", c.town)] >= settings.min_group_cells:
            key = f"t\x1f{c.district or ''}\x1f{c.town}"
        elif settings.group_level in ("town", "district") and c.district and \
                districts[c.district] >= settings.min_group_cells:
            key = f"d\x1f{c.district}"
        keys.append(key)
    names = sorted(set(keys))
    number = {name: i for i, name in enumerate(names)}
    return np.array([number[k] for k in keys], dtype=np.int64), len(names)
