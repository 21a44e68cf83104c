"""The edge checks its sources' clocks before sending (issue 12 part 3): a detection
dated too far ahead of the box's clock is kept out of the outbox, counted per source, and
shown in metrics and ``gridwatch edge status``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from edge.agent import EdgeAgent
from edge.config import ClockSettings, MetricsSettings, StationConfig
from gridwatch.cli import main
from tests.edge.helpers import spread_detection


def _agent(tmp_path: Path, **clock: float) -> EdgeAgent:
    return EdgeAgent(StationConfig(station_id="st1", state_dir=tmp_path / "edge",
                                   metrics=MetricsSettings(port=0),
                                   clock=ClockSettings(**clock)))


def _at(i: int, when: datetime):  # type: ignore[no-untyped-def]
    return spread_detection(i, station="st1").model_copy(update={"observed_at": when})


@pytest.mark.parametrize(("clock", "offset", "sent"), [
    ({}, timedelta(seconds=-5), True),
    ({}, timedelta(seconds=290), True),
    ({}, timedelta(seconds=310), False),  # clock.max_future_s: 300
    ({}, timedelta(days=-3650), True),  # no age limit by default (a backlog, a file)
    ({"max_age_s": 86400}, timedelta(days=-2), False),
])
def test_a_source_clock_too_far_off_is_not_sent(tmp_path, clock, offset, sent):
    agent = _agent(tmp_path, **clock)
    try:
        agent.sink([_at(1, datetime.now(UTC) + offset)])
        assert agent.outbox.depth == (1 if sent else 0)
        assert agent.status()["clock_skew"] == ({} if sent else {"door-1": 1})
    finally:
        agent.outbox.close()


def test_clock_skew_shows_in_metrics_and_edge_status(tmp_path, capsys):
    agent = _agent(tmp_path)
    try:
        agent.sink([_at(1, datetime.now(UTC)), _at(2, datetime(8999, 1, 1, tzinfo=UTC)),
                    _at(3, datetime(8999, 1, 1, tzinfo=UTC))])
        assert agent.outbox.depth == 1
        text = generate_latest(agent.metrics.registry).decode()
        assert 'gridwatch_edge_clock_skew_total{source="door-2"} 1.0' in text
        agent._write_status()
    finally:
        agent.outbox.close()
    config = tmp_path / "station.yaml"
    config.write_text(f"station_id: st1\nstate_dir: {tmp_path / 'edge'}\n", encoding="utf-8")
    main(["edge", "status", "--config", str(config)])
    out = capsys.readouterr().out
    assert "source door-2: CLOCK SKEW, 1 detection(s) not sent" in out
    assert "source door-3: CLOCK SKEW, 1 detection(s) not sent" in out


def test_clock_settings_refuse_nonsense_with_the_field():
    with pytest.raises(ValueError, match="max_future_s"):
        ClockSettings(max_future_s=-1)
