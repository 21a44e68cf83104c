"""Tickets: list with filters and pagination, read, audit log, create, edit, and the
lifecycle actions (optimistic concurrency on every change)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import StringConstraints

from stream.policy import Priority
from ticketing.api.deps import (
    Creator,
    GridDep,
    PrincipalDep,
    Reader,
    StateDep,
    unprocessable,
    visibility,
)
from ticketing.api.models import (
    AuditEntryPublic,
    Problem,
    TicketAction,
    TicketCreate,
    TicketList,
    TicketPublic,
    TicketUpdate,
    Timestamp,
)
from ticketing.auth import SUPERVISE, Principal, Role
from ticketing.lifecycle import (
    DEPARTMENT_ACTIONS,
    OPERATOR_ACTIONS,
    ActionInvalid,
    ActionRequest,
    TransitionError,
)
from ticketing.models import Escalation, Origin, TicketStatus
from ticketing.queries import SORT_PATTERN, TicketFilter, parse_sort
from ticketing.service import (
    OutsideGrid,
    act,
    create_report,
    get_visible,
    list_public,
    update_ticket,
)
from ticketing.store import TicketNotFound, VersionConflict, audit_public

router = APIRouter(prefix="/tickets", tags=["tickets"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such ticket (or not yours)"}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem,
                  "description": "Stale version, or an action the state does not allow"}}


def not_found(ticket_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")


def conflict(exc: VersionConflict) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_409_CONFLICT,
                        content={"detail": str(exc), "current_version": exc.current})


def etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# a repeatable filter: ?status=dispatched&status=accepted keeps either
Names = Annotated[list[Name] | None, Query(max_length=100)]


@router.get("", response_model=TicketList)
def list_(request: Request, state: StateDep, principal: Reader,
          status_: Annotated[list[TicketStatus] | None, Query(alias="status",
                                                              max_length=20)] = None,
          kind: Names = None, cell_id: Names = None, district: Names = None,
          town: Names = None, village: Names = None, department: Names = None,
          escalation: Annotated[list[Escalation] | None, Query(max_length=10)] = None,
          origin: Annotated[list[Origin] | None, Query(max_length=10)] = None,
          priority: Annotated[list[Priority] | None, Query(max_length=10)] = None,
          open_: Annotated[bool | None, Query(
              alias="open", description="true: only open tickets (pending_review, "
              "dispatched, accepted, returned, reopened); false: only the others")] = None,
          overdue: Annotated[bool | None, Query(
              description="true: open tickets past due_at (at the API's clock); false: "
              "every other ticket")] = None,
          sort: Annotated[str, Query(
              max_length=100, pattern=SORT_PATTERN,
              description="Keys, comma separated, each optionally with '-' for "
                          "descending: due, opened, priority (P1 first), updated. Ties: "
                          "ticket_id.", examples=["-due", "priority,due"])] = "opened",
          opened_from: Timestamp | None = None, opened_to: Timestamp | None = None,
          limit: Annotated[int, Query(ge=1, le=10000, description=(
              "at most ticketing.max_page_size (500 by default); more is a 422"))] = 50,
          offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> Response:
    """Tickets, oldest opened first unless ``sort`` says otherwise. Filters combine with
    AND; a repeated filter (``?status=dispatched&status=accepted``) keeps any of its
    values; ``opened_from`` ≤ opened_at < ``opened_to``. A department token sees only its
    own department's tickets. An unknown parameter is a 422 naming it."""
    if principal.role is Role.DEPARTMENT:
        if department is not None and set(department) != {principal.department}:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                "a department token reads only its own department")
        department = [str(principal.department)]
    max_page = state.settings.max_page_size
    if limit > max_page:
        raise unprocessable(("query", "limit"), f"limit must be at most {max_page} "
                            f"(ticketing.max_page_size), got {limit}")
    try:
        order = parse_sort(sort)
    except ValueError as exc:
        raise unprocessable(("query", "sort"), str(exc)) from None
    # the page as encoded before, if no ticket changed since (a console polls the same
    # pages); not for overdue=, which moves with the clock
    key = (principal.role.value, principal.department, request.url.query)
    cached = overdue is None and state.pages.max_entries > 0
    version = state.store.change_version() if cached else None
    if version is not None and (body := state.pages.get(key, version)) is not None:
        return Response(body, media_type="application/json")
    flt = TicketFilter(
        status=_values(status_), kind=_values(kind), cell_id=_values(cell_id),
        district=_values(district), town=_values(town), village=_values(village),
        department=_values(department), escalation=_values(escalation),
        origin=_values(origin), priority=_values(priority), open=open_, overdue=overdue,
        now=state.clock() if overdue is not None else None,
        opened_from=opened_from, opened_to=opened_to)
    items, total = list_public(store=state.store, flt=flt, limit=limit, offset=offset,
                               sort=order)
    # the stored bodies are already the public form: encode them once, unvalidated
    body = orjson.dumps({"items": items, "total": total, "limit": limit, "offset": offset})
    if version is not None:
        state.pages.put(key, version, body)
    return Response(body, media_type="application/json")


def _values(values: list[Any] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(v.value if isinstance(v, Enum) else str(v) for v in values)


@router.get("/{ticket_id}", response_model=TicketPublic, responses=NOT_FOUND)
def read(ticket_id: str, state: StateDep, principal: Reader,
         response: Response) -> TicketPublic:
    """One ticket; ``ETag`` is its version (send it back as ``version`` when changing)."""
    try:
        ticket = get_visible(store=state.store, ticket_id=ticket_id,
                             visible=visibility(principal))
    except TicketNotFound:
        raise not_found(ticket_id) from None
    etag(response, ticket.version)
    return TicketPublic.of(ticket)


@router.get("/{ticket_id}/audit", response_model=list[AuditEntryPublic], responses=NOT_FOUND)
def audit(ticket_id: str, state: StateDep, principal: Reader) -> list[AuditEntryPublic]:
    """Every change to the ticket, oldest first: who (``actor``: a person's username, with
    ``actor_display_name``), when, what, why."""
    try:
        get_visible(store=state.store, ticket_id=ticket_id, visible=visibility(principal))
    except TicketNotFound:
        raise not_found(ticket_id) from None
    entries = state.store.audit(ticket_id)
    names = state.users.display_names(e.actor for e in entries)
    return [AuditEntryPublic.model_validate({**audit_public(e),
                                             "actor_display_name": names.get(e.actor)})
            for e in entries]


@router.post("", response_model=TicketPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": TicketPublic,
                              "description": "Already created with this external_id"}})
def create(body: TicketCreate, state: StateDep, principal: Creator, grid: GridDep,
           response: Response) -> TicketPublic:
    """Open a ticket for a report; routed by kind and the cell at ``lon``/``lat``.
    Posting the same ``external_id`` again returns the existing ticket (200)."""
    try:
        ticket, created = create_report(
            store=state.store, grid=grid, policies=state.policies, settings=state.settings,
            kind=body.kind, lon=body.lon, lat=body.lat, at=state.clock(),
            actor=principal.name, origin=Origin.API, description=body.description,
            observed_at=body.observed_at, external_id=body.external_id,
            source_id=body.source_id, media_url=body.media_url)
    except OutsideGrid as exc:
        raise unprocessable(("body", "lon"), str(exc)) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/tickets/{ticket.ticket_id}"
    etag(response, ticket.version)
    return TicketPublic.of(ticket)


@router.patch("/{ticket_id}", response_model=TicketPublic,
              responses={**NOT_FOUND, **CONFLICT})
def update(ticket_id: str, body: TicketUpdate, state: StateDep, principal: PrincipalDep,
           response: Response) -> TicketPublic | JSONResponse:
    """Edit description and/or priority (operators; the deadline follows the priority)."""
    _require(principal, SUPERVISE, "edit tickets")
    try:
        ticket = update_ticket(
            store=state.store, rules=state.rules, ticket_id=ticket_id,
            expected_version=body.version, actor=principal.name, at=state.clock(),
            visible=visibility(principal), description=body.description,
            priority=body.priority, note=body.note)
    except TicketNotFound:
        raise not_found(ticket_id) from None
    except VersionConflict as exc:
        return conflict(exc)
    etag(response, ticket.version)
    return TicketPublic.of(ticket)


@router.post("/{ticket_id}/actions", response_model=TicketPublic,
             responses={**NOT_FOUND, **CONFLICT,
                        403: {"model": Problem, "description": "Not your action"}})
def action(ticket_id: str, body: TicketAction, state: StateDep, principal: PrincipalDep,
           response: Response) -> TicketPublic | JSONResponse:
    """Apply a lifecycle action: operators ``confirm`` (optionally to ``department``),
    ``dismiss`` (reason), ``merge`` (into), ``dispatch`` (department), ``recall``
    (reason: back to review), ``reclassify`` (kind: re-routed, new deadline), ``close``,
    ``reopen`` (reason); the ticket's department ``accept``, ``return`` (reason),
    ``resolve`` (note). An unknown department or kind is 422 naming the valid ones
    (``GET /departments``); a refused transition is 409 with the reason; a stale
    ``version`` is 409 with ``current_version``."""
    if body.action in OPERATOR_ACTIONS:
        _require(principal, SUPERVISE, f"{body.action.value} tickets")
    elif body.action in DEPARTMENT_ACTIONS:
        _require(principal, frozenset({Role.DEPARTMENT, Role.ADMIN}),
                 f"{body.action.value} tickets (the department does)")
    request = ActionRequest(action=body.action, note=body.note, reason=body.reason,
                            department=body.department, level=body.level, into=body.into,
                            kind=body.kind)
    try:
        ticket = act(store=state.store, rules=state.rules, ticket_id=ticket_id,
                     request=request,
                     expected_version=body.version, actor=principal.name, at=state.clock(),
                     visible=visibility(principal))
    except TicketNotFound as exc:
        raise not_found(str(exc.args[0])) from None
    except VersionConflict as exc:
        return conflict(exc)
    except TransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ActionInvalid as exc:
        loc = ("body", exc.field) if exc.field else ("body",)
        raise unprocessable(loc, str(exc)) from None
    etag(response, ticket.version)
    return TicketPublic.of(ticket)


def _require(principal: Principal, roles: frozenset[Role], what: str) -> None:
    if principal.role not in roles:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"role {principal.role.value} may not {what}")
