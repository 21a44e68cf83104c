"""Open311 GeoReport v2 errors: every error under /open311/ is a list of
``{code, description}`` (validation errors are 400 naming the field), an unknown
``service_code`` is refused naming the valid ones (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

FORM = {"service_code": "smoke", "lat": "0.5", "long": "1.5", "api_key": "tok-int"}
READ = {"Authorization": "Bearer tok-int"}


def _error(response: Any, code: int) -> list[str]:
    assert response.status_code == code, response.text
    body = response.json()
    assert isinstance(body, list) and body
    assert all(set(e) == {"code", "description"} and e["code"] == code for e in body)
    return [e["description"] for e in body]


def test_an_unknown_service_code_names_the_valid_ones(client: TestClient) -> None:
    response = client.post("/open311/v2/requests.json",
                           data={**FORM, "service_code": "graffiti"})
    assert _error(response, 400) == [
        "service_code: unknown service 'graffiti'; expected one of: door_forced, smoke "
        "(GET /open311/v2/services.json)"]
    assert client.post("/open311/v2/requests.json", data=FORM).status_code == 201


@pytest.mark.parametrize(("form", "expected"), [
    ({"lat": None}, ["lat: Field required"]),
    ({"lat": "north"}, ["lat: Input should be a valid number, unable to parse string as a "
                        "number"]),
    ({"long": "500"}, ["long: Input should be less than or equal to 180"]),
    ({"service_code": "Smoke!"}, ["service_code: String should match pattern "
                                  "'^[a-z0-9_]+$'"]),
    ({"lat": None, "long": None}, ["lat: Field required", "long: Field required"]),
])
def test_post_validation_errors(client: TestClient, form: dict[str, str | None],
                                expected: list[str]) -> None:
    data = {k: v for k, v in {**FORM, **form}.items() if v is not None}
    assert _error(client.post("/open311/v2/requests.json", data=data), 400) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("start_date=2026-05-04T06:00:00", "start_date: Input should have timezone info"),
    ("status=pending", "status: Input should be 'open' or 'closed'"),
    ("jurisdiction_id=x", "jurisdiction_id: unknown query parameter 'jurisdiction_id'; "
                          "expected one of: api_key, end_date, service_code, "
                          "service_request_id, start_date, status"),
])
def test_list_validation_errors(client: TestClient, query: str, expected: str) -> None:
    response = client.get(f"/open311/v2/requests.json?{query}", headers=READ)
    assert _error(response, 400) == [expected]


def test_lookup_and_key_errors_keep_their_status(client: TestClient) -> None:
    assert _error(client.get("/open311/v2/requests/GW-none.json", headers=READ), 404) == [
        "no service request GW-none"]
    assert _error(client.post("/open311/v2/requests.json",
                              data={**FORM, "api_key": "nope"}), 401) == [
        "missing or unknown API token"]
    fire = {"Authorization": "Bearer tok-fire"}
    assert _error(client.post("/open311/v2/requests.json", headers=fire,
                              data={k: v for k, v in FORM.items() if k != "api_key"}),
                  403) == ["role department may not do this"]
    assert _error(client.post("/open311/v2/requests.json", data={**FORM, "lat": "50"}),
                  400) == ["(1.5, 50.0) is outside every grid cell"]


def test_other_routes_keep_fastapis_shapes(client: TestClient) -> None:
    response = client.get("/tickets?bogus=1", headers={"Authorization": "Bearer tok-ops"})
    assert response.status_code == 422 and "detail" in response.json()
    assert client.get("/tickets/GW-none", headers=READ).json() == {
        "detail": "no ticket GW-none"}


def test_only_gets_are_checked_for_unknown_query_parameters(client: TestClient) -> None:
    response = client.post("/open311/v2/requests.json?jurisdiction_id=x", data=FORM)
    assert response.status_code == 201, response.text


def test_listing_by_an_unknown_service_code_is_refused(client: TestClient,
                                                       store: Any) -> None:
    from tests.ticketing.builders import make_ticket

    response = client.get("/open311/v2/requests.json?service_code=smok", headers=READ)
    assert _error(response, 400) == [
        "service_code: unknown service 'smok'; expected one of: door_forced, smoke "
        "(GET /open311/v2/services.json)"]
    # a configured service with no requests yet, and a plug-in's kind that has tickets
    assert client.get("/open311/v2/requests.json?service_code=door_forced",
                      headers=READ).json() == []
    plugin = make_ticket(kind="plugin_kind")
    store.save(plugin)
    listed = client.get("/open311/v2/requests.json?service_code=plugin_kind", headers=READ)
    assert [r["service_request_id"] for r in listed.json()] == [plugin.ticket_id]
