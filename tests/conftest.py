"""Shared fixtures: real services found by URL environment variables.

Tests that need Mosquitto, Redis or PostgreSQL ask for ``mqtt_url``, ``redis_url`` or
``postgres_url``. The URLs come from ``GRIDWATCH_TEST_MQTT_URL`` /
``GRIDWATCH_TEST_REDIS_URL`` / ``GRIDWATCH_TEST_POSTGRES_URL`` and default to the standard
local ports. A service that does not answer fails the test with the URL it tried: never a
silent skip (``.ci/run`` starts or installs the services first).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

DEFAULT_URLS = {
    "mqtt": "mqtt://127.0.0.1:1883",
    "redis": "redis://127.0.0.1:6379/15",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
}


def service_url(name: str) -> str:
    """The URL of a test service (env var ``GRIDWATCH_TEST_<NAME>_URL`` or the default)."""
    return os.environ.get(f"GRIDWATCH_TEST_{name.upper()}_URL", DEFAULT_URLS[name])


def require_service(name: str) -> str:
    url = service_url(name)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        pytest.fail(
            f"{name} is required at {url} but did not answer ({exc}). Start it (see "
            f".ci/run) or set GRIDWATCH_TEST_{name.upper()}_URL.",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    return require_service("mqtt")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_service("redis")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return require_service("postgres")


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[tuple[str, str]]:
    """``(postgres_url, schema)``: a fresh schema for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text

    from ticketing.store import _normalise_url

    schema = f"gwt_{uuid.uuid4().hex[:12]}"
    yield postgres_url, schema
    engine = create_engine(_normalise_url(postgres_url))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def example_plugin() -> str:
    """The example detector plug-in (``camera_obscured``), installed offline into this
    interpreter if it is not there (tests/support/example_plugin.py)."""
    from tests.support.example_plugin import install_example_plugin

    return install_example_plugin()
