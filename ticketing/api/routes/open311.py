"""Open311 GeoReport v2 (JSON): services, requests list/get and POST requests.

Reports posted here from other systems join the same store as detections and are routed
the same way. GridWatch's grid and SLA fields are in each request's
``extended_attributes`` (the GeoReport v2 extension convention). Reading needs a token
(``Authorization: Bearer`` or ``api_key``) and is scoped like ``/tickets``; the service
list is public.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Form, HTTPException, Query, Request, Response, status
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ticketing.api.deps import (
    GridDep,
    OptionalPrincipal,
    StateDep,
    token_principal,
    visibility,
)
from ticketing.api.models import Timestamp
from ticketing.auth import CREATE, READ, Principal, Role
from ticketing.models import OPEN_STATUSES, Origin, Ticket, TicketStatus, rfc3339
from ticketing.service import OutsideGrid, create_report
from ticketing.store import TicketFilter


class Open311Error(BaseModel):
    code: int
    description: str


PREFIX = "/open311/v2"
router = APIRouter(prefix=PREFIX, tags=["open311"], responses={"4XX": {
    "model": list[Open311Error],
    "description": "GeoReport v2 errors: 400 for invalid input (each field named), 401 / "
                   "403 for the key, 404 for an unknown request id"}})


class Service(BaseModel):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str
    group: str


class ServiceRequest(BaseModel):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str
    service_code: str
    description: str | None
    agency_responsible: str
    service_notice: str | None
    requested_datetime: AwareDatetime
    updated_datetime: AwareDatetime
    expected_datetime: AwareDatetime
    address: str | None
    lat: float
    long: float
    media_url: str | None
    extended_attributes: dict[str, Any]


class RequestCreate(BaseModel):
    """The GeoReport v2 POST form (``application/x-www-form-urlencoded``)."""

    model_config = ConfigDict(extra="ignore")

    service_code: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    lat: float = Field(ge=-90, le=90)
    long: float = Field(ge=-180, le=180)
    description: str | None = Field(default=None, max_length=4000)
    media_url: str | None = Field(default=None, max_length=2000)
    address_string: str | None = Field(default=None, max_length=1000)
    device_id: str | None = Field(default=None, max_length=128)
    account_id: str | None = Field(default=None, max_length=128)
    api_key: str | None = Field(default=None, max_length=512)


class RequestCreated(BaseModel):
    service_request_id: str
    service_notice: str | None
    account_id: str | None


def _error(code: int, description: str, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse(status_code=code, headers=headers,
                        content=[{"code": code, "description": description}])


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "lat") -> "lat"; ("query", "start_date") -> "start_date"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def install_error_shape(app: FastAPI) -> None:
    """Answer every error under ``/open311/`` as GeoReport v2 does, a list of
    ``{code, description}``: validation errors are 400 (one entry per field, naming it),
    authentication and lookup errors keep their status. Other routes keep FastAPI's
    shapes."""

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not request.url.path.startswith(PREFIX + "/"):
            return await request_validation_exception_handler(request, exc)
        return JSONResponse(status_code=400, content=[
            {"code": 400, "description": f"{_field(e.get('loc', ()))}: {e.get('msg')}"}
            for e in exc.errors()])

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not request.url.path.startswith(PREFIX + "/"):
            return await http_exception_handler(request, exc)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}) or None)

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)


def _unknown_service(state: StateDep, code: str) -> JSONResponse:
    known = ", ".join(sorted(state.policies.kinds)) or "none configured"
    return _error(400, f"service_code: unknown service {code!r}; expected one of: "
                       f"{known} (GET {PREFIX}/services.json)")


def _caller(state: StateDep, principal: Principal | None, api_key: str | None,
            roles: frozenset[Role]) -> Principal:
    who = principal or token_principal(state, api_key)
    if who is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown API token",
                            headers={"WWW-Authenticate": "Bearer"})
    if who.role not in roles:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role.value} may not do this")
    return who


def _as_request(ticket: Ticket, state: StateDep) -> ServiceRequest:
    policy = state.policies.for_kind(ticket.kind)
    status_: Literal["open", "closed"] = "open" if ticket.status in OPEN_STATUSES \
        else "closed"
    notes = ticket.status.value if ticket.dismiss_reason is None else \
        f"dismissed: {ticket.dismiss_reason}"
    address = ", ".join(u for u in (ticket.village, ticket.town, ticket.district) if u) or None
    return ServiceRequest(
        service_request_id=ticket.ticket_id, status=status_, status_notes=notes,
        service_name=policy.label or ticket.kind, service_code=ticket.kind,
        description=ticket.description, agency_responsible=ticket.department,
        service_notice=None, requested_datetime=ticket.opened_at,
        updated_datetime=ticket.updated_at, expected_datetime=ticket.due_at,
        address=address, lat=ticket.lat, long=ticket.lon,
        media_url=ticket.snapshot_urls[0] if ticket.snapshot_urls else None,
        extended_attributes={
            "cell_id": ticket.cell_id, "district": ticket.district, "town": ticket.town,
            "village": ticket.village, "level": ticket.level, "unit": ticket.unit,
            "priority": ticket.priority, "due_at": rfc3339(ticket.due_at),
            "gridwatch_status": ticket.status.value, "escalation": ticket.escalation.value,
            "review": ticket.review.value, "origin": ticket.origin.value,
            "review_reason": ticket.review_reason.value if ticket.review_reason else None,
            "version": ticket.version})


@router.get("/services.json", response_model=list[Service])
def services(state: StateDep) -> list[Service]:
    """Every configured kind as a service (public: no ticket data)."""
    out = []
    for code, policy in sorted(state.policies.kinds.items()):
        out.append(Service(
            service_code=code, service_name=policy.label or code,
            description=f"{policy.label or code}: handled at {policy.level.value} level by "
                        f"{policy.department}, priority {policy.priority}",
            metadata=False, type="realtime", keywords=code.replace("_", ","),
            group=policy.department))
    return out


@router.get("/requests.json", response_model=list[ServiceRequest])
def list_requests(
        state: StateDep, principal: OptionalPrincipal,
        service_request_id: Annotated[str | None, Query(min_length=1, max_length=2000)] = None,
        service_code: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        start_date: Timestamp | None = None, end_date: Timestamp | None = None,
        status_: Annotated[Literal["open", "closed"] | None, Query(alias="status")] = None,
        api_key: Annotated[str | None, Query(max_length=512)] = None,
) -> Any:
    """Requests oldest first (1000 at most), filtered by ids (comma separated), service
    code, ``requested_datetime`` range (``start_date`` ≤ t < ``end_date``) and status."""
    who = _caller(state, principal, api_key, READ)
    can_see = visibility(who)
    if service_code is not None and service_code not in state.policies.kinds and \
            state.store.count(TicketFilter(kind=service_code)) == 0:
        # neither a configured service nor the kind of any ticket (a plug-in's): a typo
        return _unknown_service(state, service_code)
    if service_request_id is not None:
        found = (state.store.get(i.strip()) for i in service_request_id.split(",")[:100])
        tickets = [t for t in found if t is not None and can_see(t)]
    else:
        department = who.department if who.role is Role.DEPARTMENT else None
        tickets = state.store.list(TicketFilter(kind=service_code, department=department,
                                                opened_from=start_date, opened_to=end_date),
                                   limit=1000)
    out = []
    for ticket in tickets:
        if service_code is not None and ticket.kind != service_code:
            continue
        if status_ is not None and (ticket.status in OPEN_STATUSES) != (status_ == "open"):
            continue
        out.append(_as_request(ticket, state))
    return out


@router.get("/requests/{service_request_id}.json", response_model=list[ServiceRequest])
def get_request(service_request_id: str, state: StateDep, principal: OptionalPrincipal,
                api_key: Annotated[str | None, Query(max_length=512)] = None) -> Any:
    """One request (as a one-element list, as GeoReport v2 has it)."""
    who = _caller(state, principal, api_key, READ)
    ticket = state.store.get(service_request_id)
    if ticket is None or not visibility(who)(ticket):
        return _error(404, f"no service request {service_request_id}")
    return [_as_request(ticket, state)]


@router.post("/requests.json", response_model=list[RequestCreated],
             status_code=status.HTTP_201_CREATED)
def post_request(form: Annotated[RequestCreate, Form()], state: StateDep,
                 principal: OptionalPrincipal, grid: GridDep) -> Any:
    """Create a service request; it becomes a ticket routed by ``service_code`` (the
    kind) and the cell at ``lat``/``long``. ``device_id`` is the reporting source (its
    false-positive record applies); the same ``account_id`` + ``device_id`` +
    ``description`` + position posted again by the same caller is not a new ticket."""
    who = _caller(state, principal, form.api_key, CREATE)
    if form.service_code not in state.policies.kinds:
        return _unknown_service(state, form.service_code)
    key = "|".join(str(v) for v in (form.account_id, form.device_id, form.service_code,
                                    form.lat, form.long, form.description))
    try:
        ticket, _created = create_report(
            store=state.store, grid=grid, policies=state.policies, settings=state.settings,
            kind=form.service_code, lon=form.long, lat=form.lat, at=state.clock(),
            actor=who.name, origin=Origin.OPEN311,
            description=form.description or form.address_string, external_id=key,
            source_id=form.device_id, media_url=form.media_url)
    except OutsideGrid as exc:
        return _error(400, str(exc))
    notice = ("awaiting operator review" if ticket.status is TicketStatus.PENDING_REVIEW
              else f"dispatched to {ticket.department}, due {rfc3339(ticket.due_at)}")
    return [RequestCreated(service_request_id=ticket.ticket_id, service_notice=notice,
                           account_id=form.account_id)]

