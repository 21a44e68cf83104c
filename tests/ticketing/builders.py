"""Builders for ticketing tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from geo.admin import Level
from stream.policy import KindPolicy, PolicyBook
from ticketing.auth import Principal, Role, TokenAuth
from ticketing.config import TicketingSettings
from ticketing.lifecycle import ActionRequest, apply_action
from ticketing.models import (
    Escalation,
    Origin,
    Review,
    ReviewReason,
    Ticket,
    TicketStatus,
    ticket_id_for,
)
from ticketing.routing import Rules
from ticketing.store import SqlTicketStore

T0 = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
_seq = iter(range(1, 10**9))

TOKENS = {
    "admin": "tok-admin", "operator": "tok-ops", "fire": "tok-fire",
    "security": "tok-security", "ingest": "tok-ingest", "integrator": "tok-int",
}


def make_auth(*, anonymous_read: bool = False) -> TokenAuth:
    return TokenAuth.from_mapping({
        TOKENS["admin"]: Principal("admin", Role.ADMIN),
        TOKENS["operator"]: Principal("ops", Role.OPERATOR),
        TOKENS["fire"]: Principal("department/fire_rescue", Role.DEPARTMENT, "fire_rescue"),
        TOKENS["security"]: Principal("department/community_security", Role.DEPARTMENT,
                                      "community_security"),
        TOKENS["ingest"]: Principal("ingest", Role.INGEST),
        TOKENS["integrator"]: Principal("upstream", Role.INTEGRATOR),
    }, anonymous_read=anonymous_read)


def make_policies() -> PolicyBook:
    return PolicyBook(kinds={
        "smoke": KindPolicy(label="Smoke alarm", level=Level.TOWN, department="fire_rescue",
                            priority="P1", sla_s=1800, auto_dispatch=True),
        "door_forced": KindPolicy(label="Door forced open", level=Level.VILLAGE,
                                  department="community_security", priority="P2",
                                  auto_dispatch=True),
    })


def make_ticket(*, status: TicketStatus = TicketStatus.DISPATCHED,
                opened_at: datetime | timedelta = T0, sla: timedelta = timedelta(minutes=30),
                **overrides: Any) -> Ticket:
    """A village-level smoke ticket for fire_rescue in cell C00 (TownA, V0)."""
    if isinstance(opened_at, timedelta):
        opened_at = T0 + opened_at
    n = next(_seq)
    values: dict[str, Any] = dict(
        ticket_id=ticket_id_for("smoke", "C00", f"test{n}"), kind="smoke", cell_id="C00",
        district="D1", town="TownA", village="V0", level="village", unit="V0",
        department="fire_rescue", status=status,
        review=Review.AUTO_DISPATCHED if status is not TicketStatus.PENDING_REVIEW
        else Review.PENDING_REVIEW,
        priority="P1", opened_at=opened_at, due_at=opened_at + sla, updated_at=opened_at,
        lon=0.5, lat=0.5, max_confidence=0.9, incident_count=1, detection_count=1,
        event_ids=[f"e{n}"], source_ids=[f"st1/smoke-{n}"], origin=Origin.DETECTION)
    values.update(overrides)
    return Ticket(**values)


def make_full_ticket() -> Ticket:
    """A ticket with no field left at its default."""
    return make_ticket(
        status=TicketStatus.RETURNED, event_ids=["e1", "e2"], incident_ids=["i1"],
        source_ids=["st1/a", "st1/b"], snapshot_urls=["http://x/1.jpg"],
        hotspot={"window_start": T0, "observed": 3, "top_sources": [{"source": "a"}]},
        label="Smoke", version=4, escalation=Escalation.YELLOW, returned_count=1,
        accepted_at=T0 + timedelta(minutes=1), resolved_at=T0 + timedelta(minutes=2),
        closed_at=T0 + timedelta(minutes=3), dismiss_reason="dust", merged_into="GW-x",
        origin=Origin.API, description="a fire", incident_count=2, detection_count=2,
        received_at=T0 + timedelta(seconds=5), dispatched_at=T0 + timedelta(seconds=30),
        clock_started_at=T0 + timedelta(seconds=30), clock_seq=2,
        review_reason=ReviewReason.LOW_CONFIDENCE)


def make_rules(**settings: Any) -> Rules:
    """Routing and deadline rules over :func:`make_policies` (settings overridable)."""
    return Rules(make_policies(), TicketingSettings(**settings))


RULES = make_rules()


Headers = dict[str, dict[str, str]]


def api_create(client: Any, h: Headers, **body: Any) -> dict[str, Any]:
    """``POST /tickets`` as the ingest role (a smoke report at (0.5, 0.5) unless ``body``
    says otherwise); asserts 201 and returns the ticket."""
    response = client.post("/tickets", headers=h["ingest"],
                           json={"kind": "smoke", "lon": 0.5, "lat": 0.5, **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def api_act(client: Any, h: dict[str, str], ticket: dict[str, Any], action: str,
            **body: Any) -> Any:
    """``POST /tickets/{id}/actions`` at the version ``ticket`` was read; the response."""
    return client.post(f"/tickets/{ticket['ticket_id']}/actions", headers=h,
                       json={"action": action, "version": ticket["version"], **body})


def api_act_ok(client: Any, h: dict[str, str], ticket: dict[str, Any], action: str,
               **body: Any) -> dict[str, Any]:
    """:func:`api_act`, asserting 200; the changed ticket."""
    response = api_act(client, h, ticket, action, **body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def refuse_poison(store: SqlTicketStore) -> None:
    """Make the real database refuse an event id starting ``poison`` for good (as
    PostgreSQL refused one holding NUL with ``DataError`` before validation did)."""
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.execute(text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON ticket_event_ids"
                " WHEN NEW.event_id LIKE 'poison%'"
                " BEGIN SELECT RAISE(ABORT, 'poison refused by the test'); END"))
        else:
            conn.execute(text("ALTER TABLE ticket_event_ids ADD CONSTRAINT refuse_poison"
                              " CHECK (event_id NOT LIKE 'poison%')"))


def store_act(store: SqlTicketStore, ticket_id: str, request: ActionRequest, *,
              version: int | None, actor: str = "x", at: datetime = T0) -> Ticket:
    """Apply a lifecycle action through ``store.modify`` (as the API does)."""
    return store.modify(ticket_id, lambda t, load: apply_action(
        t, request, actor=actor, at=at, load=load, rules=RULES), expected_version=version)


def bumped(ticket: Ticket, *new_ids: str) -> Ticket:
    """The desk's next version of ``ticket`` with ``new_ids`` absorbed."""
    return replace(ticket, version=ticket.version + 1, event_ids=ticket.event_ids + list(new_ids),
                   detection_count=ticket.detection_count + len(new_ids),
                   updated_at=ticket.updated_at + timedelta(seconds=len(new_ids)))
