"""The MQTT topic layout of GridWatch, built and parsed in this one module.

Both sides import it: the edge (``edge.publisher``, ``edge.agent``) builds the topics it
publishes on and the receipt topic it subscribes to; the centre (``gridwatch.ingest``)
builds its subscription filters and parses what arrives. Under a prefix (default
``gridwatch/v1``):

================================================  ==========================================
``<prefix>/<station_id>/<source_id>/detection``   a detection (edge → centre, QoS 1)
``<prefix>/<station_id>/<source_id>/evidence``    its snapshot (edge → centre, QoS 1)
``<prefix>/<station_id>/status``                  retained ``online``/``offline`` (last will)
``<prefix>/<station_id>/receipt``                 what the centre committed or dead-lettered
                                                  (centre → edge, QoS 1;
                                                  :mod:`detectors.receipt_message`)
``<prefix>/deadletter``                           refused messages with their reason
================================================  ==========================================

>>> detection_topic("gridwatch/v1", "st1", "cam-1")
'gridwatch/v1/st1/cam-1/detection'
>>> parse_topic("gridwatch/v1", "gridwatch/v1/st1/cam-1/detection")
Topic(channel='detection', station_id='st1', source_id='cam-1')
>>> parse_topic("gridwatch/v1", "gridwatch/v1/st1/receipt")
Topic(channel='receipt', station_id='st1', source_id=None)
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_PREFIX = "gridwatch/v1"

DETECTION = "detection"
EVIDENCE = "evidence"
STATUS = "status"
RECEIPT = "receipt"
DEADLETTER = "deadletter"

SOURCE_CHANNELS = (DETECTION, EVIDENCE)  # <prefix>/<station>/<source>/<channel>
STATION_CHANNELS = (STATUS, RECEIPT)  # <prefix>/<station>/<channel>


class Topic(NamedTuple):
    """A parsed topic: its channel and whose it is (``source_id`` only for source
    channels; both ids ``None`` for the dead-letter topic)."""

    channel: str
    station_id: str | None
    source_id: str | None


def detection_topic(prefix: str, station_id: str, source_id: str) -> str:
    """``<prefix>/<station_id>/<source_id>/detection``."""
    return f"{prefix}/{station_id}/{source_id}/{DETECTION}"


def evidence_topic(prefix: str, station_id: str, source_id: str) -> str:
    """``<prefix>/<station_id>/<source_id>/evidence``: a detection's snapshot
    (``detectors.evidence_message``)."""
    return f"{prefix}/{station_id}/{source_id}/{EVIDENCE}"


def status_topic(prefix: str, station_id: str) -> str:
    """``<prefix>/<station_id>/status`` (retained ``online`` / ``offline``)."""
    return f"{prefix}/{station_id}/{STATUS}"


def receipt_topic(prefix: str, station_id: str) -> str:
    """``<prefix>/<station_id>/receipt``: the centre's receipts for this station."""
    return f"{prefix}/{station_id}/{RECEIPT}"


def deadletter_topic(prefix: str) -> str:
    """``<prefix>/deadletter``."""
    return f"{prefix}/{DEADLETTER}"


def source_filter(prefix: str, channel: str) -> str:
    """The subscription filter of a source channel on every station:
    ``<prefix>/+/+/<channel>``."""
    if channel not in SOURCE_CHANNELS:
        raise ValueError(f"channel: expected one of {SOURCE_CHANNELS}, got {channel!r}")
    return f"{prefix}/+/+/{channel}"


def station_filter(prefix: str, channel: str) -> str:
    """The subscription filter of a station channel on every station:
    ``<prefix>/+/<channel>``."""
    if channel not in STATION_CHANNELS:
        raise ValueError(f"channel: expected one of {STATION_CHANNELS}, got {channel!r}")
    return f"{prefix}/+/{channel}"


def parse_topic(prefix: str, topic: str) -> Topic | None:
    """What a topic of this layout is, else ``None`` (another prefix, an unknown channel,
    an empty id, a level too many or too few).

    >>> parse_topic("gridwatch/v1", "gridwatch/v1/deadletter")
    Topic(channel='deadletter', station_id=None, source_id=None)
    >>> parse_topic("gridwatch/v1", "gridwatch/v1/st1/cam/other") is None
    True
    """
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if not all(parts):
        return None
    if len(parts) == 3 and parts[2] in SOURCE_CHANNELS:
        return Topic(parts[2], parts[0], parts[1])
    if len(parts) == 2 and parts[1] in STATION_CHANNELS:
        return Topic(parts[1], parts[0], None)
    if parts == [DEADLETTER]:
        return Topic(DEADLETTER, None, None)
    return None


def parse_source_topic(prefix: str, topic: str) -> tuple[str, str, str] | None:
    """``(station_id, source_id, channel)`` of a detection or evidence topic, else None.

    >>> parse_source_topic("gridwatch/v1", "gridwatch/v1/st1/cam-1/evidence")
    ('st1', 'cam-1', 'evidence')
    >>> parse_source_topic("gridwatch/v1", "gridwatch/v1/st1/status") is None
    True
    """
    parsed = parse_topic(prefix, topic)
    if parsed is None or parsed.source_id is None or parsed.station_id is None:
        return None
    return parsed.station_id, parsed.source_id, parsed.channel
