"""Schemathesis against the OpenAPI, authenticated: no input makes a 5xx, and responses
match their schemas. Bounded examples per operation to keep the run short."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.builders import make_grid
from tests.ticketing.builders import TOKENS, make_auth, make_policies, make_ticket
from ticketing.api.app import create_app
from ticketing.models import TicketStatus
from ticketing.store import SqliteTicketStore

EXAMPLES = 25


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    store = SqliteTicketStore(tmp_path_factory.mktemp("st") / "tickets.db", webhooks=True)
    for status in (TicketStatus.PENDING_REVIEW, TicketStatus.DISPATCHED,
                   TicketStatus.ACCEPTED):
        store.save(make_ticket(status=status))
    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth())
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return schema.exclude(path="/events")  # an endless stream; tested in test_events.py


@pytest.mark.parametrize(("role", "examples"), [("admin", EXAMPLES),
                                                ("fire", EXAMPLES // 2)])
def test_no_server_errors(api_schema: schemathesis.BaseSchema, role: str,
                          examples: int) -> None:
    headers = {"Authorization": f"Bearer {TOKENS[role]}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=headers, checks=[not_a_server_error, response_schema_conformance],
                excluded_checks=[status_code_conformance])

        try:
            run()
        except Exception as exc:
            raise AssertionError(f"{operation.label} as {role}: {exc}") from exc
