"""The topic layout: built and parsed in one place (edge.publisher)."""

from __future__ import annotations

import pytest

from edge.publisher import detection_topic, evidence_topic, parse_source_topic

P = "gridwatch/v1"


@pytest.mark.parametrize("build", [detection_topic, evidence_topic])
def test_what_is_built_parses_back(build) -> None:  # type: ignore[no-untyped-def]
    topic = build(P, "st-1", "cam.gate:2")
    assert parse_source_topic(P, topic) == ("st-1", "cam.gate:2", topic.rsplit("/", 1)[1])


@pytest.mark.parametrize("topic", [
    "gridwatch/v1/st1/status", "gridwatch/v1/deadletter", "gridwatch/v1/st1/cam/other",
    "gridwatch/v1//cam/evidence", "gridwatch/v1/st1/a/b/evidence", "other/v1/st1/cam/evidence",
])
def test_other_topics_are_not_source_topics(topic: str) -> None:
    assert parse_source_topic(P, topic) is None
