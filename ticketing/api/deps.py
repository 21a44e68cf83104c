"""Dependencies: the app's state, the caller (bearer token → principal) and role checks.

HTTP errors for authentication and authorisation are raised here; the routes raise the
rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from geo.grid import Grid
from stream.policy import PolicyBook
from ticketing.api.pagecache import PageCache
from ticketing.auth import ANONYMOUS_READER, CREATE, READ, SUPERVISE, Principal, Role, TokenAuth
from ticketing.config import TicketingSettings
from ticketing.events import EventBus
from ticketing.models import Ticket
from ticketing.store import SqlTicketStore


@dataclass(slots=True)
class AppState:
    """Everything the routes need; built once by ``create_app``."""

    store: SqlTicketStore
    settings: TicketingSettings
    auth: TokenAuth
    policies: PolicyBook
    grid: Grid | None
    bus: EventBus
    clock: Callable[[], datetime]
    pages: PageCache = field(default_factory=PageCache)  # encoded GET /tickets pages


# The dependencies below are ``async def`` because they never block (no I/O): a plain
# ``def`` dependency costs a hop to the threadpool on every request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.gridwatch
    return state


StateDep = Annotated[AppState, Depends(get_state)]

bearer = HTTPBearer(auto_error=False, description="An API token (see ticketing.auth)")


async def get_principal(request: Request, state: StateDep,
                        credentials: Annotated[HTTPAuthorizationCredentials | None,
                                               Depends(bearer)] = None) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; 401 without a valid one."""
    token = credentials.credentials if credentials is not None else None
    principal = state.auth.authenticate(token)
    if principal is not None:
        return principal
    if token is None and state.auth.anonymous_read and request.method in ("GET", "HEAD"):
        return ANONYMOUS_READER
    raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                        "missing or unknown API token" if token is None or token
                        else "missing API token",
                        headers={"WWW-Authenticate": "Bearer"})


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(roles: frozenset[Role], what: str) -> Callable[[Principal],
                                                          Awaitable[Principal]]:
    """A dependency that lets only ``roles`` through (403 otherwise)."""

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"role {principal.role.value} may not {what}")
        return principal

    return check


Reader = Annotated[Principal, Depends(require(READ, "read tickets"))]
Creator = Annotated[Principal, Depends(require(CREATE, "create tickets"))]
Supervisor = Annotated[Principal, Depends(require(SUPERVISE, "supervise tickets"))]


def visibility(principal: Principal) -> Callable[[Ticket], bool]:
    """The predicate for tickets ``principal`` may see."""
    return lambda ticket: principal.can_see(ticket.department)


async def require_grid(state: StateDep) -> Grid:
    if state.grid is None:
        raise unprocessable(("body",), "this service has no grid, so it cannot place reports")
    return state.grid


GridDep = Annotated[Grid, Depends(require_grid)]


async def get_optional_principal(state: StateDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Principal | None:
    """The caller if a valid bearer token came, else None (Open311 also takes api_key)."""
    return state.auth.authenticate(credentials.credentials if credentials else None)


OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]


def unprocessable(loc: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in FastAPI's own validation-error shape, for checks pydantic cannot make
    (a position outside the grid, an action without its reason)."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message,
                                    "input": None}])


def _query_names(dependant: Dependant) -> frozenset[str]:
    names: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        names.update(field.alias for field in current.query_params)
        stack.extend(current.dependencies)
    return frozenset(names)


_NAMES = "_gridwatch_query_names"  # kept on the route: what it declares


async def reject_unknown_query(request: Request) -> None:
    """An app-wide dependency: on a GET, a query parameter the route does not declare is
    a 422 naming it and the ones allowed (a typo such as ``?stauts=`` would otherwise be
    ignored and return everything). Changes (POST, PATCH) are left alone: their input is
    the body, and some Open311 clients add ``?api_key=`` to a POST."""
    if not request.query_params or request.method not in ("GET", "HEAD"):
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed: frozenset[str] | None = getattr(route, _NAMES, None)
    if allowed is None:
        allowed = _query_names(dependant)
        setattr(route, _NAMES, allowed)
    unknown = [name for name in request.query_params if name not in allowed]
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise RequestValidationError([
            {"type": "extra_forbidden", "loc": ("query", name),
             "msg": f"unknown query parameter {name!r}; expected one of: {expected}",
             "input": request.query_params.get(name)} for name in dict.fromkeys(unknown)])
