"""The 考核 report from the records: cards stay on the record of the unit that held the
ticket (across a recall and re-dispatch, and not for a review wait), review has its own
figures, durations read as hours and minutes (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tests.ticketing.builders import T0, Headers, api_act_ok, api_create, make_ticket
from ticketing import migrations
from ticketing.assessment import human_duration, spells_of
from ticketing.cards import cards_of
from ticketing.config import EscalationSettings
from ticketing.escalation import Escalator
from ticketing.models import Escalation

M = timedelta(minutes=1)






@pytest.mark.parametrize(("seconds", "text"), [
    (None, None), (0, "0 min 00 s"), (250, "4 min 10 s"), (3600, "1 h 00 min"),
    (3900, "1 h 05 min"), (3929.6, "1 h 05 min"), (2 * 86400 + 3 * 3600, "2 d 03 h"),
])
def test_human_durations(seconds: float | None, text: str | None) -> None:
    assert human_duration(seconds) == text


def test_cards_stay_with_the_unit_that_held_the_ticket(client: TestClient,
                                                       as_role: Headers, store,
                                                       clock) -> None:  # type: ignore[no-untyped-def]
    ops, fire, sec = as_role["operator"], as_role["fire"], as_role["security"]
    worker = Escalator(store=store, settings=EscalationSettings(remind_before_s=600))
    moved = api_create(client, as_role)  # fire_rescue, due T0 + 30 min
    waited = api_create(client, as_role, kind="odd_kind")  # review, due T0 + 30 min
    assert waited["review_reason"] == "unknown_kind"
    cards = worker.run_once(now=T0 + 31 * M)
    assert sorted((r.ticket_id == moved["ticket_id"], r.stage.value, r.department, r.phase)
                  for r in cards) == [(False, "yellow", "command_centre", "review"),
                                      (True, "yellow", "fire_rescue", "unit")]
    moved = client.get(f"/tickets/{moved['ticket_id']}", headers=ops).json()
    clock.now = T0 + 35 * M
    moved = api_act_ok(client, ops, moved, "recall", reason="a door, not smoke")
    clock.now = T0 + 40 * M
    moved = api_act_ok(client, ops, moved, "confirm", department="community_security")
    assert (moved["escalation"], moved["due_at"]) == ("none", "2026-05-04T07:10:00Z")
    assert worker.run_once(now=T0 + 45 * M) == []  # the new unit's clock is fresh
    clock.now = T0 + 50 * M
    waited = client.get(f"/tickets/{waited['ticket_id']}", headers=ops).json()
    waited = api_act_ok(client, ops, waited, "confirm", department="fire_rescue")
    clock.now = T0 + 51 * M
    waited = api_act_ok(client, fire, waited, "accept")
    assert [(r.stage.value, r.department) for r in worker.run_once(now=T0 + 71 * M)] == [
        ("yellow", "community_security")]
    moved = client.get(f"/tickets/{moved['ticket_id']}", headers=ops).json()
    clock.now = T0 + 72 * M
    moved = api_act_ok(client, sec, moved, "accept")
    clock.now = T0 + 80 * M
    api_act_ok(client, sec, moved, "resolve", note="door fixed")
    clock.now = T0 + 120 * M
    api_act_ok(client, fire, waited, "resolve", note="checked")
    clock.now = T0 + 130 * M

    with store.connection() as conn:
        recorded = cards_of(conn, [moved["ticket_id"], waited["ticket_id"]])
    assert sorted((c.department, c.phase, c.clock_seq, c.stage.value) for c in recorded) == [
        ("command_centre", "review", 1, "yellow"), ("community_security", "unit", 3, "yellow"),
        ("fire_rescue", "unit", 1, "yellow")]

    report = client.get("/reports/assessment", params={"month": "2026-05"},
                        headers=ops).json()
    rows = {r["department"]: r for r in report["departments"]}
    assert set(rows) == {"fire_rescue", "community_security"}  # not command_centre
    pick = ("tickets", "accepted", "resolved", "resolved_on_time", "on_time_rate",
            "overdue", "red_cards", "returned", "return_rate")
    # fire_rescue: the smoke ticket's deadline passed while it held it (yellow card, not
    # on time); the odd ticket it got at T0 + 50 min and resolved within its own clock
    assert {k: rows["fire_rescue"][k] for k in pick} == {
        "tickets": 2, "accepted": 1, "resolved": 1, "resolved_on_time": 1,
        "on_time_rate": 0.5, "overdue": 1, "red_cards": 0, "returned": 0,
        "return_rate": 0.0}
    assert (rows["fire_rescue"]["time_to_resolve_mean_s"],
            rows["fire_rescue"]["time_to_resolve_mean"]) == (4200.0, "1 h 10 min")
    # community_security: timed from when it received the work (T0 + 40 min)
    assert {k: rows["community_security"][k] for k in pick} == {
        "tickets": 1, "accepted": 1, "resolved": 1, "resolved_on_time": 0,
        "on_time_rate": 0.0, "overdue": 1, "red_cards": 0, "returned": 0,
        "return_rate": 0.0}
    assert (rows["community_security"]["time_to_accept_mean_s"],
            rows["community_security"]["time_to_accept_mean"]) == (1920.0, "32 min 00 s")
    review = report["review"]
    assert {k: review[k] for k in ("review_sla_s", "reviewed", "reviewed_in_time",
                                   "waiting", "in_time_rate", "overdue",
                                   "time_to_review_mean_s", "time_to_review_mean")} == {
        "review_sla_s": 1800, "reviewed": 2, "reviewed_in_time": 1, "waiting": 0,
        "in_time_rate": 0.5, "overdue": 1, "time_to_review_mean_s": 1650.0,
        "time_to_review_mean": "27 min 30 s"}

    text = client.get("/reports/assessment", params={"month": "2026-05", "format": "csv"},
                      headers=ops).text
    by_department = {r["department"]: r for r in csv.DictReader(io.StringIO(text))}
    assert by_department["fire_rescue"]["time_to_resolve_mean"] == "1 h 10 min"
    assert by_department["fire_rescue"]["time_to_resolve_mean_s"] == "4200.0"
    own = client.get("/reports/assessment", params={"month": "2026-05"},
                     headers=sec).json()
    assert [r["department"] for r in own["departments"]] == ["community_security"]
    assert "review" not in own

    # the report's earlier path answers the same, for the same callers
    assert client.get("/reports/evaluation", params={"month": "2026-05"},
                      headers=ops).json() == report
    assert client.get("/reports/evaluation", params={"month": "2026-05"},
                      headers=sec).json() == own
    old_csv = client.get("/reports/evaluation", params={"month": "2026-05", "format": "csv"},
                         headers=ops)
    assert old_csv.text == text
    assert old_csv.headers["content-disposition"] == \
        'attachment; filename="assessment-2026-05.csv"'


def test_a_ticket_without_clock_records_is_one_spell() -> None:
    ticket = make_ticket(accepted_at=T0 + 5 * M)
    [spell] = spells_of(ticket, [])
    assert (spell.department, spell.phase, spell.started_at, spell.due_at,
            spell.accepted_at) == ("fire_rescue", "unit", T0, T0 + 30 * M, T0 + 5 * M)


def test_a_schema_3_database_keeps_its_cards_on_the_escalated_unit(
        store_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # the database as it was before version 4; this store's writes also log each change,
    # so it has the change log (7), which is independent of the cards
    monkeypatch.setattr(migrations, "MIGRATIONS",
                        tuple(m for m in migrations.MIGRATIONS if m.version in (1, 2, 3, 7)))
    old = store_factory()
    ticket = make_ticket(department="community_security")  # moved on since the card
    old.save(ticket)
    with old.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("INSERT INTO escalations (ticket_id, stage, at, actor) VALUES"
                          " (:t, 'yellow', '2026-05-04T06:31:00.000000Z', 'w')"),
                     {"t": ticket.ticket_id})
        conn.execute(text(
            "INSERT INTO ticket_events (ticket_id, at, actor, action, from_status,"
            " to_status, note, data) VALUES (:t, '2026-05-04T06:31:00.000000Z', 'w',"
            " 'escalate', 'dispatched', 'dispatched', NULL, :d)"),
            {"t": ticket.ticket_id, "d": json.dumps({"stage": "yellow",
                                                     "department": "fire_rescue",
                                                     "level": "village", "unit": "V0"})})
    old.close()
    monkeypatch.undo()
    upgraded = store_factory()
    assert 4 in upgraded.applied_migrations
    with upgraded.connection() as conn:
        [card] = cards_of(conn, [ticket.ticket_id])
    assert (card.department, card.phase, card.clock_seq, card.stage, card.unit) == (
        "fire_rescue", "unit", 1, Escalation.YELLOW, "V0")
