"""Durable hot-spot state in the embedded service: a run interrupted by a clean stop or a
crash gives the same hot-spot tickets as an uninterrupted one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from geo.grid import Grid
from gridwatch.config import GridWatchConfig, load_config
from gridwatch.embedded import EmbeddedPipeline
from tests.support.hotspot_scenarios import Scenario, ScenarioSpec
from ticketing import checkpoints
from ticketing.store import SqliteTicketStore, SqlTicketStore

SPEC = ScenarioSpec(rows=5, cols=5, days=6, n_clusters=2, seed=11, town_block=5,
                    cluster_earliest_day=4, cluster_strengths=(6.0,), cluster_hours=(24,),
                    rate_bands=((1.0, 20.0, 60.0),))


@cache
def scenario() -> tuple[Grid, tuple[str, ...]]:
    """Two injected 6x clusters; every fifth rider is seen again 5 s later on the same
    track, so open tracks (the deduper's state) span batch and restart boundaries."""
    sc = Scenario.generate(SPEC)
    lines: list[str] = []
    for i, raw in enumerate(sc.detection_lines()):
        lines.append(raw)
        if i % 5 == 0:
            obj = json.loads(raw)
            obj["event_id"] += "-f2"
            seen = datetime.fromisoformat(obj["observed_at"]) + timedelta(seconds=5)
            obj["observed_at"] = seen.isoformat()
            lines.append(json.dumps(obj))
    return sc.grid, tuple(lines)


def config() -> GridWatchConfig:
    cfg = load_config()
    return cfg.model_copy(update={"hotspot": cfg.hotspot.model_copy(
        update={"warmup_s": 3 * 86400})})


def submit(pipeline: EmbeddedPipeline, lines: tuple[str, ...] | list[str],
           chunk: int = 97) -> None:
    for i in range(0, len(lines), chunk):
        for raw in lines[i:i + chunk]:
            assert pipeline.submit_raw(raw, origin="test").accepted
        assert pipeline.drain()


def hot_tickets(store: SqlTicketStore) -> list[dict[str, Any]]:
    return sorted((t.to_public() for t in store.all() if t.hotspot is not None),
                  key=lambda t: t["ticket_id"])


def uninterrupted(tmp_path: Path) -> list[dict[str, Any]]:
    grid, lines = scenario()
    store = SqliteTicketStore(tmp_path / "straight.db")
    pipeline = EmbeddedPipeline(config(), grid, store, received=None)
    submit(pipeline, lines)
    pipeline.close()
    return hot_tickets(store)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tickets = uninterrupted(tmp_path_factory.mktemp("ref"))
    assert len(tickets) == 2, "the scenario's two injected clusters must be ticketed"
    return tickets


@pytest.mark.parametrize("cut", [0.45, 0.71])
def test_a_clean_restart_gives_the_same_hot_spot_tickets(
        tmp_path: Path, reference: list[dict[str, Any]], cut: float) -> None:
    grid, lines = scenario()
    at = int(len(lines) * cut)
    first = EmbeddedPipeline(config(), grid, SqliteTicketStore(tmp_path / "t.db"), received=None)
    submit(first, lines[:at])
    first.close()  # the shutdown flush: a checkpoint, the open hour left open
    store = SqliteTicketStore(tmp_path / "t.db")
    with store.connection() as conn:
        saved = checkpoints.load(conn, name="embedded")
    assert saved.body is not None and saved.journal == []
    second = EmbeddedPipeline(config(), grid, store, received=None)
    assert second.restored["checkpoint"] == 1 and second.restored["journal"] == 0
    submit(second, lines[at:])
    second.close()
    assert hot_tickets(store) == reference


@pytest.fixture(params=["sqlite", "postgresql"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> Callable[[], SqlTicketStore]:
    if request.param == "sqlite":
        return lambda: SqliteTicketStore(tmp_path / "t.db")
    url, schema = request.getfixturevalue("pg_schema")
    return lambda: SqlTicketStore(url, schema=schema)


def test_a_crash_between_checkpoints_loses_nothing_and_counts_nothing_twice(
        store_factory: Callable[[], SqlTicketStore],
        reference: list[dict[str, Any]]) -> None:
    grid, lines = scenario()
    at = int(len(lines) * 0.58) + 13  # inside an hour, during a cluster's day
    crashed = EmbeddedPipeline(config(), grid, store_factory(), received=None)
    submit(crashed, lines[:at])
    # a crash: no close(), no shutdown checkpoint; what was committed is all there is.
    # The broker re-delivers the last messages whose acknowledgement was lost.
    store = store_factory()
    restarted = EmbeddedPipeline(config(), grid, store, received=None)
    assert restarted.restored["checkpoint"] == 1
    assert restarted.restored["journal"] > 0  # detections since the last closed hour
    redelivered = lines[at - 40:at]
    for raw in redelivered:
        assert restarted.submit_raw(raw, origin="test").duplicate
    submit(restarted, lines[at:])
    restarted.close()
    assert hot_tickets(store) == reference


def test_a_checkpoint_for_another_grid_is_not_restored(tmp_path: Path) -> None:
    grid, lines = scenario()
    first = EmbeddedPipeline(config(), grid, SqliteTicketStore(tmp_path / "t.db"), received=None)
    submit(first, lines[:500])
    first.close()
    other = Grid.from_geojson({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"cell_id": "X1"},
         "geometry": {"type": "Polygon",
                      "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}}]})
    cold = EmbeddedPipeline(config(), other, SqliteTicketStore(tmp_path / "t.db"), received=None)
    assert cold.restored == {}
    assert cold._core.processor.hotspots.open_hour is None
    cold.close()


def test_without_a_checkpoint_name_nothing_is_written(tmp_path: Path) -> None:
    grid, lines = scenario()
    store = SqliteTicketStore(tmp_path / "t.db")
    pipeline = EmbeddedPipeline(config(), grid, store, checkpoint_name=None, received=None)
    submit(pipeline, lines[:500])
    pipeline.close()
    with store.connection() as conn:
        assert checkpoints.load(conn, name="embedded").empty


def test_an_unreadable_journal_means_a_cold_start_not_a_crash(tmp_path: Path) -> None:
    grid, lines = scenario()
    store = SqliteTicketStore(tmp_path / "t.db")
    with store.transaction() as conn:
        checkpoints.append_journal(conn, name="embedded", lines='{"schema": "old/0"}')
    pipeline = EmbeddedPipeline(config(), grid, store, received=None)
    assert pipeline.restored == {}
    submit(pipeline, lines[:50])  # and it works on
    pipeline.close()
    with store.connection() as conn:
        assert checkpoints.load(conn, name="embedded").body is not None
