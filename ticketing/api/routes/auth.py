"""Sign-in for the console: log in (a session cookie), log out, who am I.

Scripts do not need these: they send a person's API token (``gridwatch users token
issue``) or an environment token as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status

from ticketing.api.deps import PrincipalDep, StateDep, session_principal
from ticketing.api.models import LoginRequest, Me, Problem
from ticketing.auth import ANONYMOUS_READER, Principal
from ticketing.login import SESSION_COOKIE, LoginFailed, Session, Throttled

router = APIRouter(prefix="/auth", tags=["auth"])

LOGIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Wrong username or password, or a disabled "
                                           "account"},
    429: {"model": Problem, "description": "Too many failed logins for this username or "
                                           "from this address; see Retry-After"}}


def me_of(principal: Principal, session: Session | None) -> Me:
    """What ``GET /auth/me`` answers for this caller (the console's session route too)."""
    return Me(username=principal.name, display_name=principal.display_name,
              role=principal.role.value, department=principal.department,
              auth="session" if session is not None
              else "anonymous" if principal is ANONYMOUS_READER else "token",
              csrf_token=session.csrf_token if session is not None else None,
              expires_at=session.expires_at if session is not None else None)


def _secure(request: Request, setting: bool | None) -> bool:
    return request.url.scheme == "https" if setting is None else setting


@router.post("/login", response_model=Me, responses=LOGIN_ERRORS)
def login(body: LoginRequest, request: Request, response: Response, state: StateDep) -> Me:
    """Log in with a named account: sets the session cookie (``HttpOnly``,
    ``SameSite=Lax``, ``Secure`` over https) and returns who you are with the session's
    CSRF token. Every change made with this cookie must send that token as
    ``X-CSRF-Token``. Failed logins are throttled per username and per client address
    (429 with ``Retry-After``)."""
    address = request.client.host if request.client is not None else "unknown"
    try:
        new = state.logins.login(username=body.username, password=body.password,
                                 address=address, now=state.clock())
    except Throttled as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc),
                            headers={"Retry-After": str(exc.retry_after_s)}) from None
    except LoginFailed as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    auth = state.settings.auth
    response.set_cookie(SESSION_COOKIE, new.cookie, max_age=auth.session_ttl_s, path="/",
                        httponly=True, samesite="lax",
                        secure=_secure(request, auth.secure_cookie))
    response.headers["Cache-Control"] = "no-store"
    return me_of(new.session.principal, new.session)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT,
             responses={403: {"model": Problem, "description": "No X-CSRF-Token"}})
def logout(request: Request, state: StateDep) -> Response:
    """End this browser's session (its cookie stops working everywhere) and clear the
    cookie. Needs ``X-CSRF-Token`` like every change; without a live session it only
    clears the cookie."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if session_principal(request, state) is not None and cookie:
        state.logins.logout(cookie)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=_secure(request, state.settings.auth.secure_cookie))
    return response


@router.get("/me", response_model=Me)
def me(request: Request, principal: PrincipalDep, response: Response) -> Me:
    """Who you are (username, display name, role, department), how you signed in and,
    for a console session, its CSRF token and when it ends."""
    response.headers["Cache-Control"] = "no-store"
    return me_of(principal, getattr(request.state, "session", None))
