"""Tickets: list with filters and pagination, read, audit log, create, edit, and the
lifecycle actions (optimistic concurrency on every change)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse

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
from ticketing.service import (
    OutsideGrid,
    act,
    create_report,
    get_visible,
    list_tickets,
    update_ticket,
)
from ticketing.store import TicketFilter, TicketNotFound, VersionConflict, audit_public

router = APIRouter(prefix="/tickets", tags=["tickets"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such ticket (or not yours)"}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem,
                  "description": "Stale version, or an action the state does not allow"}}
Name = Annotated[str | None, Query(min_length=1, max_length=128)]


def not_found(ticket_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")


def conflict(exc: VersionConflict) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_409_CONFLICT,
                        content={"detail": str(exc), "current_version": exc.current})


def etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


@router.get("", response_model=TicketList)
def list_(state: StateDep, principal: Reader,
          status_: Annotated[TicketStatus | None, Query(alias="status")] = None,
          kind: Name = None, cell_id: Name = None, district: Name = None, town: Name = None,
          village: Name = None, department: Name = None,
          escalation: Escalation | None = None, origin: Origin | None = None,
          opened_from: Timestamp | None = None, opened_to: Timestamp | None = None,
          limit: Annotated[int, Query(ge=1, le=10000)] = 50,
          offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> TicketList:
    """Tickets oldest first; filters combine with AND; ``opened_from`` ≤ opened_at <
    ``opened_to``. A department token sees only its own department's tickets."""
    if principal.role is Role.DEPARTMENT:
        if department not in (None, principal.department):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                "a department token reads only its own department")
        department = principal.department
    limit = min(limit, state.settings.max_page_size)
    flt = TicketFilter(status=status_.value if status_ else None, kind=kind, cell_id=cell_id,
                       district=district, town=town, village=village, department=department,
                       escalation=escalation.value if escalation else None,
                       origin=origin.value if origin else None,
                       opened_from=opened_from, opened_to=opened_to)
    items, total = list_tickets(store=state.store, flt=flt, limit=limit, offset=offset)
    return TicketList(items=[TicketPublic.of(t) for t in items], total=total, limit=limit,
                      offset=offset)


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
