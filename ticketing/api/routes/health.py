"""Liveness and storage health (no auth)."""

from __future__ import annotations

from fastapi import APIRouter

from ticketing.api.deps import StateDep
from ticketing.api.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(state: StateDep) -> Health:
    """``ok`` when the store answers; its dialect, schema version and ticket count."""
    store = state.store
    return Health(status="ok", storage=store.dialect, schema_version=store.schema_version(),
                  tickets=store.count())
