"""Camera evidence: the centre's copy of a detection's snapshot, with its ticket's
authorization (``ticketing.evidence``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response, status

from ticketing.api.deps import Reader, StateDep
from ticketing.api.models import Problem

router = APIRouter(prefix="/evidence", tags=["evidence"])

IMAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}, "image/png": {}},
          "description": "The image, with its content type; ETag is its SHA-256"},
    404: {"model": Problem, "description": "No such evidence (not received yet, removed by "
                                           "the budget or retention, or not yours)"},
}


@router.get("/{event_id:path}", response_class=Response, responses=IMAGE)
def read(event_id: str, state: StateDep, principal: Reader) -> Response:
    """The snapshot of detection ``event_id`` (the links in a ticket's ``snapshot_urls``).

    Operators, integrators and admins read any stored evidence; a department reads only
    evidence of detections on its own tickets, and gets 404 for any other, exactly as
    for evidence that does not exist."""
    store = state.evidence
    missing = HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no evidence for detection {event_id} (not received yet, "
                            f"removed by the evidence budget or retention, or not yours)")
    if store is None or not event_id:
        raise missing
    if not principal.sees_all and not any(
            principal.can_see(d) for d in store.departments_holding(event_id)):
        raise missing
    item = store.get(event_id)
    image = store.read(event_id) if item is not None else None
    if item is None or image is None:
        raise missing
    return Response(image, media_type=item.content_type,
                    headers={"ETag": f'"{item.sha256}"', "Cache-Control": "private",
                             "X-Content-Type-Options": "nosniff"})
