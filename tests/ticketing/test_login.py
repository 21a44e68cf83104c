"""Console sign-in over HTTP (SQLite and PostgreSQL): login → cookie → requests, CSRF on
cookie-authenticated changes, logout, expiry, disabled accounts, the failed-login
throttle, and audit entries that name the person."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.builders import make_grid
from tests.ticketing.builders import T0, make_auth, make_policies
from tests.ticketing.conftest import Clock
from tests.ticketing.test_users import PASSWORD, cheap_hasher
from ticketing.api.app import create_app
from ticketing.auth import Role
from ticketing.config import AuthSettings, TicketingSettings
from ticketing.login import CSRF_HEADER, SESSION_COOKIE
from ticketing.store import SqlTicketStore
from ticketing.users import UserStore

Headers = dict[str, dict[str, str]]
LOCKOUT_S = 600


@pytest.fixture
def settings() -> TicketingSettings:
    return TicketingSettings(auth=AuthSettings(
        session_ttl_s=3600, max_failures_per_user=3, max_failures_per_address=5,
        failure_window_s=900, lockout_s=LOCKOUT_S))


@pytest.fixture
def users(store: SqlTicketStore) -> UserStore:
    users = UserStore(store, hasher=cheap_hasher())
    users.add(username="wang.li", password=PASSWORD, role=Role.OPERATOR,
              display_name="Wang Li", now=T0)
    users.add(username="zhao.min", password=PASSWORD, role=Role.OPERATOR,
              display_name="赵敏", now=T0)
    users.add(username="lead", password=PASSWORD, role=Role.SUPERVISOR,
              display_name="Shift Lead", now=T0)
    users.add(username="chen.fs", password=PASSWORD, role=Role.DEPARTMENT,
              department="fire_rescue", display_name="Chen", now=T0)
    return users


@pytest.fixture
def app(store: SqlTicketStore, users: UserStore, clock: Clock,
        settings: TicketingSettings) -> FastAPI:
    return create_app(store=store, settings=settings, policies=make_policies(),
                      grid=make_grid(), auth=make_auth(), clock=clock, users=users)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def login(client: TestClient, username: str = "wang.li",
          password: str = PASSWORD) -> Any:
    return client.post("/auth/login", json={"username": username, "password": password})


def logged_in(client: TestClient, username: str = "wang.li") -> dict[str, str]:
    """Log in; the CSRF header for changes made with the session."""
    response = login(client, username)
    assert response.status_code == 200, response.text
    return {CSRF_HEADER: response.json()["csrf_token"]}


def report(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/tickets", headers=headers,
                       json={"kind": "smoke", "lon": 0.5, "lat": 0.5, **body})


def test_login_sets_a_session_cookie_that_reads(client: TestClient) -> None:
    response = login(client)
    assert response.status_code == 200, response.text
    me = response.json()
    assert {k: me[k] for k in ("username", "display_name", "role", "department", "auth",
                               "expires_at")} == {
        "username": "wang.li", "display_name": "Wang Li", "role": "operator",
        "department": None, "auth": "session", "expires_at": "2026-05-04T07:00:00Z"}
    assert len(me["csrf_token"]) >= 32
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/", "max-age=3600"} <= attributes
    assert "secure" not in attributes  # plain http here (see the https test)
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/tickets").status_code == 200
    again = client.get("/auth/me").json()
    assert (again["auth"], again["csrf_token"]) == ("session", me["csrf_token"])


def test_the_cookie_is_secure_over_https(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver") as client:
        response = login(client)
    assert response.status_code == 200
    assert "secure" in {a.strip().lower() for a in response.headers["set-cookie"].split(";")}


def test_a_change_with_the_cookie_needs_the_csrf_token(client: TestClient) -> None:
    csrf = logged_in(client)
    missing = report(client, {})
    assert missing.status_code == 403
    assert CSRF_HEADER in missing.json()["detail"]
    assert report(client, {CSRF_HEADER: "wrong"}).status_code == 403
    assert client.get("/tickets").json()["total"] == 0  # nothing was written
    made = report(client, csrf)
    assert made.status_code == 201, made.text
    audit = client.get(f"/tickets/{made.json()['ticket_id']}/audit").json()
    assert [(e["actor"], e["actor_display_name"]) for e in audit] == [("wang.li", "Wang Li")]


def test_a_bearer_token_needs_no_csrf_token_even_with_a_cookie(
        client: TestClient, as_role: Headers) -> None:
    logged_in(client)
    made = report(client, as_role["operator"])  # the session cookie is sent too
    assert made.status_code == 201, made.text
    audit = client.get(f"/tickets/{made.json()['ticket_id']}/audit").json()
    assert [(e["actor"], e["actor_display_name"]) for e in audit] == [("ops", None)]
    me = client.get("/auth/me", headers=as_role["operator"]).json()
    assert (me["username"], me["auth"], me["csrf_token"]) == ("ops", "token", None)


def test_logout_ends_the_session(client: TestClient) -> None:
    csrf = logged_in(client)
    cookie = client.cookies[SESSION_COOKIE]
    assert client.post("/auth/logout").status_code == 403  # a change: needs the token
    assert client.get("/tickets").status_code == 200
    out = client.post("/auth/logout", headers=csrf)
    assert out.status_code == 204
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]
    assert SESSION_COOKIE not in client.cookies
    client.cookies.set(SESSION_COOKIE, cookie)  # the old cookie, kept by someone
    stale = client.get("/tickets")
    assert stale.status_code == 401
    assert "log in again" in stale.json()["detail"]
    assert report(client, csrf).status_code == 401


def test_a_session_expires(client: TestClient, clock: Clock) -> None:
    logged_in(client)
    clock.now = T0 + timedelta(seconds=3599)
    assert client.get("/tickets").status_code == 200
    clock.now = T0 + timedelta(seconds=3600)
    assert client.get("/tickets").status_code == 401


def test_a_disabled_account_loses_its_session_and_tokens(client: TestClient,
                                                         users: UserStore) -> None:
    logged_in(client)
    _record, token = users.issue_token("wang.li", label="script", now=T0)
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/tickets", headers=bearer).status_code == 200
    users.set_disabled("wang.li", True, now=T0)
    assert client.get("/tickets").status_code == 401
    assert client.get("/tickets", headers=bearer).status_code == 401
    failed = login(client)
    assert failed.status_code == 401
    assert failed.json()["detail"] == "wrong username or password"
    users.set_disabled("wang.li", False, now=T0)
    assert client.get("/tickets").status_code == 401  # the old session stays ended
    assert client.get("/tickets", headers=bearer).status_code == 200


def test_a_password_reset_ends_sessions_but_not_tokens(client: TestClient,
                                                       users: UserStore) -> None:
    logged_in(client)
    _record, token = users.issue_token("wang.li", label="script", now=T0)
    users.set_password("wang.li", "a brand new secret", now=T0)
    assert client.get("/tickets").status_code == 401
    assert client.get("/tickets", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 200
    assert login(client).status_code == 401
    assert login(client, password="a brand new secret").status_code == 200


def test_a_person_token_works_like_a_role_token(client: TestClient, users: UserStore,
                                                as_role: Headers) -> None:
    _record, token = users.issue_token("chen.fs", label="script", now=T0)
    fire = {"Authorization": f"Bearer {token}"}
    mine = report(client, as_role["ingest"])  # smoke → fire_rescue
    theirs = report(client, as_role["ingest"], kind="door_forced")  # community_security
    listed = client.get("/tickets", headers=fire).json()
    assert [t["ticket_id"] for t in listed["items"]] == [mine.json()["ticket_id"]]
    assert client.get(f"/tickets/{theirs.json()['ticket_id']}",
                      headers=fire).status_code == 404
    accepted = client.post(f"/tickets/{mine.json()['ticket_id']}/actions", headers=fire,
                           json={"action": "accept", "version": 1})
    assert accepted.status_code == 200, accepted.text
    assert client.get(f"/tickets/{mine.json()['ticket_id']}/audit", headers=fire
                      ).json()[-1]["actor"] == "chen.fs"
    open311 = client.get("/open311/v2/requests.json", params={"api_key": token})
    assert [r["service_request_id"] for r in open311.json()] == [mine.json()["ticket_id"]]


def test_a_supervisor_reviews_and_sees_supervision(client: TestClient) -> None:
    csrf = logged_in(client, "lead")
    for path in ("/review/queue", "/sources", "/reports/assessment?month=2026-05"):
        assert client.get(path).status_code == 200, path
    pending = report(client, csrf, kind="new_plugin_kind").json()
    confirmed = client.post(f"/tickets/{pending['ticket_id']}/actions", headers=csrf,
                            json={"action": "confirm", "version": pending["version"]})
    assert confirmed.status_code == 200, confirmed.text
    refused = client.post(f"/tickets/{pending['ticket_id']}/actions", headers=csrf,
                          json={"action": "accept", "version": confirmed.json()["version"]})
    assert refused.status_code == 403
    assert client.get("/auth/me").json()["role"] == "supervisor"


def test_the_audit_names_who_confirmed_and_who_dismissed(app: FastAPI,
                                                         as_role: Headers) -> None:
    with TestClient(app) as wang, TestClient(app) as zhao:
        wang_csrf, zhao_csrf = logged_in(wang, "wang.li"), logged_in(zhao, "zhao.min")
        first = report(wang, as_role["ingest"], kind="new_plugin_kind").json()
        second = report(wang, as_role["ingest"], kind="new_plugin_kind", lon=1.5).json()
        assert wang.post(f"/tickets/{first['ticket_id']}/actions", headers=wang_csrf,
                         json={"action": "confirm", "version": 1}).status_code == 200
        assert zhao.post(f"/tickets/{second['ticket_id']}/actions", headers=zhao_csrf,
                         json={"action": "dismiss", "version": 1,
                               "reason": "a cat"}).status_code == 200
        audits = {t["ticket_id"]: wang.get(f"/tickets/{t['ticket_id']}/audit").json()
                  for t in (first, second)}
    assert [(e["actor"], e["actor_display_name"], e["action"])
            for e in audits[first["ticket_id"]]] == [
        ("ingest", None, "create"), ("wang.li", "Wang Li", "confirm")]
    assert [(e["actor"], e["actor_display_name"], e["action"])
            for e in audits[second["ticket_id"]]] == [
        ("ingest", None, "create"), ("zhao.min", "赵敏", "dismiss")]


def test_failed_logins_for_a_username_are_throttled_then_recover(
        client: TestClient, app: FastAPI, clock: Clock) -> None:
    logins = app.state.gridwatch.logins
    for n in range(1, 4):
        failed = login(client, password="wrong password")
        assert failed.status_code == 401
        assert logins.failures(username="wang.li", now=clock()) == n
    throttled = login(client)  # the right password, but too late
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == str(LOCKOUT_S)
    assert "too many failed logins" in throttled.json()["detail"]
    assert logins.failures(username="wang.li", now=clock()) == 3  # refusals do not count
    assert login(client, "zhao.min").status_code == 200  # another username is not locked
    clock.now = T0 + timedelta(seconds=LOCKOUT_S - 1)
    late = login(client)
    assert (late.status_code, late.headers["retry-after"]) == (429, "1")
    clock.now = T0 + timedelta(seconds=LOCKOUT_S)
    assert login(client).status_code == 200
    assert logins.failures(username="wang.li", now=clock()) == 0


def test_a_success_clears_the_username_count(client: TestClient, app: FastAPI,
                                             clock: Clock) -> None:
    logins = app.state.gridwatch.logins
    for _ in range(2):
        assert login(client, password="wrong password").status_code == 401
    assert login(client).status_code == 200
    assert logins.failures(username="wang.li", now=clock()) == 0
    assert logins.failures(address="testclient", now=clock()) == 2  # the address keeps its
    for _ in range(2):
        assert login(client, password="wrong password").status_code == 401
    assert login(client).status_code == 200  # 2 of 3, not 4


def test_failed_logins_from_an_address_are_throttled(app: FastAPI, clock: Clock) -> None:
    logins = app.state.gridwatch.logins
    with TestClient(app, client=("10.0.0.7", 5000)) as guesser, \
            TestClient(app, client=("10.0.0.8", 5000)) as colleague:
        for name in ("wang.li", "zhao.min", "lead", "nobody", "chen.fs"):
            response = login(guesser, name, "wrong password")
            assert response.status_code == 401
            assert response.json()["detail"] == "wrong username or password"
        assert logins.failures(address="10.0.0.7", now=clock()) == 5
        assert logins.failures(username="nobody", now=clock()) == 1
        refused = login(guesser, "wang.li")
        assert (refused.status_code, refused.headers["retry-after"]) == (429,
                                                                         str(LOCKOUT_S))
        assert login(colleague, "wang.li").status_code == 200
        clock.now = T0 + timedelta(seconds=LOCKOUT_S)
        assert login(guesser, "wang.li").status_code == 200


def test_failures_outside_the_window_are_forgotten(client: TestClient, app: FastAPI,
                                                   clock: Clock) -> None:
    for _ in range(2):
        assert login(client, password="wrong password").status_code == 401
    clock.now = T0 + timedelta(seconds=900)
    assert app.state.gridwatch.logins.failures(username="wang.li", now=clock()) == 0
    for _ in range(2):
        assert login(client, password="wrong password").status_code == 401
    assert login(client).status_code == 200


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"username": "wang.li"}, 422, "password"),
    ({"username": "wang.li", "password": PASSWORD, "remember": True}, 422, "extra"),
    ({"username": "", "password": PASSWORD}, 422, "username"),
    ({"username": "Wang.Li", "password": PASSWORD}, 200, "wang.li"),  # case-insensitive
    ({"username": "nobody", "password": PASSWORD}, 401, "wrong username or password"),
])
def test_login_input(client: TestClient, body: dict[str, Any], status: int,
                     detail: str) -> None:
    response = client.post("/auth/login", json=body)
    assert response.status_code == status
    assert detail in response.text


def test_no_cookie_no_token(client: TestClient) -> None:
    response = client.get("/auth/me")
    assert response.status_code == 401
    assert "POST /auth/login" in response.json()["detail"]


def test_concurrent_guesses_cannot_overrun_the_quota(app: FastAPI, clock: Clock) -> None:
    """Each attempt is counted before its password is checked, so however the eight
    guesses interleave, exactly three are checked (and fail) and five are refused."""
    from concurrent.futures import ThreadPoolExecutor

    from ticketing.login import LoginFailed, Throttled

    logins = app.state.gridwatch.logins

    def guess(n: int) -> str:
        try:
            logins.login(username="wang.li", password=f"wrong {n}", address=f"10.1.0.{n}",
                         now=clock())
        except LoginFailed:
            return "failed"
        except Throttled:
            return "throttled"
        return "logged in"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(guess, range(8)))
    assert outcomes == ["failed"] * 3 + ["throttled"] * 5
    assert logins.failures(username="wang.li", now=clock()) == 3


def test_old_counters_are_forgotten(store: SqlTicketStore, app: FastAPI,
                                    clock: Clock) -> None:
    from sqlalchemy import text

    logins = app.state.gridwatch.logins
    with pytest.raises(Exception, match="wrong username or password"):
        logins.login(username="nobody", password="x", address="10.2.0.1", now=clock())
    clock.now = T0 + timedelta(seconds=900)
    logins.login(username="wang.li", password=PASSWORD, address="10.2.0.2", now=clock())
    with store.connection() as conn:
        keys = sorted(r[0] for r in conn.execute(text(
            "SELECT throttle_key FROM login_throttle")))
    assert keys == ["addr:10.2.0.2"]  # the username's count was cleared by its success


def test_login_takes_only_json(client: TestClient) -> None:
    """A cross-site form can post text/plain or a form, never application/json without a
    CORS preflight: so another site cannot log a browser in to an account of its own."""
    body = f'{{"username": "wang.li", "password": "{PASSWORD}"}}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post("/auth/login", content=body,
                               headers={"Content-Type": content_type})
        assert response.status_code == 422, content_type
        assert "set-cookie" not in response.headers


def test_department_staff_see_only_their_department(client: TestClient,
                                                    as_role: Headers) -> None:
    mine = report(client, as_role["ingest"]).json()  # smoke → fire_rescue
    theirs = report(client, as_role["ingest"], kind="door_forced").json()
    csrf = logged_in(client, "chen.fs")
    assert [t["ticket_id"] for t in client.get("/tickets").json()["items"]] == [
        mine["ticket_id"]]
    assert client.get(f"/tickets/{theirs['ticket_id']}").status_code == 404
    assert client.post(f"/tickets/{theirs['ticket_id']}/actions", headers=csrf,
                       json={"action": "accept", "version": 1}).status_code == 404
    accepted = client.post(f"/tickets/{mine['ticket_id']}/actions", headers=csrf,
                           json={"action": "accept", "version": 1})
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    assert client.get("/review/queue").status_code == 403
    me = client.get("/auth/me").json()
    assert (me["role"], me["department"]) == ("department", "fire_rescue")
