"""ticketing/models.py: the public form of a ticket and how times are spelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.ticketing.builders import make_full_ticket
from ticketing.models import Ticket, rfc3339


@pytest.mark.parametrize(("value", "expected"), [
    (datetime(2026, 5, 4, 6, 0, 32, tzinfo=UTC), "2026-05-04T06:00:32Z"),
    (datetime(2026, 5, 4, 6, 0, 32, 5, tzinfo=UTC), "2026-05-04T06:00:32.000005Z"),
    (datetime(2026, 5, 4, 8, 0, 32, tzinfo=timezone(timedelta(hours=2))),
     "2026-05-04T06:00:32Z"),
    # the same wall time, an hour apart: equal as datetimes, spelled apart
    (datetime(2025, 11, 2, 1, 30, tzinfo=ZoneInfo("America/New_York")),
     "2025-11-02T05:30:00Z"),
    (datetime(2025, 11, 2, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
     "2025-11-02T06:30:00Z"),
])
def test_rfc3339_spells_the_utc_instant(value: datetime, expected: str) -> None:
    for _ in range(2):  # the second answer comes from the cache
        assert rfc3339(value) == expected


def test_to_public_without_event_ids_is_the_rest_of_it() -> None:
    ticket = make_full_ticket()
    full = ticket.to_public()
    body = ticket.to_public(event_ids=False)
    assert list(body) == [k for k in full if k != "event_ids"]  # same keys, same order
    assert body == {k: v for k, v in full.items() if k != "event_ids"}
    assert full["event_ids"] == ["e1", "e2"]
    assert full["status"] == "returned" and full["closed_at"] == "2026-05-04T06:03:00Z"
    assert full["hotspot"]["window_start"] == "2026-05-04T06:00:00Z"
    assert (full["received_at"], full["dispatched_at"], full["review_reason"]) == (
        "2026-05-04T06:00:05Z", "2026-05-04T06:00:30Z", "low_confidence")


def test_a_ticket_survives_its_public_form() -> None:
    ticket = make_full_ticket()
    ticket.hotspot = None  # its times stay strings when read back (as before)
    assert Ticket.from_public(ticket.to_public()) == ticket


def test_a_body_written_before_clocks_reads_its_clock_from_opened_at() -> None:
    body = make_full_ticket().to_public()
    for key in ("received_at", "dispatched_at", "clock_started_at", "clock_seq",
                "review_reason"):
        del body[key]
    old = Ticket.from_public(body)
    assert (old.clock_start, old.clock_seq, old.review_reason) == (old.opened_at, 1, None)
    assert old.red_at == old.due_at + (old.due_at - old.opened_at)


def test_to_public_hands_out_copies() -> None:
    ticket = make_full_ticket()
    out = ticket.to_public()
    for key in ("event_ids", "incident_ids", "source_ids", "snapshot_urls"):
        out[key].append("changed")
    out["hotspot"]["top_sources"].append("changed")
    assert ticket.event_ids == ["e1", "e2"] and ticket.source_ids == ["st1/a", "st1/b"]
    assert ticket.hotspot is not None and ticket.hotspot["top_sources"] == [{"source": "a"}]

