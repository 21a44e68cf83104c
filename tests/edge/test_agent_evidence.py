"""The agent's sink: a detection's ``file://`` snapshot goes into the outbox beside it (one
transaction), or is left out with its reason counted; the local file goes once the outbox
holds it unless ``evidence.keep_local``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detectors.evidence_message import parse_evidence
from detectors.schema import Detection
from edge.agent import EdgeAgent
from edge.config import StationConfig

JPEG = b"\xff\xd8\xff\xe0" + b"frame" * 100


def detection(event_id: str, snapshot_url: str | None) -> Detection:
    return Detection.new(
        event_id=event_id, observed_at=datetime(2026, 5, 4, 8, tzinfo=UTC),
        station_id="st1", source_id="cam-1", source_type="camera", kind="wrong_way_ebike",
        confidence=0.8, lon=113.12, lat=23.05,
        evidence={"snapshot_url": snapshot_url} if snapshot_url else None)


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[object]:
    agents: list[EdgeAgent] = []

    def make(**evidence: object) -> EdgeAgent:
        config = StationConfig.model_validate({
            "station_id": "st1", "state_dir": str(tmp_path / f"state{len(agents)}"),
            "metrics": {"port": 0}, "evidence": {"max_bytes": 2048, **evidence}})
        agents.append(EdgeAgent(config))
        return agents[-1]

    yield make
    for agent in agents:
        agent.outbox.close()


def snapshot(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "snaps" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def skipped(agent: EdgeAgent, reason: str) -> float | None:
    return agent.metrics.registry.get_sample_value(
        "gridwatch_edge_evidence_skipped_total", {"source": "cam-1", "reason": reason})


def test_snapshots_travel_with_their_detection_or_are_counted(tmp_path: Path,
                                                              make_agent) -> None:  # type: ignore[no-untyped-def]
    agent = make_agent()
    good = snapshot(tmp_path, "good.jpg", JPEG)
    big = snapshot(tmp_path, "big.jpg", JPEG[:4] + bytes(4096))
    text = snapshot(tmp_path, "text.jpg", b"not an image")
    agent.sink([detection("e-good", good.as_uri()), detection("e-big", big.as_uri()),
                detection("e-text", text.as_uri()),
                detection("e-gone", (tmp_path / "missing.jpg").as_uri()),
                detection("e-http", "http://192.168.1.64/snap.jpg"),
                detection("e-none", None)])
    rows = agent.outbox.fetch_after(0, limit=20)
    assert [r.event_id for r in rows] == ["e-good", "evidence:e-good", "e-big", "e-text",
                                          "e-gone", "e-http", "e-none"]
    assert rows[1].topic == "gridwatch/v1/st1/cam-1/evidence"
    header, image = parse_evidence(rows[1].payload)
    assert (header.event_id, header.content_type, image) == ("e-good", "image/jpeg", JPEG)
    assert not good.exists()  # sent: the outbox is the copy now
    assert big.exists() and text.exists()  # not sent: left where the camera put them
    assert (skipped(agent, "too_large"), skipped(agent, "not_an_image"),
            skipped(agent, "unreadable")) == (1, 1, 1)
    assert agent.metrics.registry.get_sample_value(
        "gridwatch_edge_evidence_enqueued_total", {"source": "cam-1"}) == 1
    # a re-run of the same video (same event ids) adds nothing
    again = snapshot(tmp_path, "again.jpg", JPEG)
    agent.sink([detection("e-good", again.as_uri())])
    assert agent.outbox.depth == len(rows)


@pytest.mark.parametrize(("settings", "rows", "kept"), [
    ({"keep_local": True}, ["e1", "evidence:e1"], True),
    ({"send": False}, ["e1"], True),
])
def test_keep_local_and_send_off(tmp_path: Path, make_agent, settings: dict[str, bool],  # type: ignore[no-untyped-def]
                                 rows: list[str], kept: bool) -> None:
    agent = make_agent(**settings)
    path = snapshot(tmp_path, "s.jpg", JPEG)
    agent.sink([detection("e1", path.as_uri())])
    assert [r.event_id for r in agent.outbox.fetch_after(0, limit=10)] == rows
    assert path.exists() is kept
