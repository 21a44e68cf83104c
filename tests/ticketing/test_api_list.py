"""GET /tickets: repeatable filters, open / overdue, sort, the 422s for unknown
parameters and over-limit pages (on every GET route), and the page cache staying true
across writes and replicas (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.builders import make_grid
from tests.ticketing.builders import T0, TOKENS, make_auth, make_policies, make_ticket
from ticketing.api.app import create_app
from ticketing.models import Escalation, Origin, Ticket, TicketStatus

S = TicketStatus
OPS = {"Authorization": f"Bearer {TOKENS['operator']}"}
FIRE = {"Authorization": f"Bearer {TOKENS['fire']}"}
M = timedelta(minutes=1)


def _seed(store: Any) -> list[Ticket]:
    """Eight tickets that differ in every filtered and sorted field (opened a minute
    apart, so the default order is their index)."""
    specs: list[dict[str, Any]] = [
        dict(status=S.DISPATCHED, priority="P2", sla=timedelta(minutes=30)),
        dict(status=S.ACCEPTED, kind="door_forced", department="community_security",
             town="TownB", village="V2", cell_id="C20", sla=timedelta(minutes=10)),
        dict(status=S.PENDING_REVIEW, origin=Origin.API, priority="P3",
             sla=timedelta(hours=2)),
        dict(status=S.CLOSED, escalation=Escalation.YELLOW, sla=timedelta(minutes=5)),
        dict(status=S.RETURNED, district="D2", escalation=Escalation.RED, priority="P1",
             sla=timedelta(minutes=20)),
        dict(status=S.RESOLVED, origin=Origin.OPEN311, priority="P4",
             sla=timedelta(minutes=1)),
        dict(status=S.REOPENED, village="V1", cell_id="C10", sla=timedelta(hours=1)),
        dict(status=S.DISMISSED, kind="odd_kind", sla=timedelta(minutes=30)),
    ]
    tickets = []
    for i, spec in enumerate(specs):
        t = make_ticket(opened_at=i * M, **spec)
        # updated in the reverse order of opening
        t.updated_at = T0 + timedelta(hours=1) - i * M
        store.save(t)
        tickets.append(t)
    return tickets


def _ids(client: TestClient, query: str, headers: dict[str, str] = OPS) -> list[str]:
    response = client.get(f"/tickets?{query}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])  # one page holds them all here
    return [t["ticket_id"] for t in body["items"]]


@pytest.mark.parametrize(("query", "expected"), [
    ("status=dispatched&status=accepted", [0, 1]),  # was: only the last value
    ("status=closed&status=dismissed&status=resolved", [3, 5, 7]),
    ("kind=door_forced&kind=odd_kind", [1, 7]),
    ("department=community_security", [1]),
    ("town=TownB&town=Nowhere", [1]),
    ("village=V1&village=V2", [1, 6]),
    ("district=D2", [4]),
    ("cell_id=C20&cell_id=C10", [1, 6]),
    ("escalation=yellow&escalation=red", [3, 4]),
    ("origin=api&origin=open311", [2, 5]),
    ("priority=P1&priority=P4", [1, 3, 4, 5, 6, 7]),
    ("priority=P1&status=returned&status=closed", [3, 4]),  # AND across, OR within
    ("open=true", [0, 1, 2, 4, 6]),
    ("open=false", [3, 5, 7]),
    ("open=true&kind=door_forced", [1]),
])
def test_filters(client: TestClient, store: Any, query: str, expected: list[int]) -> None:
    tickets = _seed(store)
    assert _ids(client, query) == [tickets[i].ticket_id for i in expected]


def test_overdue_is_open_and_past_due_at_the_api_clock(client: TestClient, store: Any,
                                                       clock: Any) -> None:
    tickets = _seed(store)
    # due: 0 at +30 min, 1 at +11, 2 at +2h02, 4 at +24, 6 at +1h06 (closed ones never)
    clock.now = T0 + timedelta(minutes=25)
    assert _ids(client, "overdue=true") == [tickets[i].ticket_id for i in (1, 4)]
    assert _ids(client, "overdue=false") == [tickets[i].ticket_id
                                             for i in (0, 2, 3, 5, 6, 7)]
    clock.now = T0 + timedelta(hours=3)
    assert _ids(client, "overdue=true") == [tickets[i].ticket_id for i in (0, 1, 2, 4, 6)]
    assert _ids(client, "overdue=true&status=returned") == [tickets[4].ticket_id]


@pytest.mark.parametrize(("sort", "expected"), [
    ("opened", [0, 1, 2, 3, 4, 5, 6, 7]),
    ("-opened", [7, 6, 5, 4, 3, 2, 1, 0]),
    ("updated", [7, 6, 5, 4, 3, 2, 1, 0]),
    ("-updated", [0, 1, 2, 3, 4, 5, 6, 7]),
    # due: 5 +6, 3 +8, 1 +11, 4 +24, 0 +30, 7 +37, 6 +66, 2 +122 (minutes)
    ("due", [5, 3, 1, 4, 0, 7, 6, 2]),
    ("-due", [2, 6, 7, 0, 4, 1, 3, 5]),
    ("priority,due", [3, 1, 4, 7, 6, 0, 2, 5]),  # P1 first, then by deadline
    ("-priority,-opened", [5, 2, 0, 7, 6, 4, 3, 1]),
])
def test_sort(client: TestClient, store: Any, sort: str, expected: list[int]) -> None:
    tickets = _seed(store)
    assert _ids(client, f"sort={sort}") == [tickets[i].ticket_id for i in expected]


def test_sort_ties_break_by_ticket_id_and_pages_are_stable(client: TestClient,
                                                           store: Any) -> None:
    same = [make_ticket(priority="P2") for _ in range(6)]  # all opened at T0
    for t in same:
        store.save(t)
    by_id = sorted(t.ticket_id for t in same)
    for sort in ("priority", "-priority", "due", "-due", "opened", "-opened"):
        pages = [_page(client, f"sort={sort}&limit=2&offset={o}") for o in (0, 2, 4)]
        assert [i for page in pages for i in page] == by_id, sort


def _page(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/tickets?{query}", headers=OPS)
    assert response.status_code == 200, response.text
    return [t["ticket_id"] for t in response.json()["items"]]


def test_list_items_are_the_tickets_as_read_one_by_one(client: TestClient,
                                                       store: Any) -> None:
    tickets = _seed(store)
    hot = make_ticket(event_ids=["a", "b", "c"], hotspot={"observed": 3},
                      opened_at=timedelta(hours=9))
    store.save(hot)
    listed = client.get("/tickets?limit=20", headers=OPS).json()
    assert listed["total"] == len(tickets) + 1
    for item in listed["items"]:
        one = client.get(f"/tickets/{item['ticket_id']}", headers=OPS)
        assert one.json() == item
    assert listed["items"][-1]["ticket_id"] == hot.ticket_id
    assert listed["items"][-1]["event_ids"] == ["a", "b", "c"]
    assert listed["items"][-1]["hotspot"] == {"observed": 3}


def test_a_department_filter_beyond_its_own_is_refused(client: TestClient,
                                                       store: Any) -> None:
    tickets = _seed(store)
    assert _ids(client, "status=dispatched&status=closed", FIRE) == [
        tickets[i].ticket_id for i in (0, 3)]
    assert _ids(client, "department=fire_rescue", FIRE) == _ids(client, "", FIRE)
    both = client.get("/tickets?department=fire_rescue&department=community_security",
                      headers=FIRE)
    assert both.status_code == 403


@pytest.mark.parametrize(("query", "loc", "message"), [
    ("sortt=-due", ["query", "sortt"], "unknown query parameter 'sortt'; expected one of:"),
    ("overdue=true&stauts=open", ["query", "stauts"], "unknown query parameter 'stauts'"),
    ("limit=1000", ["query", "limit"],
     "limit must be at most 500 (ticketing.max_page_size), got 1000"),
    ("sort=-deadline", ["query", "sort"], "unknown sort key '-deadline'; expected one or "
     "more of opened, -opened, due, -due, priority, -priority, updated, -updated"),
    ("sort=due,-due", ["query", "sort"], "sort key 'due' given twice"),
    ("status=open", ["query", "status", 0], "Input should be 'pending_review'"),
    ("priority=P9", ["query", "priority", 0], "Input should be 'P1', 'P2', 'P3' or 'P4'"),
    ("overdue=perhaps", ["query", "overdue"], "valid boolean"),
])
def test_bad_queries_are_422_naming_the_parameter(client: TestClient, query: str,
                                                  loc: list[Any], message: str) -> None:
    response = client.get(f"/tickets?{query}", headers=OPS)
    assert response.status_code == 422, response.text
    [error] = [e for e in response.json()["detail"] if e["loc"] == loc]
    assert message in error["msg"]


def test_the_unknown_parameter_message_lists_the_allowed_ones(client: TestClient) -> None:
    detail = client.get("/tickets?overdu=1", headers=OPS).json()["detail"]
    assert detail == [{
        "type": "extra_forbidden", "loc": ["query", "overdu"], "input": "1",
        "msg": "unknown query parameter 'overdu'; expected one of: cell_id, department, "
               "district, escalation, kind, limit, offset, open, opened_from, opened_to, "
               "origin, overdue, priority, sort, status, town, village"}]


@pytest.mark.parametrize(("path", "allowed"), [
    ("/healthz", "none"),
    ("/tickets/GW-x", "none"),
    ("/tickets/GW-x/audit", "none"),
    ("/review/queue", "kind, limit, offset, town"),
    ("/sources", "none"),
    ("/reports/assessment?month=2026-05", "format, month"),
    ("/reports/evaluation?month=2026-05", "format, month"),
    ("/events", "idle_timeout_s, last_event_id, limit"),
    ("/docs", "none"),
    ("/redoc", "none"),
])
def test_every_get_route_refuses_unknown_parameters(client: TestClient, path: str,
                                                    allowed: str) -> None:
    joiner = "&" if "?" in path else "?"
    response = client.get(f"{path}{joiner}bogus=1", headers=OPS)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"] == (
        f"unknown query parameter 'bogus'; expected one of: {allowed}")


def test_review_queue_over_limit_names_the_maximum(client: TestClient) -> None:
    response = client.get("/review/queue?limit=501", headers=OPS)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "limit"] and "less than or equal to 500" in error["msg"]


def test_a_cached_page_is_never_served_after_a_change(client: TestClient, store: Any,
                                                      as_role: Any) -> None:
    tickets = _seed(store)
    first = client.get("/tickets?status=dispatched", headers=OPS).json()
    again = client.get("/tickets?status=dispatched", headers=OPS).json()
    assert first == again and [t["ticket_id"] for t in first["items"]] == [
        tickets[0].ticket_id]
    pages = client.app.state.gridwatch.pages  # type: ignore[attr-defined]
    assert pages.hits >= 1
    # a lifecycle change through the API, then a desk write to the store directly
    accepted = client.post(f"/tickets/{tickets[0].ticket_id}/actions", headers=FIRE,
                           json={"action": "accept", "version": 1})
    assert accepted.status_code == 200
    assert client.get("/tickets?status=dispatched", headers=OPS).json()["items"] == []
    store.save(make_ticket(status=S.DISPATCHED))
    assert client.get("/tickets?status=dispatched", headers=OPS).json()["total"] == 1


def test_a_page_cached_by_one_replica_sees_another_replicas_write(
        store_factory: Any, clock: Any) -> None:
    apps = [create_app(store=store_factory(), policies=make_policies(), grid=make_grid(),
                       auth=make_auth(), clock=clock) for _ in range(2)]
    ingest = {"Authorization": f"Bearer {TOKENS['ingest']}"}
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        assert b.get("/tickets", headers=OPS).json()["total"] == 0
        assert b.get("/tickets", headers=OPS).json()["total"] == 0  # cached now
        made = a.post("/tickets", headers=ingest,
                      json={"kind": "smoke", "lon": 0.5, "lat": 0.5}).json()
        listed = b.get("/tickets", headers=OPS).json()
    assert [t["ticket_id"] for t in listed["items"]] == [made["ticket_id"]]


def test_a_body_written_before_a_field_existed_lists_its_default(client: TestClient,
                                                                 store: Any) -> None:
    import json

    from sqlalchemy import text

    ticket = make_ticket(description="old")
    store.save(ticket)
    with store.engine.begin() as conn:  # as an older version wrote it: no description
        body = json.loads(conn.execute(text("SELECT body FROM tickets")).scalar_one())
        del body["description"]
        conn.execute(text("UPDATE tickets SET body = :b"), {"b": json.dumps(body)})
    [item] = client.get("/tickets?sort=-updated", headers=OPS).json()["items"]
    assert item["description"] is None
    assert item == client.get(f"/tickets/{ticket.ticket_id}", headers=OPS).json()
