"""The topic layout: built and parsed in one place (detectors.topics), by edge and centre."""

from __future__ import annotations

import pytest

from detectors.topics import (
    Topic,
    deadletter_topic,
    detection_topic,
    evidence_topic,
    parse_source_topic,
    parse_topic,
    receipt_topic,
    source_filter,
    station_filter,
    status_topic,
)

P = "gridwatch/v1"


@pytest.mark.parametrize("build", [detection_topic, evidence_topic])
def test_what_is_built_parses_back(build) -> None:  # type: ignore[no-untyped-def]
    topic = build(P, "st-1", "cam.gate:2")
    assert parse_source_topic(P, topic) == ("st-1", "cam.gate:2", topic.rsplit("/", 1)[1])


@pytest.mark.parametrize(("topic", "expected"), [
    (status_topic(P, "st-1"), Topic("status", "st-1", None)),
    (receipt_topic(P, "st-1"), Topic("receipt", "st-1", None)),
    (deadletter_topic(P), Topic("deadletter", None, None)),
    (detection_topic(P, "st-1", "receipt"), Topic("detection", "st-1", "receipt")),
    (detection_topic("other/v2", "st-1", "s"), None),
])
def test_station_channels_and_the_dead_letters_parse(topic: str, expected: Topic | None
                                                     ) -> None:
    assert parse_topic(P, topic) == expected


@pytest.mark.parametrize("topic", [
    "gridwatch/v1/st1/status", "gridwatch/v1/deadletter", "gridwatch/v1/st1/cam/other",
    "gridwatch/v1//cam/evidence", "gridwatch/v1/st1/a/b/evidence", "other/v1/st1/cam/evidence",
    "gridwatch/v1/st1/receipt",
])
def test_other_topics_are_not_source_topics(topic: str) -> None:
    assert parse_source_topic(P, topic) is None


@pytest.mark.parametrize("topic", [
    "gridwatch/v1/st1", "gridwatch/v1/st1/receipt/x", "gridwatch/v1//receipt",
    "gridwatch/v1/st1/cam/status", "gridwatch/v1/deadletter/x", "gridwatch/v1",
])
def test_malformed_topics_do_not_parse(topic: str) -> None:
    assert parse_topic(P, topic) is None


def test_filters_match_what_is_built() -> None:
    import paho.mqtt.client as mqtt

    assert mqtt.topic_matches_sub(source_filter(P, "detection"),
                                  detection_topic(P, "st", "cam"))
    assert not mqtt.topic_matches_sub(source_filter(P, "detection"),
                                      evidence_topic(P, "st", "cam"))
    assert mqtt.topic_matches_sub(station_filter(P, "status"), status_topic(P, "st"))
    assert not mqtt.topic_matches_sub(station_filter(P, "status"), receipt_topic(P, "st"))


@pytest.mark.parametrize(("make", "channel"), [(source_filter, "status"),
                                               (station_filter, "detection")])
def test_a_filter_of_the_wrong_kind_of_channel_is_refused(make, channel: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="channel"):
        make(P, channel)
