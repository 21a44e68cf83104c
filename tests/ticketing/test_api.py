"""The HTTP API: status and body on every route, lifecycle over HTTP, optimistic
concurrency, auth and department scoping (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.ticketing.builders import T0, make_ticket
from ticketing.migrations import LATEST
from ticketing.models import TicketStatus

S = TicketStatus
Headers = dict[str, dict[str, str]]


def _create(client: TestClient, h: Headers, **body: Any) -> dict[str, Any]:
    payload = {"kind": "smoke", "lon": 0.5, "lat": 0.5, **body}
    response = client.post("/tickets", json=payload, headers=h["ingest"])
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _act(client: TestClient, h: dict[str, str], ticket: dict[str, Any], action: str,
         **body: Any) -> Any:
    return client.post(f"/tickets/{ticket['ticket_id']}/actions", headers=h,
                       json={"action": action, "version": ticket["version"], **body})


def test_healthz_tells_an_authenticated_caller_the_store_and_its_counts(
        client: TestClient, as_role: Headers, backend: str) -> None:
    _create(client, as_role, external_id="h-1")
    response = client.get("/healthz", headers=as_role["fire"])
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "storage": backend.replace("postgres",
                                                                         "postgresql"),
                               "schema_version": LATEST, "tickets": 1}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}],
                         ids=["no-token", "unknown-token"])
def test_healthz_tells_anyone_else_only_that_it_is_up(
        client: TestClient, as_role: Headers, headers: dict[str, str]) -> None:
    # issue 12: /healthz used to give anyone the dialect, schema version and ticket count
    _create(client, as_role, external_id="h-1")
    response = client.get("/healthz", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_create_is_routed_and_idempotent(client: TestClient, as_role: Headers) -> None:
    ticket = _create(client, as_role, external_id="r-1", description="smoke seen")
    assert {k: ticket[k] for k in ("kind", "cell_id", "town", "department", "level",
                                   "unit", "status", "review", "priority", "origin",
                                   "version")} == {
        "kind": "smoke", "cell_id": "C00", "town": "TownA", "department": "fire_rescue",
        "level": "town", "unit": "TownA", "status": "dispatched",
        "review": "auto_dispatched", "priority": "P1", "origin": "api", "version": 1}
    assert ticket["due_at"] == "2026-05-04T06:30:00Z"
    again = client.post("/tickets", headers=as_role["ingest"],
                        json={"kind": "smoke", "lon": 0.5, "lat": 0.5, "external_id": "r-1"})
    assert again.status_code == 200 and again.json()["ticket_id"] == ticket["ticket_id"]
    unknown = _create(client, as_role, kind="new_plugin_kind")
    assert (unknown["status"], unknown["department"]) == ("pending_review", "command_centre")


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"kind": "smoke", "lon": 50, "lat": 50}, 422, "outside every grid cell"),
    ({"kind": "Smoke!", "lon": 0.5, "lat": 0.5}, 422, "pattern"),
    ({"kind": "smoke", "lon": 0.5}, 422, "lat"),
    ({"kind": "smoke", "lon": 0.5, "lat": 0.5, "extra": 1}, 422, "extra"),
    # found by schemathesis: year 1 with a positive offset has no UTC spelling (was a 500)
    ({"kind": "smoke", "lon": 0.5, "lat": 0.5, "observed_at": "0001-01-01T00:00:30+05:01"},
     422, "between 1970 and 9000"),
    ({"kind": "smoke", "lon": 0.5, "lat": 0.5, "observed_at": "1969-12-31T23:59:59Z"},
     422, "between 1970 and 9000"),
])
def test_create_refusals(client: TestClient, as_role: Headers, body: dict[str, Any],
                         status: int, detail: str) -> None:
    response = client.post("/tickets", json=body, headers=as_role["ingest"])
    assert response.status_code == status
    assert detail in response.text


def test_list_filters_and_pagination(client: TestClient, as_role: Headers) -> None:
    made = [_create(client, as_role, observed_at=(T0 + timedelta(minutes=i)).isoformat(),
                    lon=0.5 + (2 if i == 3 else 0)) for i in range(4)]
    ops = as_role["operator"]
    page = client.get("/tickets", params={"limit": 2, "offset": 1}, headers=ops)
    assert page.status_code == 200
    body = page.json()
    assert (body["total"], body["limit"], body["offset"]) == (4, 2, 1)
    assert [t["ticket_id"] for t in body["items"]] == [t["ticket_id"] for t in made[1:3]]
    cases = {
        (("town", "TownB"),): [3],
        (("cell_id", "C00"), ("status", "dispatched")): [0, 1, 2],
        (("opened_from", "2026-05-04T06:01:00Z"), ("opened_to", "2026-05-04T06:03:00Z")):
            [1, 2],
        (("department", "fire_rescue"), ("kind", "smoke"), ("origin", "api")): [0, 1, 2, 3],
        (("escalation", "yellow"),): [],
    }
    for params, expected in cases.items():
        got = client.get("/tickets", params=dict(params), headers=ops).json()
        assert [t["ticket_id"] for t in got["items"]] == [made[i]["ticket_id"]
                                                          for i in expected], params
    bad = client.get("/tickets", params={"opened_from": "2026-05-04T06:00:00"}, headers=ops)
    assert bad.status_code == 422  # naive time refused
    for edge in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        far = client.get("/tickets", params={"opened_from": edge}, headers=ops)
        assert far.status_code == 422 and "between 1970 and 9000" in far.text
    assert client.get("/tickets", params={"status": "nope"}, headers=ops).status_code == 422


def test_read_one_with_etag_and_audit(client: TestClient, as_role: Headers) -> None:
    ticket = _create(client, as_role)
    response = client.get(f"/tickets/{ticket['ticket_id']}", headers=as_role["operator"])
    assert response.status_code == 200 and response.headers["ETag"] == '"1"'
    assert response.json() == ticket
    audit = client.get(f"/tickets/{ticket['ticket_id']}/audit", headers=as_role["operator"])
    assert audit.status_code == 200
    assert [(e["action"], e["actor"], e["to_status"]) for e in audit.json()] == [
        ("create", "ingest", "dispatched")]
    missing = client.get("/tickets/GW-missing", headers=as_role["operator"])
    assert (missing.status_code, missing.json()) == (404, {"detail": "no ticket GW-missing"})
    assert client.get("/tickets/GW-missing/audit",
                      headers=as_role["operator"]).status_code == 404


def test_the_full_loop_over_http(client: TestClient, as_role: Headers, clock) -> None:  # type: ignore[no-untyped-def]
    t = _create(client, as_role, kind="new_plugin_kind")
    ops, fire = as_role["operator"], as_role["fire"]
    steps = [
        (ops, "dispatch", {"department": "fire_rescue"}, 409, None),  # not returned
        (ops, "confirm", {}, 200, "dispatched"),
    ]
    for headers, action, extra, code, status in steps:
        r = _act(client, headers, t, action, **extra)
        assert r.status_code == code, r.text
        if status:
            t = r.json()
            assert t["status"] == status
    # the kind's default department is command_centre; re-route via return → dispatch
    r = _act(client, as_role["admin"], t, "return", reason="fire's job")
    t = r.json()
    assert (r.status_code, t["status"], t["returned_count"]) == (200, "returned", 1)
    t = _act(client, ops, t, "dispatch", department="fire_rescue").json()
    clock.now = T0 + timedelta(minutes=5)
    t = _act(client, fire, t, "accept").json()
    assert (t["status"], t["accepted_at"]) == ("accepted", "2026-05-04T06:05:00Z")
    r = _act(client, fire, t, "resolve")
    assert r.status_code == 422 and "note" in r.json()["detail"][0]["msg"]
    t = _act(client, fire, t, "resolve", note="sensor cleaned").json()
    t = _act(client, ops, t, "reopen", reason="alarm again").json()
    assert (t["status"], t["resolved_at"]) == ("reopened", None)
    t = _act(client, fire, t, "accept").json()
    t = _act(client, fire, t, "resolve", note="sensor replaced").json()
    t = _act(client, ops, t, "close").json()
    assert t["status"] == "closed" and t["version"] == 10
    r = _act(client, fire, t, "accept")
    assert r.status_code == 409
    assert r.json()["detail"].startswith("cannot accept a ticket that is closed")
    audit = client.get(f"/tickets/{t['ticket_id']}/audit", headers=ops).json()
    assert [(e["action"], e["actor"]) for e in audit] == [
        ("create", "ingest"), ("confirm", "ops"), ("return", "admin"), ("dispatch", "ops"),
        ("accept", "department/fire_rescue"), ("resolve", "department/fire_rescue"),
        ("reopen", "ops"), ("accept", "department/fire_rescue"),
        ("resolve", "department/fire_rescue"), ("close", "ops")]


def test_stale_version_is_409_with_the_current_one(client: TestClient,
                                                    as_role: Headers) -> None:
    t = _create(client, as_role)
    assert _act(client, as_role["fire"], t, "accept").status_code == 200
    stale = _act(client, as_role["fire"], t, "return", reason="x")
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    patch = client.patch(f"/tickets/{t['ticket_id']}", headers=as_role["operator"],
                         json={"version": 1, "description": "x"})
    assert patch.status_code == 409


def test_patch_priority_moves_the_deadline(client: TestClient, as_role: Headers) -> None:
    t = _create(client, as_role)
    r = client.patch(f"/tickets/{t['ticket_id']}", headers=as_role["operator"],
                     json={"version": 1, "priority": "P2", "note": "less urgent"})
    assert r.status_code == 200
    assert (r.json()["priority"], r.json()["due_at"], r.json()["version"]) == (
        "P2", "2026-05-05T06:00:00Z", 2)
    assert client.patch(f"/tickets/{t['ticket_id']}", headers=as_role["fire"],
                        json={"version": 2}).status_code == 403


@pytest.mark.parametrize(("role", "method", "path", "status"), [
    (None, "get", "/tickets", 401),
    ("bogus", "get", "/tickets", 401),
    ("ingest", "get", "/tickets", 403),
    ("integrator", "get", "/tickets", 200),
    ("fire", "get", "/review/queue", 403),
    ("fire", "get", "/sources", 403),
    ("integrator", "get", "/reports/assessment?month=2026-05", 403),
    ("fire", "post", "/tickets", 403),
    (None, "post", "/tickets", 401),
    (None, "get", "/events", 401),
    (None, "get", "/open311/v2/requests.json", 401),
])
def test_auth(client: TestClient, as_role: Headers, role: str | None, method: str,
              path: str, status: int) -> None:
    headers = {"Authorization": "Bearer nope"} if role == "bogus" else \
        as_role.get(role or "", {})
    kwargs: dict[str, Any] = {"json": {"kind": "smoke", "lon": 0.5, "lat": 0.5}} \
        if method == "post" else {}
    response = getattr(client, method)(path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    if path.startswith("/open311/"):  # GeoReport v2's error shape
        assert response.json() == [{"code": status, "description":
                                    "missing or unknown API token"}]
    else:
        assert ("detail" in response.json()) is (status >= 400)


@pytest.mark.parametrize(("role", "action", "extra"), [
    ("fire", "confirm", {}), ("fire", "dismiss", {"reason": "x"}), ("fire", "close", {}),
    ("operator", "accept", {}), ("operator", "resolve", {"note": "x"}),
    ("ingest", "accept", {}), ("integrator", "dismiss", {"reason": "x"}),
])
def test_actions_belong_to_roles(client: TestClient, as_role: Headers, role: str,
                                 action: str, extra: dict[str, str]) -> None:
    t = _create(client, as_role)
    r = _act(client, as_role[role], t, action, **extra)
    assert r.status_code == 403 and "may not" in r.json()["detail"]


def test_a_department_never_sees_another_departments_tickets(
        client: TestClient, as_role: Headers) -> None:
    fire_t = _create(client, as_role)
    door_t = _create(client, as_role, kind="door_forced")
    sec = as_role["security"]
    listed = client.get("/tickets", headers=sec).json()
    assert [t["ticket_id"] for t in listed["items"]] == [door_t["ticket_id"]]
    assert client.get("/tickets", params={"department": "fire_rescue"},
                      headers=sec).status_code == 403
    assert client.get(f"/tickets/{fire_t['ticket_id']}", headers=sec).status_code == 404
    assert client.get(f"/tickets/{fire_t['ticket_id']}/audit",
                      headers=sec).status_code == 404
    assert _act(client, sec, fire_t, "accept").status_code == 404
    assert _act(client, sec, door_t, "accept").status_code == 200
    o311 = client.get("/open311/v2/requests.json", headers=sec).json()
    assert [r["service_request_id"] for r in o311] == [door_t["ticket_id"]]
    assert client.get(f"/open311/v2/requests/{fire_t['ticket_id']}.json",
                      headers=sec).status_code == 404
    report = client.get("/reports/assessment?month=2026-05", headers=sec).json()
    assert [d["department"] for d in report["departments"]] == ["community_security"]


def test_review_queue_merge_and_false_positive_rate(client: TestClient,
                                                    as_role: Headers, settings) -> None:  # type: ignore[no-untyped-def]
    ops = as_role["operator"]
    made = [_create(client, as_role, kind="odd_kind", source_id="st9/cam-1",
                    observed_at=(T0 + timedelta(seconds=i)).isoformat(),
                    media_url=f"http://snap/{i}.jpg") for i in range(3)]
    queue = client.get("/review/queue", headers=ops)
    assert queue.status_code == 200
    body = queue.json()
    assert body["total"] == 3
    assert body["items"][0]["ticket"]["snapshot_urls"] == ["http://snap/0.jpg"]
    assert body["items"][0]["sources"][0]["source_id"] == "st9/cam-1"
    merged = _act(client, ops, made[1], "merge", into=made[0]["ticket_id"]).json()
    assert (merged["status"], merged["merged_into"]) == ("closed", made[0]["ticket_id"])
    _act(client, ops, made[2], "dismiss", reason="a cat")
    t0 = client.get(f"/tickets/{made[0]['ticket_id']}", headers=ops).json()
    assert t0["snapshot_urls"] == ["http://snap/0.jpg", "http://snap/1.jpg"]
    sources = client.get("/sources", headers=ops)
    assert sources.status_code == 200
    assert sources.json() == [{"source_id": "st9/cam-1", "confirmed": 0, "dismissed": 1,
                               "reviewed": 1, "false_positive_rate": 1.0,
                               "auto_dispatch_suspended": False}]
    assert client.get("/review/queue", headers=ops).json()["total"] == 1


def test_a_source_above_the_threshold_stops_auto_dispatching(
        client: TestClient, as_role: Headers) -> None:
    ops = as_role["operator"]
    for _ in range(5):  # min_reviewed = 5
        t = _create(client, as_role, source_id="st1/smoke-bad")
        assert t["status"] == "dispatched"
        _act(client, ops, t, "dismiss", reason="dust")
    [stats] = client.get("/sources", headers=ops).json()
    assert stats["false_positive_rate"] == 1.0 and stats["auto_dispatch_suspended"]
    gated = _create(client, as_role, source_id="st1/smoke-bad")
    assert (gated["status"], gated["review"], gated["review_reason"]) == (
        "pending_review", "pending_review", "source_suspended")
    assert _create(client, as_role, source_id="st1/smoke-good")["status"] == "dispatched"


def test_monthly_report_json_and_csv(client: TestClient, as_role: Headers, clock) -> None:  # type: ignore[no-untyped-def]
    fire, ops = as_role["fire"], as_role["operator"]
    on_time, late = _create(client, as_role), _create(client, as_role)
    clock.now = T0 + timedelta(minutes=10)
    on_time = _act(client, fire, on_time, "accept").json()
    late = _act(client, fire, late, "accept").json()
    on_time = _act(client, fire, on_time, "resolve", note="ok").json()
    clock.now = T0 + timedelta(minutes=40)
    _act(client, fire, late, "resolve", note="late")
    # opened at +40 min, not due yet at "now": not in the on-time denominator
    _act(client, fire, _create(client, as_role), "return", reason="not ours")
    r = client.get("/reports/assessment", params={"month": "2026-05"}, headers=ops)
    assert r.status_code == 200
    [row] = r.json()["departments"]
    assert {k: row[k] for k in ("department", "tickets", "accepted", "resolved",
                                "resolved_on_time", "on_time_rate", "returned",
                                "time_to_accept_mean_s", "time_to_resolve_median_s")} == {
        "department": "fire_rescue", "tickets": 3, "accepted": 2, "resolved": 2,
        "resolved_on_time": 1, "on_time_rate": 0.5, "returned": 1,
        "time_to_accept_mean_s": 600.0, "time_to_resolve_median_s": 1500.0}
    r = client.get("/reports/assessment", params={"month": "2026-05", "format": "csv"},
                   headers=ops)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows[0]["department"] == "fire_rescue" and rows[0]["returned"] == "1"
    assert client.get("/reports/assessment", params={"month": "2026-13"},
                      headers=ops).status_code == 422


def test_open311(client: TestClient, as_role: Headers, store) -> None:  # type: ignore[no-untyped-def]
    services = client.get("/open311/v2/services.json")
    assert services.status_code == 200
    assert [s["service_code"] for s in services.json()] == ["door_forced", "smoke"]
    form = {"service_code": "smoke", "lat": "0.5", "long": "1.5", "description": "smoke",
            "device_id": "other-system/42", "api_key": "tok-int"}
    created = client.post("/open311/v2/requests.json", data=form)
    assert created.status_code == 201, created.text
    [body] = created.json()
    request_id = body["service_request_id"]
    assert body["service_notice"].startswith("dispatched to fire_rescue")
    again = client.post("/open311/v2/requests.json", data=form).json()
    assert again[0]["service_request_id"] == request_id
    ticket = store.get(request_id)
    assert (ticket.origin.value, ticket.cell_id, ticket.source_ids) == (
        "open311", "C10", ["other-system/42"])
    got = client.get(f"/open311/v2/requests/{request_id}.json",
                     headers=as_role["integrator"])
    assert got.status_code == 200
    [req] = got.json()
    assert (req["status"], req["agency_responsible"], req["long"], req["lat"]) == (
        "open", "fire_rescue", 1.5, 0.5)
    assert req["extended_attributes"]["cell_id"] == "C10"
    assert req["extended_attributes"]["due_at"] == "2026-05-04T06:30:00Z"
    assert req["extended_attributes"]["review_reason"] is None  # dispatched, not reviewed
    listed = client.get("/open311/v2/requests.json", params={
        "api_key": "tok-int", "status": "open", "service_code": "smoke"})
    assert [r["service_request_id"] for r in listed.json()] == [request_id]
    closed = client.get("/open311/v2/requests.json", params={"api_key": "tok-int",
                                                             "status": "closed"})
    assert closed.json() == []
    outside = client.post("/open311/v2/requests.json", data={**form, "lat": "50"})
    assert outside.status_code == 400 and outside.json()[0]["code"] == 400
    no_key = client.post("/open311/v2/requests.json", data={**form, "api_key": "bad"})
    assert no_key.status_code == 401
    missing = client.get("/open311/v2/requests/GW-x.json", headers=as_role["operator"])
    assert missing.status_code == 404 and missing.json()[0]["code"] == 404


def test_desk_tickets_show_up_in_the_api(client: TestClient, as_role: Headers,
                                         store) -> None:  # type: ignore[no-untyped-def]
    ticket = make_ticket(status=S.PENDING_REVIEW)
    store.save(ticket)
    r = client.get(f"/tickets/{ticket.ticket_id}", headers=as_role["operator"])
    assert r.status_code == 200 and r.json()["status"] == "pending_review"
