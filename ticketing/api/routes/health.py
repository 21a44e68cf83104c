"""Liveness and storage health.

Anyone may ask whether the service and its store answer; the store's dialect, schema
version and ticket count go only to an authenticated caller (they tell an outsider what
runs here and how busy it is)."""

from __future__ import annotations

from fastapi import APIRouter

from ticketing.api.deps import OptionalPrincipal, StateDep
from ticketing.api.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, response_model_exclude_none=True)
def healthz(state: StateDep, principal: OptionalPrincipal) -> Health:
    """``{"status": "ok"}`` when the store answers; with a token or a session also its
    dialect, schema version and ticket count."""
    store = state.store
    version = store.schema_version()  # the store must answer for "ok", signed in or not
    if principal is None:
        return Health(status="ok")
    return Health(status="ok", storage=store.dialect, schema_version=version,
                  tickets=store.count())
