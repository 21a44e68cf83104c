"""Receipts (detectors.receipt_message): what the centre encodes the edge parses back."""

from __future__ import annotations

import json

import pytest

from detectors.receipt_message import (
    COMMITTED,
    DEADLETTERED,
    DUPLICATE,
    Receipt,
    ReceiptEntry,
    ReceiptRejected,
    encode_receipt,
    parse_receipt,
)


def test_a_mixed_receipt_round_trips_grouped_by_channel_outcome_and_code() -> None:
    r = Receipt()
    r.add("detection", "a", COMMITTED)
    r.add("detection", "b", DUPLICATE)
    r.add("detection", "c", DEADLETTERED, "clock_skew")
    r.add("detection", "d", DEADLETTERED, "store_refused")
    r.add("detection", "e", COMMITTED)
    r.add("evidence", "a", COMMITTED)
    r.add("evidence", "f", DEADLETTERED, "evidence_checksum")
    payload = encode_receipt(r)
    assert json.loads(payload)["detection"]["committed"] == ["a", "e"]
    assert sorted(parse_receipt(payload)) == sorted(r.entries)
    assert len(payload) < 250  # compact: no per-id keys


@pytest.mark.parametrize(("args", "message"), [
    (("nope", "a", COMMITTED), "channel"),
    (("detection", "a", "lost"), "outcome"),
    (("detection", "a", DEADLETTERED), "code"),
    (("detection", "a", COMMITTED, "x"), "code"),
])
def test_bad_entries_are_refused_when_built(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Receipt().add(*args)


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "not JSON"),
    (b'{"schema": "gridwatch.receipt/2"}', "schema"),
    (b'[1]', "schema"),
    (b'{"schema": "gridwatch.receipt/1", "extra": 1}', "unknown field"),
    (b'{"schema": "gridwatch.receipt/1", "detection": {"lost": ["a"]}}', "detection"),
    (b'{"schema": "gridwatch.receipt/1", "detection": {"committed": "a"}}',
     "detection.committed"),
    (b'{"schema": "gridwatch.receipt/1", "detection": {"committed": [""]}}',
     "detection.committed"),
    (b'{"schema": "gridwatch.receipt/1", "evidence": {"deadlettered": ["a"]}}',
     "evidence.deadlettered"),
])
def test_malformed_receipts_are_refused_with_where(payload: bytes, message: str) -> None:
    with pytest.raises(ReceiptRejected, match=message):
        parse_receipt(payload)


def test_an_empty_receipt_names_nothing() -> None:
    assert parse_receipt(b'{"schema": "gridwatch.receipt/1"}') == []
    assert ReceiptEntry("detection", "a", COMMITTED).code is None
