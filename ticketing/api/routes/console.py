"""The console page (``/``), its assets (``/console/...``), whether the browser is
signed in (``/console/session``, never a 401, so the login screen loads cleanly) and
the map's data (``/console/map``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ticketing.api.deps import OptionalPrincipal, Reader, StateDep, unprocessable
from ticketing.api.models import Me
from ticketing.api.routes.auth import me_of
from ticketing.console import static_dir
from ticketing.console.mapdata import map_data

router = APIRouter(tags=["console"])

# everything from this origin only: a stray CDN link fails loudly in the browser
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


class ConsoleSession(BaseModel):
    """``signed_in`` and, if so, who (as ``GET /auth/me``)."""

    signed_in: bool
    me: Me | None = None


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(static_dir() / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": CSP,
                                 "Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})


@router.get("/console/session", response_model=ConsoleSession)
def session(request: Request, response: Response,
            principal: OptionalPrincipal) -> ConsoleSession:
    """Whether this browser's session cookie is live (200 either way), with the caller
    and the session's CSRF token."""
    response.headers["Cache-Control"] = "no-store"
    live = getattr(request.state, "session", None)
    if principal is None or live is None:
        return ConsoleSession(signed_in=False)
    return ConsoleSession(signed_in=True, me=me_of(principal, live))


@router.get("/console/map")
def console_map(request: Request, state: StateDep, _principal: Reader) -> dict[str, Any]:
    """The grid as the map draws it: cells (rings, admin units, neighbours) and the
    outlines of towns and villages (see :func:`ticketing.console.mapdata.map_data`);
    422 when the service runs without a grid."""
    grid = state.grid
    if grid is None:
        raise unprocessable(("query",), "this service has no grid (gridwatch serve --grid), "
                                        "so the map has nothing to draw")
    cache = request.app.state.__dict__.setdefault("console_map", {})
    key = id(grid)
    if key not in cache:
        cache[key] = map_data(grid)
    data: dict[str, Any] = cache[key]
    return data


def mount(app: FastAPI) -> None:
    """Add the page, its routes and ``/console/static`` to ``app``."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=static_dir()), name="console")


__all__ = ["CSP", "mount", "router"]
