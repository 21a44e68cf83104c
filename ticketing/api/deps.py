"""Dependencies: the app's state, the caller and role checks.

The caller is found, in this order, from ``Authorization: Bearer <token>`` (an
environment token, then a person's API token) or from the console's session cookie
(then a change — any method but GET, HEAD, OPTIONS — needs the session's CSRF token in
``X-CSRF-Token``). Both give the same :class:`~ticketing.auth.Principal`, so every route
works with either. HTTP errors for authentication and authorisation are raised here;
the routes raise the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from geo.grid import Grid
from stream.policy import PolicyBook
from ticketing.api.pagecache import PageCache
from ticketing.auth import ANONYMOUS_READER, CREATE, READ, SUPERVISE, Principal, Role, TokenAuth
from ticketing.config import TicketingSettings
from ticketing.events import EventBus
from ticketing.evidence import EvidenceStore
from ticketing.login import CSRF_HEADER, SESSION_COOKIE, Logins, Session
from ticketing.models import Ticket
from ticketing.routing import Rules
from ticketing.store import SqlTicketStore
from ticketing.users import UserStore


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
    rules: Rules  # routing, departments and deadlines (checked at start-up)
    users: UserStore
    logins: Logins
    evidence: EvidenceStore | None = None  # camera snapshots (None: none kept here)
    pages: PageCache = field(default_factory=PageCache)  # encoded GET /tickets pages


# The dependencies below are ``async def`` because they never block (no I/O): a plain
# ``def`` dependency costs a hop to the threadpool on every request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.gridwatch
    return state


StateDep = Annotated[AppState, Depends(get_state)]

bearer = HTTPBearer(auto_error=False, description="An API token: a person's (gridwatch "
                                                   "users token issue) or an environment "
                                                   "token (see ticketing.auth)")
# declared so the OpenAPI document shows the console's way in; read in session_of
session_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                              description="The console session from POST /auth/login; "
                                          "changes also need the X-CSRF-Token header")
SessionCookie = Annotated[str | None, Depends(session_cookie)]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_principal(state: AppState, token: str | None) -> Principal | None:
    """The caller for a bearer token: an environment token, else a person's API token."""
    if not token:
        return None
    return state.auth.authenticate(token) or state.users.principal_for_token(token)


def session_of(request: Request, state: AppState) -> Session | None:
    """The live session of the request's cookie (kept on ``request.state.session``)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    session = state.logins.session(cookie, now=state.clock()) if cookie else None
    request.state.session = session
    return session


def session_principal(request: Request, state: AppState) -> Principal | None:
    """The caller from the session cookie; 403 for a change without its CSRF token."""
    session = session_of(request, state)
    if session is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not secrets.compare_digest(sent.encode(), session.csrf_token.encode()):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"a change signed in with the session cookie needs the "
                                f"session's CSRF token in the {CSRF_HEADER} header "
                                f"(POST /auth/login and GET /auth/me return it)")
    return session.principal


async def get_principal(request: Request, state: StateDep,
                        credentials: Annotated[HTTPAuthorizationCredentials | None,
                                               Depends(bearer)] = None,
                        _cookie: SessionCookie = None) -> Principal:
    """The caller, from a bearer token or the session cookie; 401 without a valid one.

    An environment token is checked in memory; a person's token and a session need the
    database, so those lookups run in the threadpool, off the event loop."""
    token = credentials.credentials if credentials is not None else None
    if token:
        principal = state.auth.authenticate(token) or await run_in_threadpool(
            state.users.principal_for_token, token)
        if principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API token",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal
    if SESSION_COOKIE in request.cookies:
        principal = await run_in_threadpool(session_principal, request, state)
        if principal is not None:
            return principal
    if state.auth.anonymous_read and request.method in ("GET", "HEAD"):
        return ANONYMOUS_READER
    raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                        "session expired or ended: log in again (POST /auth/login)"
                        if SESSION_COOKIE in request.cookies
                        else "missing API token or session (Authorization: Bearer <token>"
                             " or POST /auth/login)",
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


async def get_optional_principal(request: Request, state: StateDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
        _cookie: SessionCookie = None) -> Principal | None:
    """The caller if a valid bearer token or session came, else None (Open311 also takes
    ``api_key``; see :func:`token_principal`)."""
    token = credentials.credentials if credentials else None
    if token:
        return state.auth.authenticate(token) or await run_in_threadpool(
            state.users.principal_for_token, token)
    if SESSION_COOKIE not in request.cookies:
        return None
    return await run_in_threadpool(session_principal, request, state)


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
