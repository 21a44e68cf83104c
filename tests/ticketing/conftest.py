"""Fixtures for ticketing tests: stores on SQLite and on a real PostgreSQL (one fresh
schema per test), and an API client with one token per role and a settable clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from tests.builders import make_grid
from tests.ticketing.builders import T0, TOKENS, make_auth, make_policies
from ticketing.api.app import create_app
from ticketing.config import TicketingSettings
from ticketing.store import SqliteTicketStore, SqlTicketStore


class Clock:
    """A settable "now" for the API and workers."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _open(backend: str, request: pytest.FixtureRequest, *, webhooks: bool) -> SqlTicketStore:
    if backend == "sqlite":
        tmp = request.getfixturevalue("tmp_path")
        return SqliteTicketStore(tmp / "tickets.db", webhooks=webhooks)
    url, schema = request.getfixturevalue("pg_schema")
    return SqlTicketStore(url, schema=schema, webhooks=webhooks, pool_size=4)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(backend: str, request: pytest.FixtureRequest) -> Iterator[
        type[object]]:
    """Opens stores on one shared database (two replicas = two stores)."""
    opened: list[SqlTicketStore] = []

    def factory(*, webhooks: bool = False) -> SqlTicketStore:
        store = _open(backend, request, webhooks=webhooks)
        opened.append(store)
        return store

    yield factory  # type: ignore[misc]
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory) -> SqlTicketStore:  # type: ignore[no-untyped-def]
    return store_factory(webhooks=True)  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> TicketingSettings:
    return TicketingSettings()


@pytest.fixture
def client(store: SqlTicketStore, clock: Clock, settings: TicketingSettings) -> Iterator[
        TestClient]:
    app = create_app(store=store, settings=settings, policies=make_policies(),
                     grid=make_grid(), auth=make_auth(), clock=clock)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def as_role() -> dict[str, dict[str, str]]:
    """Authorization headers by role name."""
    return {role: {"Authorization": f"Bearer {token}"} for role, token in TOKENS.items()}
