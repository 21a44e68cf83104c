"""Receipts: the centre tells a station what it has taken for good (wire format v1).

A receipt travels on ``<prefix>/<station_id>/receipt`` (:func:`detectors.topics.receipt_topic`,
QoS 1), one message per station per committed batch, and names event ids by channel
(``detection``, ``evidence``) and outcome:

- ``committed``: in the ticket store (evidence: in the evidence store);
- ``duplicate``: the centre had this event id already (committed or dead-lettered before);
- ``deadlettered``: refused for good, published to the dead-letter topic with its reason;
  the ids are grouped by the dead-letter code.

Any of the three is final: the edge deletes the message from its outbox. Nothing else is.

>>> r = Receipt()
>>> r.add("detection", "st1:e1", COMMITTED)
>>> r.add("detection", "st1:e2", DEADLETTERED, "clock_skew")
>>> encode_receipt(r)
b'{"schema":"gridwatch.receipt/1","detection":{"committed":["st1:e1"],"deadlettered":{"clock_skew":["st1:e2"]}}}'
>>> [(e.channel, e.event_id, e.outcome, e.code) for e in parse_receipt(encode_receipt(r))]
[('detection', 'st1:e1', 'committed', None), ('detection', 'st1:e2', 'deadlettered', 'clock_skew')]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

SCHEMA = "gridwatch.receipt/1"
COMMITTED = "committed"
DUPLICATE = "duplicate"
DEADLETTERED = "deadlettered"
OUTCOMES = (COMMITTED, DUPLICATE, DEADLETTERED)
CHANNELS = ("detection", "evidence")


class ReceiptRejected(ValueError):
    """A receipt message that does not follow this format (the reason says where)."""


class ReceiptEntry(NamedTuple):
    channel: str
    event_id: str
    outcome: str
    code: str | None = None  # the dead-letter code (``deadlettered`` only)


@dataclass
class Receipt:
    """A batch of outcomes for one station, in the order they were added."""

    entries: list[ReceiptEntry] = field(default_factory=list)

    def add(self, channel: str, event_id: str, outcome: str, code: str | None = None) -> None:
        if channel not in CHANNELS:
            raise ValueError(f"channel: expected one of {CHANNELS}, got {channel!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: expected one of {OUTCOMES}, got {outcome!r}")
        if (outcome == DEADLETTERED) != bool(code):
            raise ValueError(f"code: a dead-lettered entry needs its code and no other "
                             f"outcome has one, got outcome {outcome!r} code {code!r}")
        self.entries.append(ReceiptEntry(channel, event_id, outcome, code))

    def __len__(self) -> int:
        return len(self.entries)


def encode_receipt(receipt: Receipt) -> bytes:
    """The compact JSON of a receipt (ids grouped by channel, outcome and code)."""
    body: dict[str, Any] = {"schema": SCHEMA}
    for entry in receipt.entries:
        channel = body.setdefault(entry.channel, {})
        if entry.outcome == DEADLETTERED:
            channel.setdefault(DEADLETTERED, {}).setdefault(entry.code, []).append(
                entry.event_id)
        else:
            channel.setdefault(entry.outcome, []).append(entry.event_id)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _ids(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ReceiptRejected(f"{where}: expected a list of event ids, got {value!r:.80}")
    return value


def parse_receipt(payload: bytes | bytearray | str) -> list[ReceiptEntry]:
    """The entries of a receipt message; raises :class:`ReceiptRejected` on anything else."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReceiptRejected(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        raise ReceiptRejected(f"schema: expected {SCHEMA!r}, got "
                              f"{body.get('schema') if isinstance(body, dict) else body!r:.80}")
    unknown = set(body) - {"schema", *CHANNELS}
    if unknown:
        raise ReceiptRejected(f"unknown field(s) {sorted(unknown)}")
    entries: list[ReceiptEntry] = []
    for channel in CHANNELS:
        outcomes = body.get(channel)
        if outcomes is None:
            continue
        if not isinstance(outcomes, dict) or set(outcomes) - set(OUTCOMES):
            raise ReceiptRejected(f"{channel}: expected an object with {OUTCOMES}, got "
                                  f"{outcomes!r:.80}")
        for outcome in (COMMITTED, DUPLICATE):
            for event_id in _ids(outcomes.get(outcome, []), f"{channel}.{outcome}"):
                entries.append(ReceiptEntry(channel, event_id, outcome))
        dead = outcomes.get(DEADLETTERED, {})
        if not isinstance(dead, dict):
            raise ReceiptRejected(f"{channel}.deadlettered: expected code -> event ids, "
                                  f"got {dead!r:.80}")
        for code, ids in dead.items():
            for event_id in _ids(ids, f"{channel}.deadlettered.{code}"):
                entries.append(ReceiptEntry(channel, event_id, DEADLETTERED, code))
    return entries
